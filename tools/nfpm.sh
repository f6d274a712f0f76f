#!/usr/bin/env bash
# Builds nfpm (github.com/goreleaser/nfpm/v2, the packager `make package`
# uses) into the shared cache, once per version:
#   ${CRI_GUARD_CACHE:-/var/cache/cri-guard}/bin/nfpm-$NFPM_VERSION/nfpm
# Idempotent: an existing binary that reports the right version is reused.
# Atomic: built in a temporary directory beside the target and renamed into
# place, so a concurrent or interrupted run never leaves a half binary.
# Prints the binary's path on stdout (progress on stderr).
set -euo pipefail
version="${NFPM_VERSION:-v2.45.2}"
cache="${CRI_GUARD_CACHE:-/var/cache/cri-guard}"
dir="$cache/bin/nfpm-$version"
bin="$dir/nfpm"
start=$(date +%s)
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "${version#v}"; then
	echo "nfpm $version: cached at $bin" >&2
	echo "$bin"
	exit 0
fi
mkdir -p "$cache/bin"
tmp="$(mktemp -d "$cache/bin/.nfpm-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "nfpm $version: building (go install from the module proxy)" >&2
# GOFLAGS=-mod=mod: outside any module; ldflags give `nfpm --version` the
# version, as goreleaser's release builds do. -trimpath as in tools/k8s/build.sh,
# so that both reuse the same compiled standard library on a cold machine.
GOBIN="$tmp/out" GOFLAGS= CGO_ENABLED=0 go install -trimpath \
	-ldflags "-s -w -X main.version=${version#v}" \
	"github.com/goreleaser/nfpm/v2/cmd/nfpm@$version" >&2
"$tmp/out/nfpm" --version >/dev/null
chmod 0755 "$tmp/out"
if ! mv -T "$tmp/out" "$dir" 2>/dev/null; then
	# Another run won the race (or a stale directory is there): replace it
	# only if it does not hold a working binary.
	if ! { [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "${version#v}"; }; then
		rm -rf "$dir"
		mv -T "$tmp/out" "$dir"
	fi
fi
echo "nfpm $version: built $bin in $(( $(date +%s) - start ))s" >&2
echo "$bin"
