package lint

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kinds are the kinds whose pod specs are checked, by group and kind; the
// admission policy matches the same resources.
var Kinds = []schema.GroupKind{
	{Group: "", Kind: "Pod"},
	{Group: "apps", Kind: "Deployment"},
	{Group: "apps", Kind: "ReplicaSet"},
	{Group: "apps", Kind: "StatefulSet"},
	{Group: "apps", Kind: "DaemonSet"},
	{Group: "batch", Kind: "Job"},
	{Group: "batch", Kind: "CronJob"},
}

// podObject is a pod spec and the object that carries it.
type podObject struct {
	Kind      string
	Namespace string
	Name      string
	// Annotations are the pod's (the template's), which is what the node
	// sees.
	Annotations map[string]string
	Spec        *corev1.PodSpec
	// SpecPath is where the pod spec is in the object ("spec.template.spec").
	SpecPath string
}

// checked tells whether a document of this apiVersion and kind holds a pod
// spec that lint checks.
func checked(apiVersion, kind string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return false
	}
	for _, k := range Kinds {
		if k.Group == gv.Group && k.Kind == kind {
			return true
		}
	}
	return false
}

// decodePodObject decodes a document of a checked kind with the API types.
// Unknown fields are ignored, as a linter of manifests for newer or older
// clusters must; a field of the wrong type or a quantity that does not
// parse is an error.
func decodePodObject(kind string, doc []byte) (*podObject, error) {
	var meta metav1.ObjectMeta
	var tmpl *corev1.PodTemplateSpec
	path := "spec.template"
	switch kind {
	case "Pod":
		var o corev1.Pod
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		return &podObject{Kind: kind, Namespace: o.Namespace, Name: o.Name, Annotations: o.Annotations, Spec: &o.Spec, SpecPath: "spec"}, nil
	case "Deployment":
		var o appsv1.Deployment
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "ReplicaSet":
		var o appsv1.ReplicaSet
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "StatefulSet":
		var o appsv1.StatefulSet
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "DaemonSet":
		var o appsv1.DaemonSet
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "Job":
		var o batchv1.Job
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "CronJob":
		var o batchv1.CronJob
		if err := json.Unmarshal(doc, &o); err != nil {
			return nil, err
		}
		meta, tmpl = o.ObjectMeta, &o.Spec.JobTemplate.Spec.Template
		path = "spec.jobTemplate.spec.template"
	default:
		return nil, fmt.Errorf("kind %s is not checked", kind)
	}
	return &podObject{Kind: kind, Namespace: meta.Namespace, Name: meta.Name, Annotations: tmpl.Annotations,
		Spec: &tmpl.Spec, SpecPath: path + ".spec"}, nil
}
