package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/lint"
)

// Exit codes of lint, for CI jobs and pre-commit hooks.
const (
	lintClean    = 0 // nothing below a floor
	lintFindings = 1 // a manifest needs a fix: a limit below a floor, or a document that cannot be read
	lintError    = 2 // lint could not run: bad usage, bad config, a file it cannot open
)

// runtimeClassFlag collects NAME=HANDLER pairs.
type runtimeClassFlag map[string]string

func (r runtimeClassFlag) String() string { return "" }

func (r runtimeClassFlag) Set(v string) error {
	name, handler, ok := strings.Cut(v, "=")
	if !ok || name == "" || handler == "" {
		return fmt.Errorf("%q: want NAME=HANDLER, a RuntimeClass and its handler", v)
	}
	r[name] = handler
	return nil
}

func lintCmd(_ context.Context, args []string) error {
	cf := newConfigFlags("lint")
	output := cf.fs.String("o", "text", "output: text (file:line: message) or json")
	namespace := cf.fs.String("namespace", "default", "namespace of objects that name none, as kubectl's --namespace")
	classes := runtimeClassFlag{}
	cf.fs.Var(classes, "runtime-class", "NAME=HANDLER: the RuntimeClass NAME runs on runtime handler HANDLER (repeatable; default: a class's handler has its name)")
	cf.fs.Usage = func() {
		fmt.Fprint(cf.fs.Output(), `usage: cri-guard lint [flags] [FILE|DIR|-]...

Checks Kubernetes manifests (YAML or JSON, multi-document, List kinds; a DIR
is searched for *.yaml, *.yml and *.json; - or nothing reads stdin) against
the memory floors of the node configuration, and prints each finding as
"file:line: message", in the node's words.

Exit status: 0 nothing found, 1 findings (a limit below a floor or a
document that cannot be read), 2 lint could not run.

flags:
`)
		cf.fs.PrintDefaults()
	}
	if err := cf.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitCode{lintError, fmt.Errorf("%w: %v", errUsage, err)}
	}
	if *output != "text" && *output != "json" {
		return &exitCode{lintError, fmt.Errorf("%w: -o %q: want text or json", errUsage, *output)}
	}
	_, cfg, err := cf.load()
	if err != nil {
		return &exitCode{lintError, err}
	}
	l := &lint.Linter{Policy: &cfg.Policy, Namespace: *namespace, RuntimeClasses: classes}
	paths := cf.fs.Args()
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	findings := []lint.Finding{}
	for _, p := range paths {
		fs, err := lintPath(l, p, os.Stdin)
		if err != nil {
			return &exitCode{lintError, err}
		}
		findings = append(findings, fs...)
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(findings); err != nil {
			return &exitCode{lintError, err}
		}
	} else {
		for _, f := range findings {
			fmt.Println(f)
		}
	}
	if len(findings) > 0 {
		return &exitCode{code: lintFindings}
	}
	return nil
}

// lintPath checks a file, a directory's manifests, or stdin ("-").
func lintPath(l *lint.Linter, p string, stdin io.Reader) ([]lint.Finding, error) {
	if p == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		return l.Check("<stdin>", b), nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	files := []string{p}
	if fi.IsDir() {
		files = nil
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	var out []lint.Finding
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Check(f, b)...)
	}
	return out, nil
}
