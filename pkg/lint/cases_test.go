package lint

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/cri-guard/cri-guard/internal/floorcases"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// TestCasesConfig: the table's config file resolves to the policy the
// table's Go tests use.
func TestCasesConfig(t *testing.T) {
	f, err := config.Parse([]byte(floorcases.Config))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Resolve(f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Policy, floorcases.Policy) {
		t.Fatalf("config resolves to %+v, floorcases.Policy is %+v", c.Policy, floorcases.Policy)
	}
}

// TestCasesNode runs the shared table against the node's policy: each call
// the kubelet makes for the pod, decided by policy.Decide as cri-guard on
// the node decides it, the pod named as the node names it.
func TestCasesNode(t *testing.T) {
	pol := floorcases.Policy
	for _, tc := range floorcases.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			o := decodeCase(t, tc.YAML)
			label := strings.ToLower(o.Kind) + " " + o.Namespace + "/" + o.Name
			handler := ""
			if o.Spec.RuntimeClassName != nil {
				handler = *o.Spec.RuntimeClassName // the cases' classes name handlers of their names
			}
			pod := policy.Pod{Namespace: o.Namespace, Name: o.Name, RuntimeHandler: handler, Annotations: o.Annotations}
			var got []string
			for _, c := range Calls(pod, o.Spec) {
				if d := pol.Decide(c.Request); d.Action == policy.Reject {
					got = append(got, d.Message)
				}
			}
			var want []string
			for _, w := range tc.Want {
				want = append(want, "pod "+o.Namespace+"/"+o.Name+strings.TrimPrefix(w, label))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("node refuses\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

// TestCasesLint runs the shared table through the linter, as text.
func TestCasesLint(t *testing.T) {
	pol := floorcases.Policy
	l := &Linter{Policy: &pol}
	for _, tc := range floorcases.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			var got []string
			for _, f := range l.Check("case.yaml", []byte(tc.YAML)) {
				got = append(got, f.Message)
			}
			if !reflect.DeepEqual(got, tc.Want) {
				t.Errorf("lint says\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.Want, "\n  "))
			}
		})
	}
}

func decodeCase(t *testing.T, y string) *podObject {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var tm typeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		t.Fatal(err)
	}
	o, err := decodePodObject(tm.Kind, j)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
