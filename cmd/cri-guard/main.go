// Command cri-guard is a CRI proxy that refuses pods and containers whose
// memory limits are too small to start, and explains OOM failures.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	var ec *exitCode
	switch {
	case err == nil:
	case errors.As(err, &ec):
		if ec.err != nil {
			fmt.Fprintln(os.Stderr, "cri-guard:", ec.err)
		}
		os.Exit(ec.code)
	default:
		fmt.Fprintln(os.Stderr, "cri-guard:", err)
		os.Exit(1)
	}
}
