package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/cri-guard/cri-guard/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-guard-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fs := flag.NewFlagSet("cri-guard-demo", flag.ContinueOnError)
	bin := fs.String("bin", "bin/cri-guard", "the cri-guard binary")
	verbose := fs.Bool("verbose", false, "also print harness progress and cri-guard's log")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	opts := demo.Options{Binary: *bin, Out: os.Stdout}
	if *verbose {
		opts.Log = os.Stderr
	}
	switch args := fs.Args(); {
	case len(args) == 0:
		return demo.Run(ctx, opts)
	case args[0] == "run":
		if opts.Log == nil {
			opts.Log = io.Discard
		}
		return demo.Serve(ctx, opts, args[1:]...)
	default:
		return fmt.Errorf("unknown command %q (want none, or run)", args[0])
	}
}
