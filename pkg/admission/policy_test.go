package admission

import (
	"reflect"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"

	"github.com/cri-guard/cri-guard/internal/floorcases"
)

func TestParseActions(t *testing.T) {
	for in, want := range map[string]any{
		"Deny":       []admissionv1.ValidationAction{admissionv1.Deny},
		"warn":       []admissionv1.ValidationAction{admissionv1.Warn},
		"Warn,Audit": []admissionv1.ValidationAction{admissionv1.Warn, admissionv1.Audit},
		"Deny,Audit": []admissionv1.ValidationAction{admissionv1.Deny, admissionv1.Audit},
		"Deny,Warn":  `actions "Deny,Warn": Deny and Warn together would warn of what is refused; use one`,
		"Refuse":     `action "Refuse": must be Deny, Warn or Audit, or a list such as Warn,Audit`,
	} {
		got, err := ParseActions(in)
		if s, ok := want.(string); ok {
			if err == nil || err.Error() != s {
				t.Errorf("%s: got %v, %v; want error %q", in, got, err, s)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
}

// TestGenerate: what the objects carry besides the expressions.
func TestGenerate(t *testing.T) {
	pol := floorcases.Policy
	vap, b := Generate(&pol, Options{Actions: []admissionv1.ValidationAction{admissionv1.Warn}})
	if *vap.Spec.FailurePolicy != admissionv1.Ignore {
		t.Errorf("failurePolicy %s, want Ignore (fail open, as the node)", *vap.Spec.FailurePolicy)
	}
	want := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"batch-system", "kube-system"}}}}
	if !reflect.DeepEqual(vap.Spec.MatchConstraints.NamespaceSelector, want) {
		t.Errorf("namespaceSelector %+v", vap.Spec.MatchConstraints.NamespaceSelector)
	}
	if b.Spec.PolicyName != DefaultName || vap.Name != DefaultName || !reflect.DeepEqual(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Warn}) {
		t.Errorf("binding %+v", b.Spec)
	}
	pol.FailClosed = true
	if vap, _ := Generate(&pol, Options{}); *vap.Spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("failClosed: failurePolicy %s, want Fail", *vap.Spec.FailurePolicy)
	}
}

func limited(name, mem string) corev1.Container {
	return corev1.Container{Name: name, Image: "busybox", Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(mem)}}}
}

// TestUpdates: an update that leaves the pod spec alone passes, so that an
// object made before the policy can still be labelled; a resize below the
// floor is refused; a runtime class mapped to a handler takes its floors.
func TestUpdates(t *testing.T) {
	pol := floorcases.Policy
	vap, _ := Generate(&pol, Options{RuntimeClasses: map[string]string{"fast": "crun"}})
	e := newEvaluator(t, vap)
	gvk := corev1.SchemeGroupVersion.WithKind("Pod")
	old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{limited("app", "2000")}}}
	relabelled := old.DeepCopy()
	relabelled.Labels = map[string]string{"a": "b"}
	if got := e.admitObject(t, relabelled, old, &gvk, "", admission.Update); got != nil {
		t.Errorf("relabel refused: %q", got)
	}
	good := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{limited("app", "64Mi")}}}
	resized := good.DeepCopy()
	resized.Spec.Containers[0] = limited("app", "3000")
	want := []string{"pod team-a/web: memory limit 3000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 3000Mi?"}
	if got := e.admitObject(t, resized, good, &gvk, "resize", admission.Update); !reflect.DeepEqual(got, want) {
		t.Errorf("resize: got %q, want %q", got, want)
	}
	fast := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: corev1.PodSpec{RuntimeClassName: ptr("fast"), Containers: []corev1.Container{limited("app", "1Mi")}}}
	if got := e.admitObject(t, fast, nil, &gvk, "", admission.Create); got != nil {
		t.Errorf("class fast (handler crun, floors 500Ki) refused: %q", got)
	}
	fast.Spec.RuntimeClassName = ptr("crun-other")
	if got := e.admitObject(t, fast, nil, &gvk, "", admission.Create); len(got) != 1 {
		t.Errorf("class crun-other (default floors) admitted")
	}
}

func ptr(s string) *string { return &s }
