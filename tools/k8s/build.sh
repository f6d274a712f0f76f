#!/usr/bin/env bash
# Builds the real Kubernetes components the node and admission tests run, from
# their Go modules through the module proxy, into the shared cache:
#   $CACHE/bin/kubernetes-$K8S_VERSION/kubelet
#   $CACHE/bin/kubernetes-$K8S_VERSION/kube-apiserver
#   $CACHE/bin/etcd-$ETCD_VERSION/etcd
# CACHE is ${CRI_GUARD_CACHE:-/var/cache/cri-guard}; the versions are in
# versions.env beside this script (the environment may override them).
#
# Usage: tools/k8s/build.sh [kubernetes|kubelet|kube-apiserver|etcd]...
#                                        (default: kubernetes etcd; kubernetes
#                                        is kubelet and kube-apiserver in one
#                                        go build)
#        tools/k8s/build.sh --print                (prints KUBELET=, KUBE_APISERVER=,
#                                                   ETCD= lines with the paths; builds nothing)
#
# Idempotent: binaries that exist and answer --version with the wanted version
# are kept ("cached"). Atomic: each binary is built under a temporary name and
# renamed into place, so a killed build leaves no half binary. Two callers at
# once are serialised by a lock in the cache.
#
# k8s.io/kubernetes cannot be built with `go install`: its go.mod replaces the
# k8s.io/* staging modules with ./staging/..., which the module zip lacks. So a
# scratch module under $CACHE/src takes its go.mod and go.sum, drops those
# replaces, requires each staging module at the matching v0.X.Y and
# k8s.io/kubernetes itself, and builds both commands in one `go build` (they
# share most of the compile work). `make test` builds kubelet alone first (the
# node VM needs it; kube-apiserver only the later apiserver phase): the second
# build reuses the shared packages from the Go build cache. etcd's server module has the same kind of
# replaces (../api, ../pkg, ...) and is built the same way.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
K8S_VERSION="${K8S_VERSION_OVERRIDE:-$K8S_VERSION}"
ETCD_VERSION="${ETCD_VERSION_OVERRIDE:-$ETCD_VERSION}"
CACHE="${CRI_GUARD_CACHE:-/var/cache/cri-guard}"
GO="${GO:-go}"
k8s_dir="$CACHE/bin/kubernetes-$K8S_VERSION"
etcd_dir="$CACHE/bin/etcd-$ETCD_VERSION"

if [ "${1:-}" = "--print" ]; then
	echo "KUBELET=$k8s_dir/kubelet"
	echo "KUBE_APISERVER=$k8s_dir/kube-apiserver"
	echo "ETCD=$etcd_dir/etcd"
	exit 0
fi

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(kubernetes etcd)
for t in "${targets[@]}"; do
	case "$t" in kubernetes|kubelet|kube-apiserver|etcd) ;; *) echo "k8s/build.sh: unknown target $t (want kubernetes, kubelet, kube-apiserver or etcd)" >&2; exit 2 ;; esac
done

mkdir -p "$CACHE/bin" "$CACHE/src"

# lock NAME: holds $CACHE/bin/.NAME.lock until the script exits, so that two
# callers building the same component take turns (the second finds it cached).
lock() {
	local f="$CACHE/bin/.$1.lock" fd
	exec {fd}>"$f"
	if ! flock -n "$fd"; then
		echo "k8s/build.sh: another build holds $f; waiting"
		flock "$fd"
	fi
}

# has_version BIN WANT: BIN runs and its --version output contains WANT.
has_version() {
	[ -x "$1" ] || return 1
	local out
	out="$("$1" --version 2>&1)" || return 1
	grep -qF -- "$2" <<<"$out"
}

# scratch_module NAME MODULE@VERSION: makes $CACHE/src/NAME a module whose
# go.mod and go.sum are MODULE's, with module path changed and every
# local-path replace dropped; prints the module paths of the dropped replaces
# that MODULE also requires (the others only guard against bad imports).
scratch_module() {
	local name="$1" modver="$2" dir="$CACHE/src/$1" info gomod gosum
	info="$(GOFLAGS=-mod=mod "$GO" mod download -json "$modver")"
	gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")"
	local srcdir
	srcdir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")"
	gosum="$srcdir/go.sum"
	[ -f "$gomod" ] && [ -f "$gosum" ] || { echo "k8s/build.sh: $modver: no go.mod/go.sum in the module cache" >&2; return 1; }
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	# Local replaces are "X => ./path" or "X => ../path", inside a replace
	# block or on one replace line.
	sed -n 's/^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]\{1,\}\)[[:space:]]\{1,\}=>[[:space:]]\{1,\}\.\{1,2\}\/.*/\2/p' "$gomod" >"$dir.tmp/dropped"
	sed -e '/=>[[:space:]]\{1,\}\.\{1,2\}\//d' \
		-e "s#^module .*#module cri-guard.local/build/$name#" "$gomod" >"$dir.tmp/go.mod"
	cp "$gosum" "$dir.tmp/go.sum"
	chmod u+w "$dir.tmp/go.mod" "$dir.tmp/go.sum"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	local m
	while read -r m; do
		grep -qE "^[[:space:]]*(require[[:space:]]+)?${m//./\\.}[[:space:]]+v" "$dir/go.mod" && echo "$m"
	done <"$dir/dropped"
	return 0
}

# build_dir DIR: prints a new temporary directory in DIR for a build's
# outputs, after removing those a killed build left (the caller holds the
# lock, so no other build is using them). The directory goes on exit.
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
build_dir() {
	mkdir -p "$1"
	rm -rf "$1"/.build.*
	mktemp -d "$1/.build.XXXXXX"
}

# install_atomic TMP DEST: moves a freshly built binary into place.
install_atomic() { chmod 0755 "$1" && mv -f "$1" "$2"; }

# build_kubernetes CMD...: builds the commands (kubelet, kube-apiserver) that
# are not cached yet, in one go build.
build_kubernetes() {
	lock "kubernetes-$K8S_VERSION"
	local cmds=() c
	for c in "$@"; do
		has_version "$k8s_dir/$c" "Kubernetes $K8S_VERSION" || cmds+=("$c")
	done
	if [ ${#cmds[@]} -eq 0 ]; then
		echo "kubernetes $K8S_VERSION: $* cached in $k8s_dir"
		return 0
	fi
	local start=$SECONDS name="kubernetes-$K8S_VERSION" dir staging=() reqs=() m
	dir="$CACHE/src/$name"
	echo "kubernetes $K8S_VERSION: preparing the build module in $dir"
	mapfile -t staging < <(scratch_module "$name" "k8s.io/kubernetes@$K8S_VERSION")
	[ ${#staging[@]} -gt 0 ] || { echo "k8s/build.sh: k8s.io/kubernetes@$K8S_VERSION has no ./staging replaces; recipe out of date" >&2; return 1; }
	# k8s.io/kubernetes vX.Y.Z ships its staging modules as v0.Y.Z.
	local stag_ver="v0.${K8S_VERSION#v1.}"
	for m in "${staging[@]}"; do reqs+=("-require=$m@$stag_ver"); done
	reqs+=("-require=k8s.io/kubernetes@$K8S_VERSION")
	(cd "$dir" && "$GO" mod edit "${reqs[@]}")
	local major minor
	major="${K8S_VERSION#v}"; major="${major%%.*}"
	minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
	local date ldflags="-s -w" p
	date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
	done
	local tmp
	tmp="$(build_dir "$k8s_dir")"
	tmps+=("$tmp")
	local pkgs=()
	for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	echo "kubernetes $K8S_VERSION: building ${cmds[*]} (kubelet and kube-apiserver together: about 10 min cold on 2 cores)"
	(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	for m in "${cmds[@]}"; do
		has_version "$tmp/$m" "Kubernetes $K8S_VERSION" || { echo "k8s/build.sh: built $m does not report $K8S_VERSION: $("$tmp/$m" --version 2>&1 | head -1)" >&2; return 1; }
	done
	for m in "${cmds[@]}"; do install_atomic "$tmp/$m" "$k8s_dir/$m"; done
	echo "kubernetes $K8S_VERSION: built ${cmds[*]} in $k8s_dir in $((SECONDS - start))s"
}

build_etcd() {
	local want="etcd Version: ${ETCD_VERSION#v}"
	lock "etcd-$ETCD_VERSION"
	if has_version "$etcd_dir/etcd" "$want"; then
		echo "etcd $ETCD_VERSION: cached in $etcd_dir"
		return 0
	fi
	local start=$SECONDS name="etcd-$ETCD_VERSION" dir dropped=() reqs=() m
	dir="$CACHE/src/$name"
	echo "etcd $ETCD_VERSION: preparing the build module in $dir"
	mapfile -t dropped < <(scratch_module "$name" "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
	# The server's local replaces point at its sibling modules of the same
	# release; go.mod already requires them at that version.
	for m in "${dropped[@]}"; do reqs+=("-require=$m@$ETCD_VERSION"); done
	reqs+=("-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION")
	(cd "$dir" && "$GO" mod edit "${reqs[@]}")
	local tmp
	tmp="$(build_dir "$etcd_dir")"
	tmps+=("$tmp")
	echo "etcd $ETCD_VERSION: building etcd"
	(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
	has_version "$tmp/etcd" "$want" || { echo "k8s/build.sh: built etcd does not report $ETCD_VERSION: $("$tmp/etcd" --version 2>&1 | head -1)" >&2; return 1; }
	install_atomic "$tmp/etcd" "$etcd_dir/etcd"
	echo "etcd $ETCD_VERSION: built $etcd_dir/etcd in $((SECONDS - start))s"
}

for t in "${targets[@]}"; do
	case "$t" in
	kubernetes) build_kubernetes kubelet kube-apiserver ;;
	kubelet | kube-apiserver) build_kubernetes "$t" ;;
	etcd) build_etcd ;;
	esac
done
