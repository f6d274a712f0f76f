package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

const usage = `usage: cri-guard <command> [flags]

commands:
  serve          run the proxy between the kubelet and the runtime
  check-config   validate a configuration file
  version        print the version
`

// errUsage marks an error whose fix is reading the usage.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest)
	case "check-config":
		return checkConfig(rest)
	case "version", "--version":
		fmt.Println(versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, strings.TrimSpace(cmd))
}
