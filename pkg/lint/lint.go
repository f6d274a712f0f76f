package lint

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// ReasonInvalid marks a document that cannot be read as a Kubernetes
// object: YAML that does not parse, a field of the wrong type, a quantity
// that is not one. The API server would refuse it too.
const ReasonInvalid policy.Reason = "invalid-manifest"

// Finding is one violation, or one document that cannot be read.
type Finding struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Kind, Namespace and Name name the object; Container is empty for
	// the pod as a whole (its sandbox).
	Kind      string        `json:"kind,omitempty"`
	Namespace string        `json:"namespace,omitempty"`
	Name      string        `json:"name,omitempty"`
	Container string        `json:"container,omitempty"`
	Reason    policy.Reason `json:"reason"`
	// Limit is the memory limit in bytes that the node would see, Floor
	// the floor it is below.
	Limit   int64  `json:"limit,omitempty"`
	Floor   int64  `json:"floor,omitempty"`
	Message string `json:"message"`
}

// String is the finding as `cri-guard lint` prints it:
// "file:line: message", the message naming the object and container.
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d: %s", f.File, f.Line, f.Message)
}

// Linter checks manifests against a node policy.
type Linter struct {
	// Policy is the node's policy, from the same configuration file that
	// `cri-guard serve` reads. Its Mode is not used: a finding is what
	// mode reject would refuse.
	Policy *policy.Config
	// Namespace is the namespace of objects that name none, as kubectl's
	// --namespace; "default" when empty.
	Namespace string
	// RuntimeClasses maps a runtimeClassName to the runtime handler its
	// RuntimeClass names; a class that is not here is taken to name a
	// handler of its own name.
	RuntimeClasses map[string]string
}

// Check checks the documents of one input, named file in the findings.
func (l *Linter) Check(file string, data []byte) []Finding {
	var out []Finding
	for _, d := range documents(data) {
		out = append(out, l.checkDocument(file, d, "")...)
	}
	return out
}

type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
}

// objectName is what an object's metadata says of its name, if it can be
// read.
type objectName struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func (l *Linter) checkDocument(file string, d document, prefix string) []Finding {
	invalid := func(line int, err error) []Finding {
		return []Finding{{File: file, Line: line, Reason: ReasonInvalid, Message: err.Error()}}
	}
	if d.err != nil {
		return invalid(d.errLine(), d.err)
	}
	var tm typeMeta
	if err := json.Unmarshal(d.json, &tm); err != nil {
		// Not an object (a bare list or scalar): nothing kubectl applies.
		return nil
	}
	line := d.line
	if prefix != "" {
		line = d.lineOf(strings.TrimSuffix(prefix, "."))
	}
	if strings.HasSuffix(tm.Kind, "List") && tm.Items != nil {
		var out []Finding
		for i, item := range tm.Items {
			sub := d
			sub.json = item
			p := prefix + "items[" + strconv.Itoa(i) + "]."
			out = append(out, l.checkDocument(file, sub, p)...)
		}
		return out
	}
	if !checked(tm.APIVersion, tm.Kind) {
		return nil
	}
	o, err := decodePodObject(tm.Kind, d.json)
	if err != nil {
		var on objectName
		_ = json.Unmarshal(d.json, &on) // best effort, for the message
		ns, n := on.Metadata.Namespace, on.Metadata.Name
		if ns == "" {
			ns = l.namespace()
		}
		if n == "" {
			n = "<unnamed>"
		}
		return invalid(line, fmt.Errorf("%s %s/%s: %w", strings.ToLower(tm.Kind), ns, n, err))
	}
	if o.Namespace == "" {
		o.Namespace = l.namespace()
	}
	var out []Finding
	for _, c := range l.Decide(o) {
		path := prefix + o.SpecPath
		if c.Path != "" {
			path += "." + c.Path
		}
		c.Finding.File, c.Finding.Line = file, d.lineOf(path)
		out = append(out, c.Finding)
	}
	return out
}

func (l *Linter) namespace() string {
	if l.Namespace == "" {
		return "default"
	}
	return l.Namespace
}

// decided is a finding before it has a place in a file.
type decided struct {
	Finding
	Path string
}

// Decide returns what the node's policy refuses of the calls the kubelet
// would make for the object's pod, in the kubelet's order.
func (l *Linter) Decide(o *podObject) []decided {
	handler := ""
	if rc := o.Spec.RuntimeClassName; rc != nil && *rc != "" {
		handler = *rc
		if h, ok := l.RuntimeClasses[*rc]; ok {
			handler = h
		}
	}
	pod := policy.Pod{Namespace: o.Namespace, Name: o.Name, RuntimeHandler: handler,
		Annotations: o.Annotations, Kind: o.Kind}
	pol := *l.Policy
	pol.Mode = policy.ModeReject
	var out []decided
	for _, c := range Calls(pod, o.Spec) {
		d := pol.Decide(c.Request)
		if d.Action != policy.Reject {
			continue
		}
		limit := c.Request.ContainerLimit
		if c.Request.Method == policy.RunPodSandbox {
			limit = c.Request.PodLimit
		}
		out = append(out, decided{Finding: Finding{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name,
			Container: c.Request.Container, Reason: d.Reason, Limit: limit, Floor: d.Floor, Message: d.Message}, Path: c.Path})
	}
	return out
}
