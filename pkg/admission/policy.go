package admission

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// DefaultName names the policy and its binding.
const DefaultName = "cri-guard-memory-floors"

// Options shape the generated objects.
type Options struct {
	// Name of the policy and the binding; DefaultName when empty.
	Name string
	// Actions are the binding's validationActions: Deny refuses, Warn
	// accepts with a warning to the client, Audit records the refusal in
	// the audit log. Deny when empty.
	Actions []admissionv1.ValidationAction
	// RuntimeClasses maps a runtimeClassName to its RuntimeClass's
	// handler; a class not here names a handler of its own name.
	RuntimeClasses map[string]string
}

// ParseActions reads "Deny", "Warn", "Audit" or a comma-separated list such
// as "Warn,Audit"; Deny and Warn exclude each other.
func ParseActions(s string) ([]admissionv1.ValidationAction, error) {
	var out []admissionv1.ValidationAction
	seen := map[admissionv1.ValidationAction]bool{}
	for _, a := range strings.Split(s, ",") {
		var v admissionv1.ValidationAction
		switch strings.ToLower(strings.TrimSpace(a)) {
		case "deny":
			v = admissionv1.Deny
		case "warn":
			v = admissionv1.Warn
		case "audit":
			v = admissionv1.Audit
		default:
			return nil, fmt.Errorf("action %q: must be Deny, Warn or Audit, or a list such as Warn,Audit", a)
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	if seen[admissionv1.Deny] && seen[admissionv1.Warn] {
		return nil, fmt.Errorf("actions %q: Deny and Warn together would warn of what is refused; use one", s)
	}
	return out, nil
}

// Generate returns the policy and its binding for a node policy.
func Generate(pol *policy.Config, opts Options) (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	name := opts.Name
	if name == "" {
		name = DefaultName
	}
	actions := opts.Actions
	if len(actions) == 0 {
		actions = []admissionv1.ValidationAction{admissionv1.Deny}
	}
	failure := admissionv1.Ignore
	if pol.FailClosed {
		failure = admissionv1.Fail
	}
	ops := []admissionv1.OperationType{admissionv1.Create, admissionv1.Update}
	rule := func(group string, resources ...string) admissionv1.NamedRuleWithOperations {
		return admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: ops,
			Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: resources},
		}}
	}
	match := &admissionv1.MatchResources{
		ResourceRules: []admissionv1.NamedRuleWithOperations{
			rule("", "pods", "pods/resize", "pods/ephemeralcontainers"),
			rule("apps", "deployments", "replicasets", "statefulsets", "daemonsets"),
			rule("batch", "jobs", "cronjobs"),
		},
	}
	if len(pol.ExemptNamespaces) > 0 {
		ns := append([]string(nil), pol.ExemptNamespaces...)
		sort.Strings(ns)
		match.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: ns,
		}}}
	}
	vap := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "cri-guard"}},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy:    &failure,
			MatchConstraints: match,
			Variables:        variables(pol, opts.RuntimeClasses),
			Validations: []admissionv1.Validation{{
				Expression:        "variables.skip || variables.unchanged || (!variables.sandboxBad && size(variables.bad) == 0)",
				MessageExpression: "variables.sandboxBad ? variables.sandboxMessage : variables.containerMessage",
				Message:           "a memory limit is below the minimum that cri-guard's nodes can start",
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "cri-guard"}},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: actions,
		},
	}
	return vap, binding
}

// template is the expression for the pod template of the object at root
// ("object" or "oldObject"): the Pod itself, or its template.
func template(root string) string {
	return "request.kind.kind == 'Pod' ? dyn(" + root + ") :\n" +
		"request.kind.kind == 'CronJob' ? dyn(" + root + ").spec.jobTemplate.spec.template :\n" +
		"dyn(" + root + ").spec.template"
}

// memory is a container's memory limit in bytes, a double (0 when unset).
func memory(c string) string {
	return "has(" + c + ".resources) && has(" + c + ".resources.limits) && 'memory' in " + c + ".resources.limits ? " +
		"quantity(" + c + ".resources.limits.memory).asApproximateFloat() : 0.0"
}

// ceil rounds a non-negative double up to an int, as Quantity.Value does.
func ceil(x string) string {
	return "(int(" + x + ") + (double(int(" + x + ")) < " + x + " ? 1 : 0))"
}

var (
	binSuffixes = []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	decSuffixes = []string{"k", "M", "G", "T", "P", "E"}
)

// quantityVars are the variables that format the int variable v as
// policy.Quantity does: the shortest of the bytes, the binary-suffixed and
// the decimal-suffixed forms, never with the k suffix, binary on a tie.
func quantityVars(v string) []admissionv1.Variable {
	x := "variables." + v
	bin := "string(" + x + ")"
	for i := range binSuffixes {
		div := int64(1) << (10 * (i + 1))
		bin = fmt.Sprintf("%s >= 1024 && %s %% %d == 0 ? string(%s / %d) + '%s' :\n%s", x, x, div, x, div, binSuffixes[i], bin)
	}
	dec := "string(" + x + ")"
	for i := 1; i < len(decSuffixes); i++ { // never k
		div := int64(1)
		for j := 0; j <= i; j++ {
			div *= 1000
		}
		dec = fmt.Sprintf("%s > 0 && %s %% %d == 0 ? string(%s / %d) + '%s' :\n%s", x, x, div, x, div, decSuffixes[i], dec)
	}
	b, d, s := "variables."+v+"Bin", "variables."+v+"Dec", "string("+x+")"
	return []admissionv1.Variable{
		{Name: v + "Bin", Expression: bin},
		{Name: v + "Dec", Expression: dec},
		{Name: v + "Quantity", Expression: fmt.Sprintf("size(%s) < size(%s) ?\n(size(%s) < size(%s) ? %s : %s) :\n(size(%s) < size(%s) ? %s : %s)",
			b, s, d, b, d, b, d, s, d, s)},
	}
}

// bytesText formats the int variable v as policy.Bytes does.
func bytesText(v string) string {
	x, q := "variables."+v, "variables."+v+"Quantity"
	return "(" + x + " == 1 ? '1 byte' : " + q + " == string(" + x + ") ? " + q + " + ' bytes' : string(" + x + ") + ' bytes (' + " + q + " + ')')"
}

// advice is policy's advice for the int expression x below floor f
// (named fq, and at least a page fgive).
func advice(x, f, fq, fgive string) string {
	return "(" + x + " == 1 ? " + quote(policy.AdviceMilli) + " :\n" +
		x + " < 1048576 && " + x + " * 1048576 >= " + f + " ? " + quote(policy.AdviceNoUnitPrefix) + " + string(" + x + ") + 'Mi?' :\n" +
		x + " < 1048576 ? " + quote(policy.AdviceNoUnitGive) + " + " + fgive + " :\n" +
		quote(policy.AdviceAtLeast) + " + " + fq + ")"
}

// quote makes a CEL string literal.
func quote(s string) string {
	return strconv.Quote(s)
}

// floorsLiteral is a handler's floors, with the words that name them:
// policy.Size of the floor, and of the floor but at least a page.
func floorsLiteral(f policy.Floors) string {
	return fmt.Sprintf("{'sandbox': dyn(%d), 'container': dyn(%d), 'sandboxText': dyn(%s), 'containerText': dyn(%s), 'sandboxGive': dyn(%s), 'containerGive': dyn(%s)}",
		f.Sandbox, f.Container, quote(policy.Size(f.Sandbox)), quote(policy.Size(f.Container)),
		quote(policy.Size(max(f.Sandbox, policy.PageSize))), quote(policy.Size(max(f.Container, policy.PageSize))))
}

// floorsByClass maps each runtimeClassName whose handler has its own floors
// to them.
func floorsByClass(pol *policy.Config, classes map[string]string) string {
	def := pol.FloorsFor("")
	byClass := map[string]policy.Floors{}
	for h := range pol.Handlers {
		if _, remapped := classes[h]; !remapped {
			byClass[h] = pol.FloorsFor(h)
		}
	}
	for c, h := range classes {
		byClass[c] = pol.FloorsFor(h)
	}
	var names []string
	for c, f := range byClass {
		if f != def {
			names = append(names, c)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("{")
	for i, c := range names {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(quote(c) + ": " + floorsLiteral(byClass[c]))
	}
	b.WriteString("}")
	m := b.String()
	return "has(variables.spec.runtimeClassName) && variables.spec.runtimeClassName in " + m + " ?\n" +
		m + "[variables.spec.runtimeClassName] :\n" + floorsLiteral(def)
}

func variables(pol *policy.Config, classes map[string]string) []admissionv1.Variable {
	sidecarsBefore := "([0.0] + variables.inits.filter(d, d.sidecar && variables.initNames.indexOf(d.name) < variables.initNames.indexOf(e.name)).map(d, double(d.q))).sum()"
	entries := func(list string, sidecar string) string {
		return "has(variables.spec." + list + ") ? variables.spec." + list + ".map(c, {'name': dyn(c.name), 'sidecar': dyn(" + sidecar + "), 'q': dyn(" + memory("c") + ")}) : []"
	}
	vars := []admissionv1.Variable{
		{Name: "template", Expression: template("object")},
		{Name: "spec", Expression: "variables.template.spec"},
		{Name: "annotations", Expression: "has(variables.template.metadata) && has(variables.template.metadata.annotations) ? variables.template.metadata.annotations : {}"},
		{Name: "skip", Expression: quote(policy.SkipAnnotation) + " in variables.annotations && variables.annotations[" + quote(policy.SkipAnnotation) + "].lowerAscii() == 'true'"},
		{Name: "unchanged", Expression: "request.operation == 'UPDATE' && oldObject != null && (" + strings.ReplaceAll(template("oldObject"), "\n", " ") + ").spec == variables.spec"},
		{Name: "label", Expression: "request.kind.kind.lowerAscii() + ' ' + (request.namespace != '' ? request.namespace : '<unnamed>') + '/' +\n" +
			"(has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name : request.name != '' ? request.name : '<unnamed>')"},
		{Name: "floors", Expression: floorsByClass(pol, classes)},
		// Each container: its name, whether it is a sidecar, its limit.
		{Name: "inits", Expression: entries("initContainers", "has(c.restartPolicy) && c.restartPolicy == 'Always'")},
		{Name: "regular", Expression: entries("containers", "false")},
		{Name: "ephemeral", Expression: entries("ephemeralContainers", "false")},
		{Name: "initNames", Expression: "variables.inits.map(e, e.name)"},
		// What an init container needs while it runs: its own limit and
		// the sidecars started before it (for a sidecar: itself too).
		{Name: "initUse", Expression: "variables.inits.map(e, double(e.q) + " + sidecarsBefore + ")"},
		{Name: "sidecarSum", Expression: "([0.0] + variables.inits.filter(e, e.sidecar).map(e, double(e.q))).sum()"},
		{Name: "regularSum", Expression: "([0.0] + variables.regular.map(e, double(e.q))).sum()"},
		{Name: "initMax", Expression: "([0.0] + variables.initUse).max()"},
		{Name: "podLevelSet", Expression: "has(variables.spec.resources) && (\n" +
			"(has(variables.spec.resources.limits) && variables.spec.resources.limits.exists(k, k == 'cpu' || k == 'memory' || k.startsWith('hugepages-'))) ||\n" +
			"(has(variables.spec.resources.requests) && variables.spec.resources.requests.exists(k, k == 'cpu' || k == 'memory' || k.startsWith('hugepages-'))))"},
		{Name: "podMemory", Expression: "variables.podLevelSet && has(variables.spec.resources.limits) && 'memory' in variables.spec.resources.limits ?\n" +
			"quantity(variables.spec.resources.limits.memory).asApproximateFloat() : -1.0"},
		// The pod's limit without the overhead (the sandbox request's).
		{Name: "podLimit", Expression: "variables.podMemory >= 0.0 ? variables.podMemory :\n" +
			"variables.regularSum + variables.sidecarSum > variables.initMax ? variables.regularSum + variables.sidecarSum : variables.initMax"},
		// Whether the kubelet limits the pod cgroup's memory at all.
		{Name: "declared", Expression: "(size(variables.regular) > 0 && variables.regular.all(e, e.q > 0.0) && variables.initUse.all(u, u > 0.0)) || variables.podMemory > 0.0"},
		{Name: "overhead", Expression: "has(variables.spec.overhead) && 'memory' in variables.spec.overhead ? quantity(variables.spec.overhead.memory).asApproximateFloat() : 0.0"},
		{Name: "hint", Expression: ceil("variables.podLimit")},
		// The pod cgroup's limit, rounded down to pages by the kernel; -1:
		// none.
		{Name: "cgroup", Expression: "variables.declared ? " + ceil("(variables.podLimit + (variables.podLimit > 0.0 ? variables.overhead : 0.0))") + " / 4096 * 4096 : -1"},
		{Name: "sandboxBad", Expression: "variables.cgroup >= 0 && variables.floors.sandbox > 0 && variables.cgroup < variables.floors.sandbox"},
		// The overhead as the kubelet sends it, and the pod limit with it
		// as the node's policy adds them.
		{Name: "overheadBytes", Expression: ceil("variables.overhead")},
		{Name: "hinted", Expression: "variables.hint + variables.overheadBytes"},
	}
	for _, v := range []string{"cgroup", "hint", "hinted", "overheadBytes"} {
		vars = append(vars, quantityVars(v)...)
	}
	// policy's podLimitText: which limit the message quotes, and which the
	// advice is about.
	withOverhead := "(variables.overheadBytes > 0 ? " + bytesText("hinted") + " + ' (' + " + bytesText("hint") + " + " + quote(policy.OverheadPlus) +
		" + " + bytesText("overheadBytes") + " + " + quote(policy.OverheadOf) + " : " + bytesText("hint") + ")"
	vars = append(vars,
		admissionv1.Variable{Name: "sandboxCase", Expression: "variables.hint <= 0 ? 'cgroup' :\n" +
			"variables.hinted / 4096 * 4096 == variables.cgroup && variables.hinted < variables.floors.sandbox ? 'asked' :\n" +
			"variables.hinted / 4096 * 4096 == variables.cgroup ? 'rounded' : 'differ'"},
		admissionv1.Variable{Name: "sandboxText", Expression: "variables.sandboxCase == 'cgroup' ? " + bytesText("cgroup") + " + (variables.cgroup < 4096 ? " + quote(policy.CgroupRounded) + " : '') :\n" +
			"variables.sandboxCase == 'asked' ? " + withOverhead + " :\n" +
			"variables.sandboxCase == 'rounded' ? " + bytesText("cgroup") + " + " + quote(policy.RoundedSo) + " + " + withOverhead + " + " + quote(policy.RoundedReadBack) + " + " + bytesText("cgroup") + " + ')' :\n" +
			bytesText("cgroup") + " + " + quote(policy.CgroupSays) + " + " + withOverhead + " + ')'"},
		admissionv1.Variable{Name: "asked", Expression: "variables.sandboxCase == 'asked' ? variables.hint : variables.cgroup"},
		admissionv1.Variable{Name: "sandboxMessage", Expression: "variables.label + ': memory limit ' + variables.sandboxText +\n" +
			"' is below the ' + variables.floors.sandboxText + ' minimum needed to start the pod sandbox' +\n" +
			advice("variables.asked", "variables.floors.sandbox", "variables.floors.sandboxText", "variables.floors.sandboxGive")},
		// The calls the kubelet makes for the containers, in its order,
		// with the limit each carries.
		admissionv1.Variable{Name: "calls", Expression: "(variables.inits + variables.regular + variables.ephemeral).map(e, {'name': dyn(e.name), 'v': dyn(e.q > 0.0 ? " + ceil("e.q") + " :\n" +
			"variables.podLevelSet && variables.podMemory > 0.0 ? " + ceil("variables.podMemory") + " : 0)})"},
		admissionv1.Variable{Name: "bad", Expression: "variables.calls.filter(c, variables.floors.container > 0 && c.v > 0 && c.v < variables.floors.container)"},
		admissionv1.Variable{Name: "limit", Expression: "size(variables.bad) > 0 ? variables.bad[0].v : 0"},
	)
	vars = append(vars, quantityVars("limit")...)
	vars = append(vars, admissionv1.Variable{Name: "containerMessage", Expression: "variables.label + ', container ' + (size(variables.bad) > 0 && variables.bad[0].name != '' ? variables.bad[0].name : '<unnamed>') +\n" +
		"': memory limit ' + " + bytesText("limit") + " +\n" +
		"' is below the ' + variables.floors.containerText + ' minimum needed to start a container' +\n" +
		advice("variables.limit", "variables.floors.container", "variables.floors.containerText", "variables.floors.containerGive")})
	return vars
}
