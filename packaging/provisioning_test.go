package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/config"
)

// cloudInitScript returns the runcmd script of docs/provisioning.md's
// #cloud-config block, dedented.
func cloudInitScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/provisioning.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n#cloud-config\nruncmd:\n  - \\|\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/provisioning.md has no #cloud-config block with a runcmd script")
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(string(m[1]), "\n") {
		if line == "" {
			continue
		}
		l, ok := strings.CutPrefix(line, "    ")
		if !ok {
			t.Fatalf("runcmd script line not indented by 4: %q", line)
		}
		out.WriteString(l)
	}
	return out.String()
}

// TestProvisioningSnippet: the cloud-init script in docs/provisioning.md is
// the file the node VM runs (test/node/vm/testdata/provision.sh), it is
// valid sh, and its sed turns the shipped config into a valid one in audit
// mode with the metrics listener on.
func TestProvisioningSnippet(t *testing.T) {
	script := cloudInitScript(t)
	vm, err := os.ReadFile("../test/node/vm/testdata/provision.sh")
	if err != nil {
		t.Fatal(err)
	}
	if script != string(vm) {
		t.Fatalf("docs/provisioning.md's runcmd script and test/node/vm/testdata/provision.sh differ:\n--- docs\n%s--- testdata\n%s", script, vm)
	}
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	// Run the script's sed on a copy of the shipped config.
	sed := regexp.MustCompile(`(?s)sed -i (.*?) /etc/cri-guard/config.yaml`).FindStringSubmatch(script)
	if sed == nil {
		t.Fatal("no sed -i ... /etc/cri-guard/config.yaml in the script")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	shipped, _ := os.ReadFile("../systemd/config.yaml")
	os.WriteFile(cfg, shipped, 0o644)
	cmd := exec.Command("sh", "-c", "sed -i "+strings.ReplaceAll(sed[1], "\\\n", "")+" "+cfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	b, _ := os.ReadFile(cfg)
	f, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Resolve(f)
	if err != nil {
		t.Fatal(err)
	}
	if f.Mode != "audit" || c.MetricsListen != "127.0.0.1:9464" {
		t.Errorf("after the script's sed: mode %q, metricsListen %q; want audit and 127.0.0.1:9464", f.Mode, c.MetricsListen)
	}
}
