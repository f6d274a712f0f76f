package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// command is one subcommand of cri-guard.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

// commands lists the subcommands, one line each.
var commands = []command{
	{"serve", "run the proxy between the kubelet and the runtime", serve},
	{"check-config", "validate a configuration file", func(_ context.Context, args []string) error { return checkConfig(args) }},
	{"reload", "make the running daemon apply its config file (or hand over to a replaced binary); fails if refused", reloadCmd},
	{"explain", "explain why a pod cannot start or was OOM-killed", explain},
	{"status", "ask a running daemon for its version, config digest and upstream state", statusCmd},
	{"calibrate", "measure the smallest memory limits that start on this node", calibrateCmd},
	{"kubelet-dropin", "put the kubelet drop-in in place, take it out, or show what points the kubelet at cri-guard", kubeletDropinCmd},
	{"lint", "check Kubernetes manifests against the memory floors, for CI and pre-commit", lintCmd},
	{"admission-policy", "print a ValidatingAdmissionPolicy that applies the floors at admission", admissionPolicyCmd},
	{"version", "print the version", func(context.Context, []string) error { fmt.Println(versionString()); return nil }},
}

// errUsage marks an error whose fix is reading the usage.
var errUsage = errors.New("usage")

func usage() string {
	var b strings.Builder
	b.WriteString("usage: cri-guard <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-15s %s\n", c.name, c.summary)
	}
	return b.String()
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage())
		return fmt.Errorf("%w: no command", errUsage)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		fmt.Print(usage())
		return nil
	case "--version":
		name = "version"
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest)
		}
	}
	fmt.Fprint(os.Stderr, usage())
	return fmt.Errorf("%w: unknown command %q", errUsage, name)
}
