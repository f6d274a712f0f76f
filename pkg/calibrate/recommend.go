package calibrate

import (
	"fmt"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// Margin is the safety factor between a measured threshold and the
// recommended floor.
//
// The threshold is measured on an idle node with a freshly started runtime.
// What a start costs moves with things the measurement does not see: a
// kernel or runc upgrade, kernel memory charged to the cgroup when the node
// is under pressure (dentries, page tables), a busier runtime. A floor only
// has to stop manifests whose limit cannot work (a typo such as "2000"
// instead of "2000Mi" is off by a factor of a million), so doubling costs
// nothing a real workload would notice and keeps the floor valid across
// such drift. Rounding up to a whole MiB gives a value people write in
// manifests and absorbs the search's step.
const Margin = 2

// Recommend returns the floor for a measured threshold: Margin times it,
// rounded up to a whole MiB. It is never below 1 MiB.
func Recommend(threshold int64) int64 {
	if threshold <= 0 {
		return policy.MiB
	}
	f := Margin * threshold
	return max((f+policy.MiB-1)/policy.MiB*policy.MiB, policy.MiB)
}

// Snippet is a cri-guard configuration fragment with the floors: under
// runtimeHandlers.<handler> for a named handler, the top-level keys for the
// default one (""). A floor of 0 is left out.
func Snippet(handler string, sandbox, container int64) string {
	var b strings.Builder
	indent := ""
	if handler != "" {
		fmt.Fprintf(&b, "runtimeHandlers:\n  %s:\n", yamlKey(handler))
		indent = "    "
	}
	if sandbox > 0 {
		fmt.Fprintf(&b, "%ssandboxMinMemory: %s\n", indent, policy.Quantity(sandbox))
	}
	if container > 0 {
		fmt.Fprintf(&b, "%scontainerMinMemory: %s\n", indent, policy.Quantity(container))
	}
	return b.String()
}

// yamlKey quotes a handler name unless it is plainly safe as a YAML key.
func yamlKey(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}
