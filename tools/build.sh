#!/usr/bin/env bash
# Builds the CRI peer tools pinned in tools/go.mod into <repo>/bin:
#   bin/crictl  - sigs.k8s.io/cri-tools/cmd/crictl
#   bin/critest - sigs.k8s.io/cri-tools/cmd/critest (a ginkgo test binary)
#   bin/ginkgo  - github.com/onsi/ginkgo/v2/ginkgo (critest -parallel=N runs
#                 "ginkgo" from PATH)
# Usage: tools/build.sh [crictl|critest|ginkgo]...   (default: all three)
# BIN_DIR overrides the output directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${BIN_DIR:-$here/../bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$here"
# Static, as test/node stages crictl for the VM: one build serves both, so
# the node phase finds crictl in the Go build cache instead of compiling it
# again with other settings.
export CGO_ENABLED="${CGO_ENABLED:-0}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(crictl critest ginkgo)
for t in "${targets[@]}"; do
	case "$t" in
	crictl) go build -o "$out/crictl" sigs.k8s.io/cri-tools/cmd/crictl ;;
	critest) go test -c -o "$out/critest" sigs.k8s.io/cri-tools/cmd/critest ;;
	ginkgo) go build -o "$out/ginkgo" github.com/onsi/ginkgo/v2/ginkgo ;;
	*) echo "unknown tool: $t" >&2; exit 2 ;;
	esac
	echo "built $out/$t"
done
