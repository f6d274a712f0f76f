#!/usr/bin/env bash
# Runs one phase of `make test` and records how long it took.
# Usage: tools/phase.sh NAME COMMAND [ARG]...
#        tools/phase.sh --summary        (prints every recorded phase, oldest first)
# The record is $PHASE_LOG (default bin/phases.txt); `make test` starts it empty.
# --summary also prints the background builds' times (tools/bg.sh summary).
set -uo pipefail
log="${PHASE_LOG:-bin/phases.txt}"
if [ "${1:-}" = "--summary" ]; then
	echo "== phase times =="
	[ -f "$log" ] && while IFS=$'\t' read -r n t st; do printf '  %-24s %8s  %s\n' "$n" "$t" "$st"; done < "$log"
	[ -f "$log" ] && awk -F'\t' '{s += $2} END {printf "  %-24s %7ds  (the phases run one after another)\n", "total", s}' "$log"
	"$(dirname "$0")/bg.sh" summary
	exit 0
fi
name="$1"; shift
mkdir -p "$(dirname "$log")"
echo "== phase $name: start $(date -u +%H:%M:%S)"
start=$(date +%s)
"$@"
rc=$?
secs=$(( $(date +%s) - start ))
status=ok; [ $rc -eq 0 ] || status="FAILED(rc=$rc)"
printf '%s\t%ss\t%s\n' "$name" "$secs" "$status" >> "$log"
echo "== phase $name: $status in ${secs}s"
exit $rc
