package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLintExitCodes: 0 clean, 1 findings, 2 when lint cannot run, for CI
// jobs and pre-commit hooks.
func TestLintExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("ok/deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: app, resources: {limits: {memory: 64Mi}}}]\n")
	bad := write("bad/deploy.yml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: app, resources: {limits: {memory: \"2000\"}}}]\n")
	write("bad/.git/ignored.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, resources: {limits: {memory: \"1\"}}}]\n")
	cfg := write("config.yaml", "containerMinMemory: 12Mi\nsandboxMinMemory: 4Gi\n")
	low := write("low.yaml", "sandboxMinMemory: \"0\"\ncontainerMinMemory: 1Ki\n")
	for name, tc := range map[string]struct {
		args []string
		code int
	}{
		"clean file":                  {args: []string{good}, code: lintClean},
		"finding in a directory":      {args: []string{filepath.Join(dir, "bad")}, code: lintFindings},
		"the config's floors":         {args: []string{"--config", cfg, good}, code: lintFindings},
		"a flag wins over the config": {args: []string{"--config", cfg, "--sandbox-min-memory", "12Mi", good}, code: lintClean},
		"low floors pass 2000":        {args: []string{"--config", low, bad}, code: lintClean},
		"json output":                 {args: []string{"-o", "json", bad}, code: lintFindings},
		"missing file":                {args: []string{filepath.Join(dir, "nope.yaml")}, code: lintError},
		"bad flag":                    {args: []string{"-o", "xml", good}, code: lintError},
		"bad config":                  {args: []string{"--config", good, good}, code: lintError},
	} {
		t.Run(name, func(t *testing.T) {
			err := lintCmd(context.Background(), tc.args)
			code := 0
			var ec *exitCode
			switch {
			case errors.As(err, &ec):
				code = ec.code
			case err != nil:
				t.Fatalf("error without an exit code: %v", err)
			}
			if code != tc.code {
				t.Fatalf("exit %d (%v), want %d", code, err, tc.code)
			}
		})
	}
}

// TestAdmissionPolicyCommand: the objects print as YAML that kubectl
// applies, without the empty fields of typed objects.
func TestAdmissionPolicyCommand(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = admissionPolicyCmd(context.Background(), []string{"--action", "Warn", "--exempt-namespaces", "kube-system"})
	os.Stdout = stdout
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	n, _ := r.Read(b)
	out := string(b[:n])
	for _, want := range []string{"kind: ValidatingAdmissionPolicy\n", "\n---\n", "kind: ValidatingAdmissionPolicyBinding\n", "  validationActions:\n  - Warn\n", "      - kube-system\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, bad := range []string{"creationTimestamp", "status:"} {
		if strings.Contains(out, bad) {
			t.Errorf("output has %q", bad)
		}
	}
}
