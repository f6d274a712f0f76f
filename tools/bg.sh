#!/usr/bin/env bash
# Runs `make test`'s cache builds (the VM image, kubelet, containerd 2.x, ...)
# in the background, so that they overlap the phases that mostly wait, and
# lets each phase wait for the build it needs.
#
# Usage:
#   tools/bg.sh start NAME [--after OTHER] CMD [ARG]...
#       runs CMD in the background (after OTHER has finished, ok or not, when
#       given: builds that compete for the CPU run one after another, in the
#       order the phases need them); its output goes to $BG_DIR/NAME.log.
#   tools/bg.sh wait NAME... [-- CMD [ARG]...]
#       waits until each NAME has finished, then runs CMD (if given). Fails,
#       printing the tail of NAME's log, if NAME failed, was never started,
#       ended without a status, or is still running after the hang guard
#       BG_TIMEOUT seconds (default 3600) of waiting. A phase that waits
#       stands still, so the builds get the default nice level back first.
#   tools/bg.sh nice N [-- CMD [ARG]...]
#       puts the running builds and those not started yet at nice N, then
#       runs CMD (if given); make test uses 19 while the node VM runs.
#   tools/bg.sh summary
#       prints each background build's status, time queued and time run.
#   tools/bg.sh stop
#       ends the builds that are still running or queued (make test does so
#       when a phase fails), and waits for them to go.
# BG_DIR defaults to bin/bg; `make test` starts it empty. The builds run at
# nice BG_NICE (default 5), for the process and its scheduler autogroup, so
# that the phases keep most of the CPU they ask for; `nice 19` leaves them
# only the CPU the phases leave idle.
set -uo pipefail
dir="${BG_DIR:-bin/bg}"
timeout="${BG_TIMEOUT:-3600}"
default_nice="${BG_NICE:-5}"
nice_level="$(cat "$dir/nice" 2>/dev/null || echo "$default_nice")"

# alive PID: PID exists and is no zombie (PID 1 here may not reap, so kill -0
# alone would take a finished build for a running one).
alive() {
	local st
	st="$(sed -n 's/^[0-9]* (.*) \([A-Z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)" || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# set_nice N NAME...: N for the running builds NAME (all when none given)
# and, with no NAME, for the builds not started yet.
set_nice() {
	local n="$1" p name pgid
	shift
	mkdir -p "$dir"
	[ $# -gt 0 ] || echo "$n" >"$dir/nice"
	for p in "$dir"/*.pgid; do
		[ -f "$p" ] || continue
		name="$(basename "$p" .pgid)"
		[ $# -gt 0 ] && [[ " $* " != *" $name "* ]] && continue
		[ -f "$dir/$name.rc" ] && continue
		pgid="$(cat "$p")"
		alive "$pgid" || continue
		renice -n "$n" -g "$pgid" >/dev/null 2>&1
		echo "$n" >"/proc/$pgid/autogroup" 2>/dev/null
	done
	return 0
}

tail_log() {
	echo "---- last 30 lines of $dir/$1.log ----" >&2
	tail -n 30 "$dir/$1.log" >&2 2>/dev/null || echo "(no log)" >&2
	echo "----" >&2
}

cmd="${1:-}"
shift || true
case "$cmd" in
start)
	name="${1:?tools/bg.sh start NAME [--after OTHER] CMD...}"
	shift
	after=""
	if [ "${1:-}" = "--after" ]; then after="${2:?--after needs a name}"; shift 2; fi
	[ $# -gt 0 ] || { echo "tools/bg.sh start $name: no command" >&2; exit 2; }
	mkdir -p "$dir"
	rm -f "$dir/$name".{rc,log,pid,pgid,queued,secs,waited}
	queued=$(date +%s)
	(
		trap 'exit 143' TERM
		if [ -n "$after" ]; then
			# Status and log of OTHER are its own; this build runs regardless.
			while [ ! -f "$dir/$after.rc" ] && [ -f "$dir/$after.pid" ] && alive "$(cat "$dir/$after.pid")"; do sleep 2; done
		fi
		s=$(date +%s)
		echo "$((s - queued))" >"$dir/$name.queued"
		echo "== $name: start $(date -u +%H:%M:%S): $*" >"$dir/$name.log"
		# Its own process group (setsid does not fork here: a background job
		# of a shell without job control leads no group), so that stop ends
		# the build with everything it started (go build, mmdebstrap).
		# A new session is a new scheduler autogroup when the kernel has
		# them (sched_autogroup_enabled): nice within it would count for
		# nothing against the phases' autogroup, so the autogroup gets the
		# nice level too.
		nice_level="$(cat "$dir/nice" 2>/dev/null || echo "$default_nice")"
		setsid bash -c 'echo "$1" >/proc/self/autogroup 2>/dev/null; shift; exec nice -n "$0" "$@"' \
			"$nice_level" "$nice_level" "$@" </dev/null >>"$dir/$name.log" 2>&1 &
		child=$!
		echo "$child" >"$dir/$name.pgid"
		trap 'kill -TERM -- -$child 2>/dev/null' TERM
		wait $child
		rc=$?
		# wait returns early when TERM arrives; wait again for the build's end.
		while alive "$child"; do sleep 1; done
		[ $rc -ne 143 ] || echo "== $name: stopped (TERM)" >>"$dir/$name.log"
		echo "$(($(date +%s) - s))" >"$dir/$name.secs"
		echo "$rc" >"$dir/$name.rc.tmp" && mv -f "$dir/$name.rc.tmp" "$dir/$name.rc"
	) </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/$name.pid"
	echo "== background $name: started$( [ -n "$after" ] && echo " (after $after)"), log in $dir/$name.log"
	;;
wait)
	names=()
	while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
	[ "${1:-}" = "--" ] && shift
	echo "$default_nice" >"$dir/nice" 2>/dev/null
	set_nice "$default_nice" "${names[@]}"
	for name in "${names[@]}"; do
		if [ ! -f "$dir/$name.pid" ]; then
			echo "tools/bg.sh: background build $name was never started (no $dir/$name.pid)" >&2
			exit 1
		fi
		w0=$(date +%s)
		announced=""
		while [ ! -f "$dir/$name.rc" ]; do
			if ! alive "$(cat "$dir/$name.pid")"; then
				sleep 1
				[ -f "$dir/$name.rc" ] && break
				echo "tools/bg.sh: background build $name ended without a status (killed?)" >&2
				tail_log "$name"
				exit 1
			fi
			if [ $(($(date +%s) - w0)) -ge "$timeout" ]; then
				echo "tools/bg.sh: background build $name still running after waiting ${timeout}s (hang guard BG_TIMEOUT); stopping it" >&2
				tail_log "$name"
				"$0" stop "$name" >/dev/null 2>&1
				exit 1
			fi
			[ -n "$announced" ] || { echo "== waiting for background build $name (log: $dir/$name.log)"; announced=1; }
			sleep 2
		done
		waited=$(($(date +%s) - w0))
		echo "$waited" >>"$dir/$name.waited"
		rc="$(cat "$dir/$name.rc")"
		if [ "$rc" != 0 ]; then
			echo "tools/bg.sh: background build $name FAILED (rc=$rc) after $(cat "$dir/$name.secs" 2>/dev/null)s" >&2
			tail_log "$name"
			exit 1
		fi
		echo "== background $name: ok in $(cat "$dir/$name.secs")s (waited ${waited}s for it)"
	done
	[ $# -eq 0 ] || exec "$@"
	;;
nice)
	n="${1:?tools/bg.sh nice N [-- CMD...]}"
	shift
	[ "${1:-}" = "--" ] && shift
	set_nice "$n"
	echo "== background builds: nice $n from now"
	[ $# -eq 0 ] || exec "$@"
	;;
summary)
	ls "$dir"/*.pid >/dev/null 2>&1 || exit 0
	echo "== background builds (queued: waiting for the one before; run: own time; waited: a phase stood still for it) =="
	for p in $(ls -tr "$dir"/*.pid); do
		name="$(basename "$p" .pid)"
		if [ -f "$dir/$name.rc" ]; then
			st=ok; [ "$(cat "$dir/$name.rc")" = 0 ] || st="FAILED(rc=$(cat "$dir/$name.rc"))"
		elif alive "$(cat "$p")"; then st=running; else st="ended without status"; fi
		w=0; [ -f "$dir/$name.waited" ] && w=$(awk '{s += $1} END {print s}' "$dir/$name.waited")
		printf '  %-24s queued %5ss  run %5ss  waited %5ss  %s\n' "$name" \
			"$(cat "$dir/$name.queued" 2>/dev/null || echo "?")" "$(cat "$dir/$name.secs" 2>/dev/null || echo "?")" "$w" "$st"
	done
	;;
stop)
	pids=()
	for p in "$dir"/*.pid; do
		[ -f "$p" ] || continue
		name="$(basename "$p" .pid)"
		[ $# -gt 0 ] && [[ " $* " != *" $name "* ]] && continue
		[ -f "$dir/$name.rc" ] && continue
		pid="$(cat "$p")"
		alive "$pid" || continue
		echo "== background $name: stopping (pid $pid)"
		kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
	done
	# The runner forwards TERM to the build and records rc 143; give each
	# build up to 60 s to clean up (the cache scripts remove their temporary
	# files on TERM).
	for pid in "${pids[@]}"; do
		for _ in $(seq 60); do alive "$pid" || break; sleep 1; done
		alive "$pid" && echo "tools/bg.sh: pid $pid still there after 60 s" >&2
	done
	;;
*)
	echo "usage: tools/bg.sh start NAME [--after OTHER] CMD... | wait NAME... [-- CMD...] | nice N [-- CMD...] | summary | stop [NAME...]" >&2
	exit 2
	;;
esac
