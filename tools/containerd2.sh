#!/usr/bin/env bash
# Builds containerd 2.x (daemon, runc v2 shim, ctr) from the Go module proxy
# into the shared cache, for the real-runtime tests against containerd 2.x:
#   ${CRI_GUARD_CACHE:-/var/cache/cri-guard}/bin/containerd-<ver>/{containerd,containerd-shim-runc-v2,ctr}
# Idempotent: a directory whose containerd answers --version is reused. Safe
# to run concurrently (flock); the directory appears whole or not at all (the
# build goes to a temporary directory that is renamed into place).
# Usage: tools/containerd2.sh            (CONTAINERD2_VERSION overrides v2.4.2)
# Prints the directory on its last line.
set -euo pipefail
ver="${CONTAINERD2_VERSION:-v2.4.2}"
cache="${CRI_GUARD_CACHE:-/var/cache/cri-guard}"
dir="$cache/bin/containerd-$ver"
start=$(date +%s)
mkdir -p "$cache/bin"
exec 9>"$cache/bin/.containerd-$ver.lock"
flock 9

ok() {
	[ -x "$1/containerd-shim-runc-v2" ] && [ -x "$1/ctr" ] &&
		"$1/containerd" --version 2>/dev/null | grep -qF " $ver "
}

if ok "$dir"; then
	echo "containerd $ver: cached in $dir ($(( $(date +%s) - start ))s)"
	echo "$dir"
	exit 0
fi
command -v gcc >/dev/null || { echo "containerd2.sh: gcc is needed (CGO_ENABLED=1); run make deps" >&2; exit 1; }
tmp="$(mktemp -d "$cache/bin/.containerd-$ver.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "containerd $ver: building into $dir (a few minutes cold)"
# Outside any module, so the repository's go.mod plays no part. The version is
# stamped as containerd's own Makefile does (without it: "2.4.2+unknown").
# -trimpath as in tools/k8s/build.sh and tools/nfpm.sh: on a cold machine the
# builds share the compiled standard library (and modules of equal versions).
(cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=1 GOFLAGS= go install -trimpath -tags no_btrfs \
	-ldflags "-X github.com/containerd/containerd/v2/version.Version=$ver" \
	"github.com/containerd/containerd/v2/cmd/containerd@$ver" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$ver" \
	"github.com/containerd/containerd/v2/cmd/ctr@$ver")
ok "$tmp" || { echo "containerd2.sh: the build in $tmp does not answer --version with $ver" >&2; exit 1; }
chmod 0755 "$tmp"
rm -rf "$dir"
mv -T "$tmp" "$dir"
trap - EXIT
echo "containerd $ver: built in $(( $(date +%s) - start ))s"
echo "$dir"
