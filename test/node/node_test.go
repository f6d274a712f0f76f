package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// kubeletVersion is the kubelet the node runs (built by tools/k8s/build.sh).
const kubeletVersion = "v1.34.3"

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func cacheDir() string {
	if c := os.Getenv("CRI_GUARD_CACHE"); c != "" {
		return c
	}
	return "/var/cache/cri-guard"
}

func since(t0 time.Time) string { return time.Since(t0).Round(100 * time.Millisecond).String() }

// TestNode boots the node VM once and runs every in-VM scenario in it.
func TestNode(t *testing.T) {
	if os.Getenv("CRI_GUARD_NODE") != "1" {
		t.Skip("set CRI_GUARD_NODE=1 (as root) to boot the node VM; `make test-node` does")
	}
	if os.Geteuid() != 0 {
		t.Fatal("CRI_GUARD_NODE=1 needs root (qemu's 9p share, the image build)")
	}
	timeout := 40 * time.Minute
	if s := os.Getenv("CRI_GUARD_NODE_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CRI_GUARD_NODE_TIMEOUT: %v", err)
		}
		timeout = d
	}
	repo := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	t0 := time.Now()
	img := ensureImage(t, repo)
	fmt.Printf("node: image %s ready in %s\n", img, since(t0))

	kubelet := os.Getenv("CRI_GUARD_KUBELET")
	if kubelet == "" {
		kubelet = filepath.Join(cacheDir(), "bin", "kubernetes-"+kubeletVersion, "kubelet")
	}
	if _, err := os.Stat(kubelet); err != nil {
		t.Fatalf("kubelet: %v (make k8s-bins builds it)", err)
	}

	t1 := time.Now()
	share, inputs := t.TempDir(), t.TempDir()
	stage(ctx, t, repo, share, inputs, kubelet)
	fmt.Printf("node: inputs staged in %s\n", since(t1))

	accel := pickAccel(ctx, t, img)
	host := hostDescription(accel)
	if err := os.WriteFile(filepath.Join(share, "host.txt"), []byte(host+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("node: booting with %s\n", host)

	rc, failures := boot(ctx, t, img, share, inputs, accel)
	keep(t, repo, share)
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node VM hang guard (%s) expired; see bin/node/console.log and vm.log", timeout)
	case rc == "":
		t.Fatalf("node VM stopped without a result; see bin/node/console.log and vm.log")
	case rc != "0":
		t.Fatalf("node scenarios failed (exit %s): %s", rc, strings.Join(failures, ", "))
	}
	fmt.Printf("node: whole run %s\n", since(t0))
}

// ensureImage runs tools/vm/image.sh, which builds or reuses the image and
// prints its directory.
func ensureImage(t *testing.T, repo string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "tools/vm/image.sh"))
	cmd.Stderr = os.Stdout
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tools/vm/image.sh: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func run(ctx context.Context, t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// stage fills the 9p share with run.sh and the scenario arguments, and
// makes the inputs disk (inputs/inputs.ext4, read-only in the VM at
// /inputs): the guest's configuration, the cri-guard install, the kubelet,
// crictl, the stand-in images and the scenario binary.
func stage(ctx context.Context, t *testing.T, repo, share, inputs, kubelet string) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "inputs")
	for _, d := range []string{filepath.Join(share, "out"), filepath.Join(in, "bin"), filepath.Join(in, "guest")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guest := filepath.Join(repo, "test/node/guest")
	entries, err := os.ReadDir(guest)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(t, filepath.Join(guest, e.Name()), filepath.Join(in, "guest", e.Name()))
	}
	copyFile(t, filepath.Join(guest, "run.sh"), filepath.Join(share, "run.sh"))
	// The README, whose node rollout TestReadmeRollbackAndRollout runs.
	copyFile(t, filepath.Join(repo, "README.md"), filepath.Join(in, "README.md"))

	// cri-guard: the node installs the .deb when given; what `make
	// install` writes is staged always (the README's install path, for
	// the rollout scenario when there is no package).
	if deb := os.Getenv("CRI_GUARD_NODE_DEB"); deb != "" {
		os.MkdirAll(filepath.Join(in, "pkg"), 0o755)
		copyFile(t, deb, filepath.Join(in, "pkg", filepath.Base(deb)))
		// A newer build of the same tree, for TestPackage's upgrade.
		if next := os.Getenv("CRI_GUARD_NODE_DEB_NEXT"); next != "" {
			os.MkdirAll(filepath.Join(in, "pkg-next"), 0o755)
			copyFile(t, next, filepath.Join(in, "pkg-next", filepath.Base(next)))
		}
	}
	// Another cri-guard binary to run instead of the one installed (run.sh).
	if bin := os.Getenv("CRI_GUARD_NODE_GUARD_BIN"); bin != "" {
		copyFile(t, bin, filepath.Join(in, "bin", "cri-guard-replace"))
	}
	run(ctx, t, repo, nil, "make", "-s", "install", "DESTDIR="+filepath.Join(in, "install"), "BIN="+t.TempDir())
	nocgo := []string{"CGO_ENABLED=0"}
	run(ctx, t, repo, append(nocgo, "BIN_DIR="+filepath.Join(in, "bin")), "tools/build.sh", "crictl")
	run(ctx, t, repo, nocgo, "go", "test", "-c", "-o", filepath.Join(in, "vm.test"), "./test/node/vm")
	copyFile(t, kubelet, filepath.Join(in, "bin", "kubelet"))

	pause, err := harness.PauseImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := harness.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(in, "images.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.WriteOCIArchive(f, pause, busybox); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The inputs disk: an ext4 image of in/, 64 MiB larger than its files.
	var size int64
	filepath.Walk(in, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			size += fi.Size() + 4096
		}
		return nil
	})
	run(ctx, t, repo, nil, "mkfs.ext4", "-q", "-F", "-L", "inputs", "-d", in,
		filepath.Join(inputs, "inputs.ext4"), fmt.Sprintf("%dM", size>>20+64))
	os.RemoveAll(in)

	var args []string
	if r := os.Getenv("CRI_GUARD_NODE_RUN"); r != "" {
		args = append(args, "-test.run", r)
	}
	skip, ok := os.LookupEnv("CRI_GUARD_NODE_SKIP")
	if !ok {
		skip = "^TestBench"
	}
	if skip != "" {
		args = append(args, "-test.skip", skip)
	}
	if err := os.WriteFile(filepath.Join(share, "args"), []byte(strings.Join(args, " ")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// kernelArgs boot the image's kernel on the virtio disk with the serial
// console, and turn a panic into a power-off (qemu runs with -no-reboot).
// Modules nothing here uses are not loaded: under TCG udev spends tens of
// seconds on them (kvm_amd's probe alone).
const kernelArgs = "root=/dev/vda rw console=ttyS0 panic=1 loglevel=4 systemd.show_status=false " +
	"modprobe.blacklist=kvm,kvm_amd,kvm_intel,pcspkr,drm,bochs,floppy"

func qemuArgs(img, accel string) []string {
	a := []string{"-name", "cri-guard-node", "-nodefaults", "-no-user-config",
		"-m", "4096", "-smp", "2", "-nic", "none", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(img, "vmlinuz"), "-initrd", filepath.Join(img, "initrd.img"),
		"-device", "virtio-rng-pci"}
	if accel == "kvm" {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		a = append(a, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	return a
}

// pickAccel returns "kvm" when the image's kernel boots under KVM here, else
// "tcg". On some nested hypervisors /dev/kvm exists but the kernel stops
// with an emulation failure in its decompressor or hangs early, so the
// probe boots the kernel without a root disk and waits for it to reach the
// point where it looks for one.
func pickAccel(ctx context.Context, t *testing.T, img string) string {
	t.Helper()
	switch a := os.Getenv("CRI_GUARD_VM_ACCEL"); a {
	case "kvm", "tcg":
		fmt.Printf("node: accelerator %s (CRI_GUARD_VM_ACCEL)\n", a)
		return a
	case "":
	default:
		t.Fatalf("CRI_GUARD_VM_ACCEL=%q: want kvm or tcg", a)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		fmt.Printf("node: no usable /dev/kvm (%v): TCG\n", err)
		return "tcg"
	}
	f.Close()
	t0 := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	args := append(qemuArgs(img, "kvm"), "-serial", "stdio", "-m", "512",
		"-append", "console=ttyS0 panic=-1 rdinit=/cri-guard-no-such-init root=/dev/cri-guard-none")
	cmd := exec.CommandContext(pctx, "qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stdout = out
	cmd.Stderr = out
	reached := regexp.MustCompile(`VFS: Unable to mount root|Kernel panic|Run /cri-guard-no-such-init`)
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		fmt.Printf("node: KVM probe: %v: TCG\n", err)
		return "tcg"
	}
	go func() { done <- cmd.Wait() }()
	exited := false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			exited = true
			break wait
		case <-pctx.Done():
			break wait
		case <-tick.C:
			// A KVM emulation failure stops the guest but not qemu.
			if reached.Match(out.Bytes()) || bytes.Contains(out.Bytes(), []byte("KVM internal error")) {
				break wait
			}
		}
	}
	if !exited {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if reached.Match(out.Bytes()) {
		fmt.Printf("node: KVM probe booted the kernel in %s: KVM\n", since(t0))
		return "kvm"
	}
	why := "no kernel output before the deadline"
	if exited {
		why = "qemu exited: " + lastLine(string(out.Bytes()))
	}
	if m := regexp.MustCompile(`KVM internal error[^\n]*`).Find(out.Bytes()); m != nil {
		why = string(m)
	}
	fmt.Printf("node: KVM probe failed in %s (%s): TCG\n", since(t0), why)
	return "tcg"
}

func hostDescription(accel string) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.+)$`).FindSubmatch(b); m != nil {
			model = string(m[1])
		}
	}
	return fmt.Sprintf("%s, 2 vCPUs, 4 GiB on a %d-CPU host (%s)", strings.ToUpper(accel), runtime.NumCPU(), model)
}

// boot runs the VM until it powers off (or ctx ends), streaming the
// scenario output, and returns the scenario binary's exit code ("" if it
// never wrote one) and the failed tests.
func boot(ctx context.Context, t *testing.T, img, share, inputs, accel string) (string, []string) {
	t.Helper()
	out := filepath.Join(share, "out")
	args := append(qemuArgs(img, accel),
		"-append", kernelArgs,
		"-drive", "file="+filepath.Join(img, "rootfs.ext4")+",format=raw,if=virtio,snapshot=on",
		"-drive", "file="+filepath.Join(inputs, "inputs.ext4")+",format=raw,if=virtio,readonly=on",
		"-virtfs", "local,path="+share+",mount_tag=share,security_model=none,multidevs=remap",
		"-serial", "file:"+filepath.Join(out, "console.log"))
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var qerr bytes.Buffer
	cmd.Stdout = &qerr
	cmd.Stderr = &qerr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Never leave the VM behind, whatever happens to this test.
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})

	var failures []string
	failRE := regexp.MustCompile(`^\s*--- FAIL: (\S+)`)
	var off int64
	var partial string
	drain := func() {
		f, err := os.Open(filepath.Join(out, "vm.log"))
		if err != nil {
			return
		}
		defer f.Close()
		f.Seek(off, io.SeekStart)
		b, _ := io.ReadAll(f)
		off += int64(len(b))
		text := partial + string(b)
		lines := strings.Split(text, "\n")
		partial = lines[len(lines)-1]
		lines = lines[:len(lines)-1]
		for _, l := range lines {
			fmt.Println(l)
			if m := failRE.FindStringSubmatch(l); m != nil {
				failures = append(failures, m[1])
			}
		}
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case <-tick.C:
			drain()
		}
	}
	drain()
	if partial != "" {
		fmt.Println(partial)
	}
	fmt.Printf("node: VM (%s) ran %s, qemu: %v\n", strings.ToUpper(accel), since(t0), werr)
	if s := strings.TrimSpace(qerr.String()); s != "" {
		fmt.Printf("node: qemu said: %s\n", s)
	}
	rc, _ := os.ReadFile(filepath.Join(out, "rc"))
	if len(rc) == 0 {
		if b, err := os.ReadFile(filepath.Join(out, "console.log")); err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			fmt.Printf("node: last console lines:\n%s\n", strings.Join(lines, "\n"))
		}
	}
	return strings.TrimSpace(string(rc)), failures
}

// keep copies what the run left in the share's out directory to bin/node.
func keep(t *testing.T, repo, share string) {
	dst := filepath.Join(repo, "bin", "node")
	os.RemoveAll(dst)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Log(err)
		return
	}
	filepath.Walk(filepath.Join(share, "out"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(filepath.Join(share, "out"), p)
		os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755)
		copyFile(t, p, filepath.Join(dst, rel))
		return nil
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// lockedWriter lets the probe read qemu's output while qemu writes it.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.w.Bytes()...)
}
