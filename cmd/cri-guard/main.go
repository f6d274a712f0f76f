// Command cri-guard is a CRI proxy that refuses pods and containers whose
// memory limits are too small to start, and explains OOM failures.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-guard:", err)
		os.Exit(1)
	}
}
