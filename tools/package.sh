#!/usr/bin/env bash
# Builds cri-guard's Debian and RPM packages from packaging/nfpm.yaml:
#   $PKG_OUT/cri-guard_<version>_amd64.deb
#   $PKG_OUT/cri-guard-<version>-1.x86_64.rpm
# PKG_OUT defaults to bin/pkg; PKG_VERSION to tools/pkgversion.sh (set it to
# build a second package from the same tree, e.g. for an upgrade test).
# nfpm comes from tools/nfpm.sh (built once into the shared cache).
set -euo pipefail
start=$(date +%s)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${PKG_OUT:-bin/pkg}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
version="${PKG_VERSION:-$(tools/pkgversion.sh)}"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# Dates in the package (changelog, man page) are the commit's, so that the
# same commit gives the same files.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
nfpm="$(tools/nfpm.sh)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

# The binary: static, stripped (lintian), paths trimmed.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version -X main.commit=$commit" \
	-o "$stage/cri-guard" ./cmd/cri-guard

# The service with the packaged binary's path, as `make install` does for PREFIX.
sed -e 's|/usr/local/bin/cri-guard|/usr/bin/cri-guard|' \
	-e 's|^# Installed by `make install`;|# Installed by the cri-guard package;|' \
	systemd/cri-guard.service > "$stage/cri-guard.service"
if grep -q /usr/local "$stage/cri-guard.service"; then
	echo "package: cri-guard.service still names /usr/local" >&2
	exit 1
fi

tools/manpage.sh "$stage/cri-guard" "$(date -u -d "@$epoch" +%Y-%m-%d)" | gzip -9n > "$stage/cri-guard.1.gz"

# A Debian-format changelog (lintian reads it for a native package).
{
	echo "cri-guard ($version) unstable; urgency=medium"
	echo
	echo "  * Built from commit $commit:"
	git log -1 --format=%s 2>/dev/null | fold -s -w 70 | sed 's/^/    /'
	echo
	echo " -- cri-guard maintainers <cri-guard@users.noreply.github.com>  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n > "$stage/changelog.gz"

first="$(git log --reverse --format=%cd --date=format:%Y 2>/dev/null | sed -n 1p)"
last="$(date -u -d "@$epoch" +%Y)"
years="${first:-$last}"; [ "$years" = "$last" ] || years="$years-$last"
cat > "$stage/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: cri-guard
Source: https://github.com/cri-guard/cri-guard
Comment: The cri-guard repository has no licence file yet, so no licence
 is stated here for cri-guard's own code. /usr/bin/cri-guard is a static Go
 binary: it contains the Go standard library (BSD-3-Clause) and the Go
 modules listed by \`go version -m /usr/bin/cri-guard\` (among them
 google.golang.org/grpc, k8s.io/cri-api and github.com/containerd/cgroups,
 Apache-2.0), each under its own licence as published with its source.

Files: *
Copyright: $years the cri-guard authors
License: NOASSERTION
 No licence has been chosen for cri-guard yet.
COPY

# nfpm expands environment variables in some fields only, not in contents:
# fill in the three names here.
sed -e "s|\${PKG_VERSION}|$version|g" -e "s|\${PKG_STAGE}|$stage|g" -e "s|\${PKG_ROOT}|$root|g" \
	packaging/nfpm.yaml > "$stage/nfpm.yaml"
if grep -n '\${' "$stage/nfpm.yaml" >&2; then
	echo "package: packaging/nfpm.yaml names a variable that tools/package.sh does not set" >&2
	exit 1
fi
export SOURCE_DATE_EPOCH="$epoch"
deb="$out/cri-guard_${version}_amd64.deb"
rpm="$out/cri-guard-${version}-1.x86_64.rpm"
"$nfpm" package --config "$stage/nfpm.yaml" --packager deb --target "$deb" >&2
"$nfpm" package --config "$stage/nfpm.yaml" --packager rpm --target "$rpm" >&2
echo "package: built $deb and $rpm in $(( $(date +%s) - start ))s" >&2
echo "$deb"
echo "$rpm"
