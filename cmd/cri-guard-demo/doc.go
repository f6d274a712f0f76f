// Command cri-guard-demo shows cri-guard at work against a private,
// throw-away containerd (see internal/demo). It needs root.
//
//	cri-guard-demo [--bin bin/cri-guard] [--verbose]          # make demo: replay the incident
//	cri-guard-demo [--bin bin/cri-guard] run [serve flags]    # make run: keep it running until Ctrl-C
//
// Flags after "run" go to `cri-guard serve`, e.g. `run --mode raise`.
package main
