package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Host paths that containerd 1.6, runc or libcni may write outside Dir.
const (
	netnsDir        = "/run/netns"                          // CNI netns when not under the state dir
	shimSocketDir   = "/run/containerd/s"                   // containerd 1.6 shim sockets (hard-coded)
	runContainerd   = "/run/containerd"                     //
	cniCacheDir     = "/var/lib/cni"                        // libcni result cache (not configurable in 1.6)
	cniResultsDir   = "/var/lib/cni/results"                //
	ipForwardSysctl = "/proc/sys/net/ipv4/ip_forward"       // set by the bridge plugin with isGateway
	taskStateSubdir = "state/io.containerd.runtime.v2.task" // bundles, one per task ID
)

const (
	criCleanupTimeout = 30 * time.Second
	criCallTimeout    = 10 * time.Second
	daemonStopTimeout = 10 * time.Second
	killWaitTimeout   = 5 * time.Second
	rmdirTimeout      = 5 * time.Second
)

// hostState records what existed before Start, so Close removes only what
// this runtime created.
type hostState struct {
	netns         map[string]bool
	runContainerd bool
	shimSocketDir bool
	cniCacheDir   bool
	cniResultsDir bool
	ipForward     string
	k8sCgroup     map[string]bool // cgroup hierarchies where /k8s.io existed
}

func captureHostState() hostState {
	s := hostState{netns: map[string]bool{}, k8sCgroup: map[string]bool{}}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			s.netns[e.Name()] = true
		}
	}
	s.runContainerd = exists(runContainerd)
	s.shimSocketDir = exists(shimSocketDir)
	s.cniCacheDir = exists(cniCacheDir)
	s.cniResultsDir = exists(cniResultsDir)
	if b, err := os.ReadFile(ipForwardSysctl); err == nil {
		s.ipForward = strings.TrimSpace(string(b))
	}
	for _, h := range cgroupHierarchies() {
		if exists(filepath.Join(h, K8sNamespace)) {
			s.k8sCgroup[h] = true
		}
	}
	return s
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// Close stops containerd and removes everything the runtime created: pod
// sandboxes, containerd, its shims and their container processes, mounts
// under Dir, network namespaces, the bridge link, cgroups, the libcni cache
// entries and Dir itself. It is best effort, collects all errors, and is
// safe to call more than once (later calls return the first result).
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Runtime) close() error {
	var errs []error
	add := func(err error, what string) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	daemonUp := r.cmd != nil && !isClosed(r.exited)
	if daemonUp && r.CRI != nil {
		add(r.removeAllPods(), "remove pods")
	}
	r.collectTaskIDs()
	add(r.stopDaemon(), "stop containerd")
	add(r.CRI.Close(), "close CRI connection")
	add(r.killLeftovers(), "kill leftover processes")
	add(unmountUnder(r.Dir), "unmount")
	add(r.removeNetns(), "remove network namespaces")
	add(r.removeBridge(), "remove bridge")
	add(r.removeCgroups(), "remove cgroups")
	if r.subnetLock != nil {
		r.subnetLock.Close()
	}
	add(r.removeHostFiles(), "remove host files")
	if r.Registry != nil {
		add(r.Registry.Close(), "close registry")
	}
	add(removeAllRetry(r.Dir), "remove "+r.Dir)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close runtime %s: %w", r.Dir, err)
	}
	fmt.Fprintf(r.log, "harness: runtime %s closed cleanly\n", r.Dir)
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (r *Runtime) noteTaskID(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.taskIDs[id] = true
}

func (r *Runtime) taskIDList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.taskIDs))
	for id := range r.taskIDs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// collectTaskIDs records the IDs of every task that has a bundle.
func (r *Runtime) collectTaskIDs() {
	entries, _ := os.ReadDir(filepath.Join(r.Dir, taskStateSubdir, K8sNamespace))
	for _, e := range entries {
		r.noteTaskID(e.Name())
	}
}

// removeAllPods stops and removes every pod sandbox through CRI.
func (r *Runtime) removeAllPods() error {
	ctx, cancel := context.WithTimeout(context.Background(), criCleanupTimeout)
	defer cancel()
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, criCallTimeout) }

	cctx, ccancel := call()
	ctrs, err := r.CRI.Runtime.ListContainers(cctx, &runtimeapi.ListContainersRequest{})
	ccancel()
	if err == nil {
		for _, c := range ctrs.Containers {
			r.noteTaskID(c.Id)
		}
	}
	cctx, ccancel = call()
	pods, err := r.CRI.Runtime.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{})
	ccancel()
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var errs []error
	for _, p := range pods.Items {
		r.noteTaskID(p.Id)
		cctx, ccancel = call()
		_, err := r.CRI.Runtime.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		ccancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("stop pod %s: %w", p.Id, err))
		}
		cctx, ccancel = call()
		_, err = r.CRI.Runtime.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
		ccancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", p.Id, err))
		}
	}
	return errors.Join(errs...)
}

// stopDaemon sends SIGTERM to containerd, then SIGKILL after a deadline.
func (r *Runtime) stopDaemon() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	if isClosed(r.exited) {
		return nil
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sigterm: %w", err)
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(daemonStopTimeout):
	}
	fmt.Fprintf(r.log, "harness: containerd did not stop in %s, killing it\n", daemonStopTimeout)
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sigkill: %w", err)
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(killWaitTimeout):
		return errors.New("containerd did not exit after SIGKILL")
	}
}

// ownedProcesses returns the live processes that belong to this runtime:
// shims serving our containerd socket, all their descendants, processes
// in our cgroups, and processes whose command line or working directory
// is under Dir. It also returns the shims' task IDs.
func (r *Runtime) ownedProcesses() (pids []int, shimIDs []string) {
	procs := listProcs()
	owned := map[int]bool{}
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var addTree func(pid int)
	addTree = func(pid int) {
		if owned[pid] {
			return
		}
		owned[pid] = true
		for _, c := range children[pid] {
			addTree(c)
		}
	}
	inCgroup := map[int]bool{}
	for _, dir := range r.ownedCgroupDirs() {
		for _, pid := range cgroupPids(dir) {
			inCgroup[pid] = true
		}
	}
	prefix := r.Dir + "/"
	self := ancestors() // never kill the caller or its parents
	for _, p := range procs {
		if self[p.pid] {
			continue
		}
		if id, ok := shimFor(p.cmdline, r.Socket); ok {
			shimIDs = append(shimIDs, id)
			addTree(p.pid)
			continue
		}
		mine := inCgroup[p.pid] || strings.HasPrefix(p.cwd+"/", prefix)
		for _, a := range p.cmdline {
			if strings.Contains(a, prefix) {
				mine = true
			}
		}
		if r.cmd != nil && r.cmd.Process != nil && p.pid == r.cmd.Process.Pid && !isClosed(r.exited) {
			mine = true
		}
		if mine {
			addTree(p.pid)
		}
	}
	for pid := range owned {
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, shimIDs
}

// shimFor reports whether cmdline is a containerd shim connected to our
// containerd socket, and its task ID.
func shimFor(cmdline []string, socket string) (id string, ok bool) {
	if len(cmdline) == 0 || !strings.HasPrefix(filepath.Base(cmdline[0]), "containerd-shim") {
		return "", false
	}
	for i := 0; i+1 < len(cmdline); i++ {
		switch cmdline[i] {
		case "-address", "--address":
			ok = ok || cmdline[i+1] == socket || cmdline[i+1] == "unix://"+socket
		case "-id", "--id":
			id = cmdline[i+1]
		}
	}
	return id, ok
}

// killLeftovers SIGKILLs every process owned by the runtime and waits for
// them to be gone (or zombies, which PID 1 may never reap), then removes
// the shims' sockets from /run/containerd/s.
func (r *Runtime) killLeftovers() error {
	pids, shimIDs := r.ownedProcesses()
	for _, id := range shimIDs {
		r.noteTaskID(id)
	}
	if len(pids) > 0 {
		fmt.Fprintf(r.log, "harness: killing leftover processes %v\n", pids)
	}
	var errs []error
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	deadline := time.Now().Add(killWaitTimeout)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("process %d survived SIGKILL", pid))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, id := range r.taskIDList() {
		sock := shimSocketPath(r.Socket, K8sNamespace, id)
		if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// shimSocketPath is where containerd 1.6 puts a shim's socket: the path is
// derived from the containerd address, the namespace and the task ID, and
// lives in /run/containerd/s whatever the configured state dir.
func shimSocketPath(address, ns, id string) string {
	d := sha256.Sum256([]byte(filepath.Join(address, ns, id)))
	return filepath.Join(shimSocketDir, fmt.Sprintf("%x", d))
}

// removeNetns removes network namespaces in /run/netns that did not exist
// before Start and that no process uses. (With netns_mounts_under_state_dir
// containerd keeps them under Dir, which unmountUnder handles; this covers
// containerd versions that ignore the setting.)
func (r *Runtime) removeNetns() error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		if r.before.netns[e.Name()] || !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		p := filepath.Join(netnsDir, e.Name())
		if users := netnsUsers(p); len(users) > 0 {
			errs = append(errs, fmt.Errorf("%s still used by processes %v", p, users))
			continue
		}
		if err := unmount(p); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// netnsUsers returns the processes whose network namespace is the one
// bind-mounted at p.
func netnsUsers(p string) []int {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	var pids []int
	for _, proc := range listProcs() {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", proc.pid)); err == nil && link == want && alive(proc.pid) {
			pids = append(pids, proc.pid)
		}
	}
	return pids
}

func (r *Runtime) removeBridge() error {
	if r.Bridge == "" || !exists(filepath.Join("/sys/class/net", r.Bridge)) {
		return nil
	}
	out, err := exec.Command("ip", "link", "delete", r.Bridge).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip link delete %s: %w: %s", r.Bridge, err, bytes.TrimSpace(out))
	}
	return nil
}

// ownedCgroupDirs returns, for every cgroup hierarchy, CgroupRoot and the
// /k8s.io/<id> cgroups that containerd gives pods without a cgroup parent.
func (r *Runtime) ownedCgroupDirs() []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		if r.CgroupRoot != "" {
			dirs = append(dirs, filepath.Join(h, r.CgroupRoot))
		}
		for _, id := range r.taskIDList() {
			dirs = append(dirs, filepath.Join(h, K8sNamespace, id))
		}
	}
	return dirs
}

func (r *Runtime) removeCgroups() error {
	var errs []error
	for _, d := range r.ownedCgroupDirs() {
		if err := removeCgroupTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range cgroupHierarchies() {
		k := filepath.Join(h, K8sNamespace)
		if !r.before.k8sCgroup[h] && exists(k) {
			// Created by our containerd; remove it if nothing else uses it.
			unix.Rmdir(k) //nolint:errcheck
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree kills any process left in the cgroup tree at dir and
// removes the cgroups, deepest first.
func removeCgroupTree(dir string) error {
	if !exists(dir) {
		return nil
	}
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
	})
	var errs []error
	for _, d := range dirs {
		deadline := time.Now().Add(rmdirTimeout)
		for {
			for _, pid := range cgroupPids(d) {
				unix.Kill(pid, unix.SIGKILL) //nolint:errcheck
			}
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w (procs %v)", d, err, cgroupPids(d)))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

func cgroupPids(dir string) []int {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeHostFiles removes what containerd 1.6 and libcni leave outside
// Dir: shim socket directories, libcni cache entries for our network, and
// the ip_forward sysctl the bridge plugin turned on.
func (r *Runtime) removeHostFiles() error {
	var errs []error
	for _, m := range r.cniCacheEntries() {
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	// Remove directories that did not exist before, if empty.
	for _, d := range []struct {
		path    string
		existed bool
	}{
		{cniResultsDir, r.before.cniResultsDir},
		{cniCacheDir, r.before.cniCacheDir},
		{shimSocketDir, r.before.shimSocketDir},
		{runContainerd, r.before.runContainerd},
	} {
		if !d.existed {
			os.Remove(d.path) //nolint:errcheck // fails if not empty: someone else uses it
		}
	}
	// Restore ip_forward unless another harness runtime still runs pods
	// (it holds a subnet claim), which may need forwarding.
	if r.before.ipForward != "" && r.subnetLock != nil && !otherSubnetClaims() {
		if b, err := os.ReadFile(ipForwardSysctl); err == nil && strings.TrimSpace(string(b)) != r.before.ipForward {
			if err := os.WriteFile(ipForwardSysctl, []byte(r.before.ipForward), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore ip_forward: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// otherSubnetClaims reports whether any live harness holds a subnet claim
// (see claimSubnet). Call it after releasing our own.
func otherSubnetClaims() bool {
	data, err := os.ReadFile("/proc/net/unix")
	return err == nil && bytes.Contains(data, []byte("@"+subnetClaimPrefix))
}

// cniCacheEntries returns libcni's cached results for our pods: files
// named <network>-<sandbox id>-<ifname>, for our bridge network and for
// the loopback network ("cni-loopback") containerd sets up in every pod.
func (r *Runtime) cniCacheEntries() []string {
	var out []string
	if r.NetworkName != "" {
		m, _ := filepath.Glob(filepath.Join(cniResultsDir, r.NetworkName+"-*"))
		out = append(out, m...)
	}
	for _, id := range r.taskIDList() {
		m, _ := filepath.Glob(filepath.Join(cniResultsDir, "cni-loopback-"+id+"-*"))
		out = append(out, m...)
	}
	return out
}

// removeAllRetry removes dir, retrying briefly: a lazily unmounted
// filesystem may keep a directory busy for a moment.
func removeAllRetry(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// VerifyClean reports anything Close should have removed but did not:
// processes, mounts under Dir, Dir itself, cgroups, network namespaces
// created since Start, the bridge link and shim sockets. Call it after
// Close.
func (r *Runtime) VerifyClean() error {
	var errs []error
	if pids, _ := r.ownedProcesses(); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("processes left: %v", pids))
	}
	for _, m := range mountsUnder(r.Dir) {
		errs = append(errs, fmt.Errorf("mount left: %s", m))
	}
	if exists(r.Dir) {
		errs = append(errs, fmt.Errorf("directory left: %s", r.Dir))
	}
	for _, d := range r.ownedCgroupDirs() {
		if exists(d) {
			errs = append(errs, fmt.Errorf("cgroup left: %s", d))
		}
	}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if !r.before.netns[e.Name()] {
				errs = append(errs, fmt.Errorf("network namespace left: %s", filepath.Join(netnsDir, e.Name())))
			}
		}
	}
	if r.Bridge != "" && exists(filepath.Join("/sys/class/net", r.Bridge)) {
		errs = append(errs, fmt.Errorf("bridge left: %s", r.Bridge))
	}
	for _, id := range r.taskIDList() {
		if s := shimSocketPath(r.Socket, K8sNamespace, id); exists(s) {
			errs = append(errs, fmt.Errorf("shim socket left: %s", s))
		}
	}
	if m := r.cniCacheEntries(); len(m) > 0 {
		errs = append(errs, fmt.Errorf("libcni cache left: %v", m))
	}
	return errors.Join(errs...)
}
