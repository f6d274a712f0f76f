package admission

import (
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/internal/floorcases"
)

// TestCasesAdmission runs the shared table through the generated policy,
// evaluated by kube-apiserver's own ValidatingAdmissionPolicy code: it
// refuses with the first refusal the node would give, and admits what the
// node admits.
func TestCasesAdmission(t *testing.T) {
	pol := floorcases.Policy
	vap, _ := Generate(&pol, Options{})
	e := newEvaluator(t, vap)
	for _, tc := range floorcases.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			got := e.admit(t, tc.YAML)
			var want []string
			if len(tc.Want) > 0 {
				want = tc.Want[:1]
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("admission says\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}
