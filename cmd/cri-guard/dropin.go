package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cri-guard/cri-guard/systemd"
)

// The kubelet drop-in directory that `kubelet-dropin` manages, and the
// socket directory whose mention means "the kubelet talks to cri-guard".
const (
	kubeletDropinDir = "/etc/systemd/system/kubelet.service.d"
	socketMarker     = "/run/cri-guard/"
)

// exitCode is an error that sets the exit status (other errors exit 1).
// A nil err prints nothing.
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCode) Unwrap() error { return e.err }

// errNotWired is `kubelet-dropin status`'s answer when nothing points the
// kubelet at cri-guard: exit status 3, as `systemctl is-active` for an
// inactive unit.
var errNotWired = &exitCode{code: 3}

// runSystemctl runs systemctl; tests replace it.
var runSystemctl = func(args ...string) error {
	cmd := exec.Command("systemctl", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

const dropinUsage = `usage: cri-guard kubelet-dropin install|remove|status [flags]

Puts the kubelet drop-in 10-cri-guard.conf (which points the kubelet at
unix:///run/cri-guard/cri-guard.sock) in place, or takes it out. The packages
ship it inactive, as /usr/share/cri-guard/10-cri-guard.conf.

  install  write ` + kubeletDropinDir + `/10-cri-guard.conf, then
           systemctl daemon-reload and restart the kubelet if it runs.
           Refuses while cri-guard.socket is not active: the kubelet would
           have no runtime.
  remove   delete it, then daemon-reload and restart the kubelet if it runs:
           the kubelet talks to the runtime directly again. Fails if
           anything else still points the kubelet at cri-guard.
  status   list what points the kubelet at cri-guard (the drop-in, another
           drop-in, /etc/default/kubelet, kubeadm-flags.env, the kubelet's
           config file, the running kubelet's flags). Exit status 0: the
           kubelet uses cri-guard; 3: nothing points it at cri-guard.

Restarting the kubelet restarts no pod: it finds the same containers
through the runtime. Without systemd (no /run/systemd/system) nothing is
reloaded or restarted; the command says what to run.

flags:
`

// kubeletDropinCmd is `cri-guard kubelet-dropin`.
func kubeletDropinCmd(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("kubelet-dropin", flag.ContinueOnError)
	root := fs.String("root", "/", "act on the file system tree at this directory (an image being built); systemctl runs only if ROOT/run/systemd/system exists")
	noRestart := fs.Bool("no-restart", false, "do not restart the kubelet; it keeps its current runtime endpoint until restarted")
	force := fs.Bool("force", false, "install even if cri-guard.socket is not active")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), dropinUsage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return nil
		}
		fs.Usage()
		return fmt.Errorf("%w: cri-guard kubelet-dropin install|remove|status", errUsage)
	}
	action := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	d := dropin{root: *root, out: os.Stdout}
	switch action {
	case "install":
		return d.install(*force, !*noRestart)
	case "remove":
		return d.remove(!*noRestart)
	case "status":
		return d.status()
	}
	fs.Usage()
	return fmt.Errorf("%w: unknown action %q (install, remove or status)", errUsage, action)
}

// dropin acts on the node's file system under root.
type dropin struct {
	root string
	out  io.Writer
}

func (d dropin) path(p string) string { return filepath.Join(d.root, p) }

func (d dropin) file() string { return filepath.Join(kubeletDropinDir, systemd.KubeletDropinName) }

// systemd reports whether systemd manages the tree (sd_booted's test).
func (d dropin) systemd() bool {
	fi, err := os.Stat(d.path("/run/systemd/system"))
	return err == nil && fi.IsDir()
}

func (d dropin) install(force, restart bool) error {
	sd := d.systemd()
	if sd && !force {
		if err := runSystemctl("is-active", "--quiet", "cri-guard.socket"); err != nil {
			return fmt.Errorf("cri-guard.socket is not active, and the kubelet would have no runtime: "+
				"systemctl enable --now cri-guard.socket cri-guard.service first (%w)", err)
		}
	}
	dst := d.path(d.file())
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, systemd.KubeletDropin) {
		fmt.Fprintf(d.out, "%s is already in place\n", d.file())
	} else {
		if err := writeAtomic(dst, systemd.KubeletDropin, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "wrote %s: the kubelet's runtime endpoint is unix:///run/cri-guard/cri-guard.sock\n", d.file())
	}
	return d.apply(sd, restart, "now talks to cri-guard")
}

func (d dropin) remove(restart bool) error {
	sd := d.systemd()
	switch err := os.Remove(d.path(d.file())); {
	case err == nil:
		fmt.Fprintf(d.out, "removed %s\n", d.file())
		// Leave no empty directory behind; one holding other drop-ins stays.
		os.Remove(d.path(kubeletDropinDir))
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(d.out, "%s is not in place\n", d.file())
	default:
		return err
	}
	if err := d.apply(sd, restart, "talks to the runtime directly"); err != nil {
		return err
	}
	reasons, err := d.wiring()
	if err != nil {
		return err
	}
	var left []string
	for _, r := range reasons {
		if !restart || !sd || !r.running {
			left = append(left, r.what)
		}
	}
	if len(left) > 0 && restart && sd {
		return fmt.Errorf("the kubelet is still pointed at cri-guard:\n  %s", strings.Join(left, "\n  "))
	}
	if len(left) > 0 {
		fmt.Fprintf(d.out, "still pointing the kubelet at cri-guard:\n  %s\n", strings.Join(left, "\n  "))
	}
	return nil
}

// apply reloads systemd and restarts the kubelet if it runs, or says what
// to run when systemd does not manage the tree or restart is off.
func (d dropin) apply(sd, restart bool, result string) error {
	if !sd {
		fmt.Fprintln(d.out, "systemd is not running here: run systemctl daemon-reload && systemctl restart kubelet on the node")
		return nil
	}
	if err := runSystemctl("daemon-reload"); err != nil {
		return err
	}
	if !restart {
		fmt.Fprintln(d.out, "systemd reloaded; the kubelet keeps its current endpoint until `systemctl restart kubelet`")
		return nil
	}
	// try-restart: a stopped kubelet stays stopped and picks the drop-in up
	// when it starts.
	if err := runSystemctl("try-restart", "kubelet.service"); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "systemd reloaded and the kubelet (if it was running) restarted: it %s; no pod was restarted\n", result)
	return nil
}

func (d dropin) status() error {
	reasons, err := d.wiring()
	if err != nil {
		return err
	}
	if len(reasons) == 0 {
		fmt.Fprintln(d.out, "nothing points the kubelet at cri-guard")
		return errNotWired
	}
	fmt.Fprintln(d.out, "the kubelet is pointed at cri-guard by:")
	for _, r := range reasons {
		fmt.Fprintf(d.out, "  %s\n", r.what)
	}
	return nil
}

// reason is one thing that points the kubelet at cri-guard.
type reason struct {
	what    string
	running bool // the running kubelet's own flags or config
}

// wiring lists everything on the node that points the kubelet at
// cri-guard's socket: a non-comment line naming /run/cri-guard/ in a
// kubelet drop-in, an environment file, the config file, or the running
// kubelet's command line.
func (d dropin) wiring() ([]reason, error) {
	var out []reason
	seen := map[string]bool{}
	check := func(p string, running bool) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		b, err := os.ReadFile(d.path(p))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		if line := mentionsSocket(b); line != "" {
			out = append(out, reason{what: fmt.Sprintf("%s: %s", p, line), running: running})
		}
		return nil
	}
	for _, dir := range []string{kubeletDropinDir, "/run/systemd/system/kubelet.service.d", "/usr/lib/systemd/system/kubelet.service.d", "/lib/systemd/system/kubelet.service.d"} {
		names, _ := filepath.Glob(filepath.Join(d.path(dir), "*.conf"))
		sort.Strings(names)
		for _, n := range names {
			if err := check(filepath.Join(dir, filepath.Base(n)), false); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range []string{"/etc/default/kubelet", "/etc/sysconfig/kubelet", "/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/config.yaml"} {
		if err := check(p, false); err != nil {
			return nil, err
		}
	}
	pids, err := kubeletPIDs(d.path("/proc"))
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		b, err := os.ReadFile(d.path(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")))
		if err != nil {
			continue // it exited
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i, a := range args {
			if strings.Contains(a, socketMarker) {
				out = append(out, reason{what: fmt.Sprintf("the running kubelet (pid %d): %s", pid, a), running: true})
			}
			cfg := ""
			if v, ok := strings.CutPrefix(a, "--config="); ok {
				cfg = v
			} else if a == "--config" && i+1 < len(args) {
				cfg = args[i+1]
			}
			if cfg != "" && filepath.IsAbs(cfg) {
				if err := check(cfg, true); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// mentionsSocket returns the first non-comment line of b that names
// cri-guard's socket directory, trimmed, or "".
func mentionsSocket(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.Contains(line, socketMarker) {
			return line
		}
	}
	return ""
}

// kubeletPIDs lists the processes named kubelet under procDir.
func kubeletPIDs(procDir string) ([]int, error) {
	ents, err := os.ReadDir(procDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procDir, e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == "kubelet" {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// writeAtomic writes b to p through a temporary file in p's directory,
// creating the directory (0755) if needed.
func writeAtomic(p string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}
