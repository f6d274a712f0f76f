#!/usr/bin/env bash
# Prints the package version of the checked-out commit, valid for Debian and
# RPM, and ordered as the commits are:
#   at a tag vX.Y.Z:           X.Y.Z
#   after the newest tag:      X.Y.Z+git<UTC commit time>.<sha7>
#   no tag yet:                0.0.0~git<UTC commit time>.<sha7>
# with ".dirty" appended when the tree has uncommitted changes. The commit
# time is the committer date (YYYYMMDDhhmmss), so later commits on main sort
# higher; "~" sorts before and "+" after the bare version in both dpkg and
# rpm. Usage: tools/pkgversion.sh [COMMIT]
set -euo pipefail
rev="${1:-HEAD}"
ts="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S "$rev")"
sha="$(git rev-parse --short=7 "$rev")"
tag="$(git describe --tags --abbrev=0 --match 'v[0-9]*' "$rev" 2>/dev/null || true)"
if [ -n "$tag" ]; then
	base="${tag#v}"
	base="${base//-/"~"}" # v1.2.0-rc1 -> 1.2.0~rc1, below 1.2.0 (a hyphen is the Debian revision separator)
	if [ "$(git rev-list -n1 "$tag")" = "$(git rev-parse "$rev^{commit}")" ]; then
		v="$base"
	else
		v="$base+git$ts.$sha"
	fi
else
	v="0.0.0~git$ts.$sha"
fi
if [ "$rev" = HEAD ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	v="$v.dirty"
fi
echo "$v"
