#!/usr/bin/env bash
# Writes cri-guard(1) in roff to stdout, generated from the binary's own
# help: `cri-guard help` and each command's -h. Usage: tools/manpage.sh BIN DATE
set -euo pipefail
bin="$1"
date="${2:-$(date -u +%Y-%m-%d)}"
version="$("$bin" version | awk '{print $2}')"

# esc quotes text for roff inside .nf: backslashes, and a leading . or '.
esc() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

cat <<HEAD
.TH CRI-GUARD 1 "$date" "cri-guard $version" "User Commands"
.SH NAME
cri-guard \- CRI proxy that refuses pods with memory limits too small to start
.SH SYNOPSIS
.B cri-guard
.I command
.RI [ flags ]
.SH DESCRIPTION
cri-guard sits between the kubelet and the container runtime and forwards
every CRI call unchanged. It refuses a pod sandbox or container whose memory
limit is below a floor, with a message the pod's owner can act on, and
explains out\-of\-memory failures at start.
.PP
The package runs it as
.B cri-guard.service
behind
.BR cri-guard.socket ,
configured by
.IR /etc/cri-guard/config.yaml .
The kubelet drop-in is shipped inactive as
.IR /usr/share/cri-guard/10-cri-guard.conf ;
.B cri-guard kubelet-dropin install
puts it in place.
.SH COMMANDS
.nf
HEAD
"$bin" help | esc
echo ".fi"
for c in serve check-config status explain calibrate kubelet-dropin version; do
	echo ".SS $c"
	echo ".nf"
	case "$c" in
	check-config) echo "usage: cri-guard check-config FILE" ;;
	version) echo "usage: cri-guard version" ;;
	*) { "$bin" "$c" -h 2>&1 || true; } | esc ;; # -h exits 2 for some
	esac
	echo ".fi"
done
cat <<'TAIL'
.SH FILES
.TP
.I /etc/cri-guard/config.yaml
the configuration; every key at its default, commented out
.TP
.I /run/cri-guard/cri-guard.sock
the kubelet's socket, held by cri-guard.socket
.TP
.I /usr/share/cri-guard/10-cri-guard.conf
the kubelet drop-in, inactive until
.B cri-guard kubelet-dropin install
.SH SEE ALSO
.BR systemctl (1),
.BR kubelet (1)
.PP
https://github.com/cri-guard/cri-guard/blob/main/docs/operations.md
TAIL
