package admission

import (
	"fmt"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/lint"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// TestAgreesWithLint: across limits, floors (page-aligned or not) and
// overheads, the policy's message is the linter's first finding, word for
// word; the linter's findings are the node policy's own decisions. This
// reaches the node's other sandbox messages (a limit the kernel rounds
// below the floor, overhead named) that the shared table's floors do not.
func TestAgreesWithLint(t *testing.T) {
	limits := []string{"1", "500m", "1e3", "1.5", "2000", "4095", "4096", "4097", "12M", "12000100", "11Mi", "12Mi", "12582913", "0.5Gi", "7E"}
	floors := []int64{12 * policy.MiB, 12_000_001, 12_000_200, 1 * policy.KiB, 4097, 0}
	overheads := []string{"", "100", "1Mi"}
	checked := 0
	for _, floor := range floors {
		pol := &policy.Config{Floors: policy.Floors{Sandbox: floor, Container: floor}}
		vap, _ := Generate(pol, Options{})
		e := newEvaluator(t, vap)
		l := &lint.Linter{Policy: pol}
		for _, lim := range limits {
			for _, oh := range overheads {
				over := ""
				if oh != "" {
					over = "  overhead: {memory: \"" + oh + "\"}\n"
				}
				y := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n%s  containers:\n  - {name: c, image: x, resources: {limits: {memory: %q}}}\n", over, lim)
				var want []string
				if f := l.Check("p.yaml", []byte(y)); len(f) > 0 {
					want = []string{f[0].Message}
				}
				got := e.admit(t, y)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("floor %d, limit %s, overhead %q:\nadmission %q\nlint      %q", floor, lim, oh, got, want)
				}
				checked++
			}
		}
	}
	t.Logf("%d pods", checked)
}
