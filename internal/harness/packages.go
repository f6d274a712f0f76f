package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// requirement is a file the harness needs and the Debian package that
// provides it. A bare name is looked up in PATH.
type requirement struct {
	file string
	pkg  string
}

func requirements() []requirement {
	return []requirement{
		{"containerd", "containerd"},
		{"containerd-shim-runc-v2", "containerd"},
		{"runc", "runc"},
		{"/usr/lib/cni/bridge", "containernetworking-plugins"},
		{"/usr/lib/cni/host-local", "containernetworking-plugins"},
		{"/usr/lib/cni/loopback", "containernetworking-plugins"},
		{BusyboxPath, "busybox-static"},
		{"gcc", "gcc"},
		{"/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"},
		{"ip", "iproute2"},
	}
}

// MissingPackages returns the Debian packages that EnsurePackages would
// install, sorted; none if everything is present.
func MissingPackages() []string {
	set := map[string]bool{}
	for _, r := range requirements() {
		if !present(r.file) {
			set[r.pkg] = true
		}
	}
	pkgs := make([]string, 0, len(set))
	for p := range set {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	return pkgs
}

func present(file string) bool {
	if filepath.IsAbs(file) {
		_, err := os.Stat(file)
		return err == nil
	}
	_, err := exec.LookPath(file)
	if err == nil {
		return true
	}
	// PATH may lack the sbin directories for non-login shells.
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(dir, file)); err == nil {
			return true
		}
	}
	return false
}

// EnsurePackages checks for containerd, runc, the CNI plugins, busybox
// (static), gcc with a static libc, and iproute2, and installs the missing
// Debian packages with apt-get. `apt-get update` is run first only when
// there are no package lists, or when the install fails without it.
// Progress goes to log (may be nil). It fails if installing is needed but
// the caller is not root.
func EnsurePackages(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	missing := MissingPackages()
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("ensure packages: %s missing and not running as root (uid %d): install them with apt-get",
			strings.Join(missing, ", "), os.Geteuid())
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("ensure packages: %s missing and apt-get not found: %w", strings.Join(missing, ", "), err)
	}
	fmt.Fprintf(log, "harness: installing %s\n", strings.Join(missing, " "))
	if !haveAptLists() {
		if err := aptGet(ctx, log, "update"); err != nil {
			return fmt.Errorf("ensure packages: %w", err)
		}
	}
	install := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	if err := aptGet(ctx, log, install...); err != nil {
		fmt.Fprintf(log, "harness: install failed (%v), retrying after apt-get update\n", err)
		if uerr := aptGet(ctx, log, "update"); uerr != nil {
			return fmt.Errorf("ensure packages: %w", errors.Join(err, uerr))
		}
		if err := aptGet(ctx, log, install...); err != nil {
			return fmt.Errorf("ensure packages: %w", err)
		}
	}
	if still := MissingPackages(); len(still) > 0 {
		return fmt.Errorf("ensure packages: still missing after install: %s", strings.Join(still, ", "))
	}
	return nil
}

func haveAptLists() bool {
	m, _ := filepath.Glob("/var/lib/apt/lists/*_Packages*")
	return len(m) > 0
}

func aptGet(ctx context.Context, log io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
