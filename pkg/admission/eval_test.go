package admission

import (
	"context"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// compatibility is the oldest Kubernetes whose CEL the policy must compile
// in: admissionregistration.k8s.io/v1 policies are GA in 1.30.
var compatibility = version.MajorMinor(1, 30)

// evaluator runs a policy as kube-apiserver's ValidatingAdmissionPolicy
// plugin does (its compilePolicy, with the expressions compiled as a new
// policy's are, for the oldest supported version).
type evaluator struct {
	vap       *admissionv1.ValidatingAdmissionPolicy
	validator validating.Validator
}

func newEvaluator(t *testing.T, vap *admissionv1.ValidatingAdmissionPolicy) *evaluator {
	t.Helper()
	envs := environment.MustBaseEnvSet(compatibility)
	comp, err := cel.NewCompositedCompiler(envs)
	if err != nil {
		t.Fatal(err)
	}
	opts := cel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
	msgOpts := cel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: false}
	var vars []cel.NamedExpressionAccessor
	for _, v := range vap.Spec.Variables {
		vars = append(vars, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	comp.CompileAndStoreVariables(vars, opts, environment.NewExpressions)
	var conds, msgs []cel.ExpressionAccessor
	for _, v := range vap.Spec.Validations {
		conds = append(conds, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		msgs = append(msgs, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	// Fail, whatever the policy says: an expression that errs must fail
	// the test, not pass the object.
	fail := admissionv1.Fail
	return &evaluator{vap: vap, validator: validating.NewValidator(
		comp.CompileCondition(conds, opts, environment.NewExpressions), nil,
		comp.CompileCondition(nil, opts, environment.NewExpressions),
		comp.CompileCondition(msgs, msgOpts, environment.NewExpressions),
		&fail, nil)}
}

// admit returns the messages of the policy's failed validations for a
// create of the object in yamlDoc; nil when it is admitted or not matched.
func (e *evaluator) admit(t *testing.T, yamlDoc string) []string {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(j, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.admitObject(t, obj, nil, gvk, "", admission.Create)
}

func (e *evaluator) admitObject(t *testing.T, obj, old runtime.Object, gvk *schema.GroupVersionKind, sub string, op admission.Operation) []string {
	t.Helper()
	acc, err := metaAccessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: acc.GetNamespace(),
		Labels: map[string]string{"kubernetes.io/metadata.name": acc.GetNamespace()}}}
	gvr := resourceOf(t, gvk)
	if !e.matches(t, gvr, sub, ns) {
		return nil
	}
	attrs := admission.NewAttributesRecord(obj, old, *gvk, acc.GetNamespace(), acc.GetName(), gvr, sub, op, nil, false, &user.DefaultInfo{Name: "test"})
	res := e.validator.Validate(context.Background(), gvr, &admission.VersionedAttributes{
		Attributes: attrs, VersionedKind: *gvk, VersionedObject: admission.NewLazyObject(obj), VersionedOldObject: lazy(old),
	}, nil, ns, 10_000_000, nil)
	var out []string
	for _, d := range res.Decisions {
		switch d.Action {
		case validating.ActionAdmit:
		case validating.ActionDeny:
			if d.Evaluation == validating.EvalError {
				t.Fatalf("evaluation error: %s", d.Message)
			}
			out = append(out, d.Message)
		default:
			t.Fatalf("decision %+v", d)
		}
	}
	return out
}

// matches applies the policy's match constraints as the dispatcher does.
func (e *evaluator) matches(t *testing.T, gvr schema.GroupVersionResource, sub string, ns *corev1.Namespace) bool {
	m := e.vap.Spec.MatchConstraints
	if m.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(m.NamespaceSelector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(ns.Labels)) {
			return false
		}
	}
	res := gvr.Resource
	if sub != "" {
		res += "/" + sub
	}
	for _, r := range m.ResourceRules {
		for _, g := range r.APIGroups {
			for _, rr := range r.Resources {
				if g == gvr.Group && rr == res {
					return true
				}
			}
		}
	}
	return false
}

func resourceOf(t *testing.T, gvk *schema.GroupVersionKind) schema.GroupVersionResource {
	t.Helper()
	plural := map[string]string{"Pod": "pods", "Deployment": "deployments", "ReplicaSet": "replicasets",
		"StatefulSet": "statefulsets", "DaemonSet": "daemonsets", "Job": "jobs", "CronJob": "cronjobs"}[gvk.Kind]
	if plural == "" {
		t.Fatalf("no resource for %v", gvk)
	}
	return gvk.GroupVersion().WithResource(plural)
}

func metaAccessor(obj runtime.Object) (metav1.Object, error) {
	return meta(obj)
}

func meta(obj runtime.Object) (metav1.Object, error) {
	type objectMeta interface{ GetObjectMeta() metav1.Object }
	if m, ok := obj.(objectMeta); ok {
		return m.GetObjectMeta(), nil
	}
	return nil, nil
}

func lazy(o runtime.Object) admission.LazyObject {
	if o == nil {
		return admission.LazyObject{}
	}
	return admission.NewLazyObject(o)
}
