package main

// The control socket: how a running daemon hands its sockets to a new
// `cri-guard serve` (a restart or an upgrade that loses no call) and how
// `cri-guard reload` learns whether a reload was applied.
//
// It is a SOCK_SEQPACKET unix socket beside the CRI socket (the CRI path
// plus ".ctl", mode 0600), so each message arrives whole, with the file
// descriptors it carries (SCM_RIGHTS). Messages are JSON.
//
// Handover, new process N and running process O:
//
//	N → O  {"op":"handover","pid":N}
//	O → N  {"ok":true,...} + fds: the CRI listener, the control listener and
//	       the metrics listener, if any. O keeps accepting on them.
//	N      serves on the same sockets, so both processes accept for a moment
//	N → O  {"op":"ready"}    (after N told systemd MAINPID=N, READY=1)
//	O → N  {"ok":true}; O stops accepting, ends its event streams, waits for
//	       its calls in flight and exits.
//
// If N goes away before "ready", O has lost nothing and goes on serving.
// No connect fails and no call is refused at any moment: the listening
// socket is the same kernel object throughout, and its backlog is accepted
// by whichever process calls accept.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

type ctlRequest struct {
	Op  string `json:"op"` // "handover", "ready", "reload" or "attempts"
	PID int    `json:"pid,omitempty"`
	Pod string `json:"pod,omitempty"` // for attempts: a uid or namespace/name
}

type ctlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// For handover: which descriptors come with the message.
	Activated bool   `json:"activated,omitempty"` // the CRI socket came from systemd
	Metrics   string `json:"metrics,omitempty"`   // metricsListen of the metrics descriptor
	// For reload.
	Digest   string `json:"digest,omitempty"`
	Changed  bool   `json:"changed,omitempty"`
	Upgraded int    `json:"upgraded,omitempty"` // pid of the new process after an upgrade
	PID      int    `json:"pid,omitempty"`
	// For attempts: the pod's RunPodSandbox calls that created no sandbox,
	// newest first, and what the daemon keeps.
	Attempts []attempts.Attempt `json:"attempts,omitempty"`
	Kept     string             `json:"kept,omitempty"`
}

// controlEnv names the control socket for a successor that a daemon
// starts itself (upgrade): with socket activation its path follows the
// socket systemd passed, which the successor does not get from systemd.
const controlEnv = "CRI_GUARD_CONTROL"

// controlPath is the control socket of the daemon whose CRI socket is
// cfg.Listen.
func controlPath(cfg *config.Config) (string, error) {
	p, err := proxy.SocketPath(cfg.Listen)
	if err != nil {
		return "", err
	}
	return p + ".ctl", nil
}

func send(c *net.UnixConn, v any, files ...*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			// Not f.Fd(): on a duplicate made by net.Listener.File it
			// puts the descriptor in blocking mode, and with it the
			// listener this process still accepts on (they share the
			// open file description); closing that listener would then
			// wait for the next connection.
			rc, err := f.SyscallConn()
			if err != nil {
				return err
			}
			if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
				return err
			}
		}
		oob = syscall.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// receive reads one message into v and returns the descriptors it carried.
func receive(c *net.UnixConn, v any) ([]*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(8*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("control message: %w", err)
		}
		for _, m := range msgs {
			fds, err := syscall.ParseUnixRights(&m)
			if err != nil {
				return nil, fmt.Errorf("control message: %w", err)
			}
			for _, fd := range fds {
				syscall.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), "handed-over"))
			}
		}
	}
	if n == 0 {
		closeAll(files)
		return nil, errors.New("control connection closed")
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeAll(files)
		return nil, fmt.Errorf("control message: %w", err)
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// listenControl creates the control socket at path, replacing a stale one.
func listenControl(path string) (*net.UnixListener, error) {
	if err := proxy.RemoveStale("unixpacket", path); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The file stays when this process closes it: a successor that was
	// handed the socket, or that bound a new one there, keeps using it.
	l.SetUnlinkOnClose(false)
	return l, nil
}

// dialControl connects to a running daemon's control socket; it returns
// nil, nil when nobody listens there.
func dialControl(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return c, nil
}

// inherited is what a new process was handed by the one it replaces.
type inherited struct {
	conn      *net.UnixConn // to the predecessor, for "ready"
	from      int           // the predecessor's pid, from the peer credentials
	cri       net.Listener
	control   *net.UnixListener
	metrics   net.Listener // nil if none was handed
	metricsAt string       // the predecessor's metricsListen
	activated bool
}

// takeOver asks the daemon at the control socket path, if one runs, for its
// sockets. It returns nil, nil when no daemon runs there.
func takeOver(path string) (*inherited, error) {
	c, err := dialControl(path)
	if c == nil || err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fail := func(err error) (*inherited, error) {
		c.Close()
		return nil, fmt.Errorf("handover from the running daemon: %w", err)
	}
	if err := send(c, ctlRequest{Op: "handover", PID: os.Getpid()}); err != nil {
		return fail(err)
	}
	var rep ctlReply
	files, err := receive(c, &rep)
	if err != nil {
		return fail(err)
	}
	defer closeAll(files) // the listeners hold their own duplicates
	if !rep.OK {
		return fail(errors.New(rep.Error))
	}
	want := 2
	if rep.Metrics != "" {
		want = 3
	}
	if len(files) != want {
		return fail(fmt.Errorf("got %d descriptors, want %d", len(files), want))
	}
	h := &inherited{conn: c, activated: rep.Activated, metricsAt: rep.Metrics, from: peerPID(c)}
	ls := make([]net.Listener, len(files))
	for i, f := range files {
		l, err := net.FileListener(f)
		if err != nil {
			for _, l := range ls[:i] {
				l.Close()
			}
			return fail(err)
		}
		ls[i] = l
	}
	h.cri = ls[0]
	ctl, ok := ls[1].(*net.UnixListener)
	if !ok {
		for _, l := range ls {
			l.Close()
		}
		return fail(errors.New("the control descriptor is not a unix socket"))
	}
	h.control = ctl
	if want == 3 {
		h.metrics = ls[2]
	}
	for _, l := range ls {
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	}
	return h, nil
}

// ready tells the predecessor that this process serves: it stops accepting
// and drains. Its answer is waited for, so that the predecessor has stopped
// accepting when ready returns (unless it went away: then too).
func (h *inherited) ready() error {
	defer h.conn.Close()
	if err := send(h.conn, ctlRequest{Op: "ready", PID: os.Getpid()}); err != nil {
		return err
	}
	var rep ctlReply
	files, err := receive(h.conn, &rep)
	closeAll(files)
	if err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	return nil
}

func peerPID(c *net.UnixConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int
	rc.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// listenerFile duplicates a listener's descriptor for sending.
func listenerFile(l net.Listener) (*os.File, error) {
	type filer interface{ File() (*os.File, error) }
	f, ok := l.(filer)
	if !ok {
		return nil, fmt.Errorf("listener %T cannot be handed over", l)
	}
	return f.File()
}

// handoverFiles duplicates the descriptors that a successor takes over.
func handoverFiles(cri net.Listener, ctl *net.UnixListener, metrics net.Listener, metricsAt string, activated bool) ([]*os.File, ctlReply, error) {
	rep := ctlReply{OK: true, Activated: activated, PID: os.Getpid()}
	ls := []net.Listener{cri, ctl}
	if metrics != nil {
		ls = append(ls, metrics)
		rep.Metrics = metricsAt
	}
	var files []*os.File
	for _, l := range ls {
		f, err := listenerFile(l)
		if err != nil {
			closeAll(files)
			return nil, ctlReply{}, err
		}
		files = append(files, f)
	}
	return files, rep, nil
}

// controlServer answers on the control socket of a serving daemon.
type controlServer struct {
	l       *net.UnixListener // nil: none could be made
	path    string
	log     *slog.Logger
	exe     executable
	files   func() ([]*os.File, ctlReply, error)
	reloads chan chan ctlReply // to the main loop: an in-place reload
	// attempts answers "attempts": the RunPodSandbox calls that created
	// no sandbox. nil: none are kept.
	attempts *attempts.Store
	handed   chan int // to the main loop: the successor's pid

	mu        sync.Mutex
	handing   bool             // a handover is under way
	successor map[int]chan int // upgrade: spawned pid -> told when it took over
	closed    bool
	wg        sync.WaitGroup
}

func newControlServer(l *net.UnixListener, path string, log *slog.Logger, exe executable, files func() ([]*os.File, ctlReply, error)) *controlServer {
	return &controlServer{l: l, path: path, log: log, exe: exe, files: files,
		reloads: make(chan chan ctlReply), handed: make(chan int, 1), successor: map[int]chan int{}}
}

func (cs *controlServer) serve() {
	if cs.l == nil {
		return
	}
	for {
		c, err := cs.l.AcceptUnix()
		if err != nil {
			return
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			defer c.Close()
			cs.handle(c)
		}()
	}
}

// close stops accepting on the control socket; the file stays.
func (cs *controlServer) close() {
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()
	if cs.l != nil {
		cs.l.Close()
	}
}

// wait waits up to d for the answers under way.
func (cs *controlServer) wait(d time.Duration) {
	done := make(chan struct{})
	go func() { cs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (cs *controlServer) handle(c *net.UnixConn) {
	var req ctlRequest
	files, err := receive(c, &req)
	closeAll(files)
	if err != nil {
		return
	}
	switch req.Op {
	case "handover":
		cs.handover(c, peerPID(c))
	case "reload":
		send(c, cs.reload())
	case "attempts":
		send(c, cs.attemptsOf(req.Pod))
	default:
		send(c, ctlReply{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

// maxReply bounds a reply to what receive reads in one message.
const maxReply = 60 << 10

// attemptsOf answers "attempts" for pod: what the store holds, the oldest
// left out if the reply would not fit in one message.
func (cs *controlServer) attemptsOf(pod string) ctlReply {
	max, ttl := cs.attempts.Bounds()
	rep := ctlReply{OK: true, PID: os.Getpid(), Attempts: cs.attempts.Find(pod),
		Kept: fmt.Sprintf("the last %d pods, each for %s after its latest call, until the daemon restarts", max, ttl)}
	if cs.attempts == nil {
		rep.Kept = "nothing: this daemon keeps no attempts"
	}
	for len(rep.Attempts) > 0 {
		if b, err := json.Marshal(rep); err == nil && len(b) <= maxReply {
			break
		}
		rep.Attempts = rep.Attempts[:len(rep.Attempts)-1]
	}
	return rep
}

// askAttempts asks the daemon whose control socket is path for the
// RunPodSandbox calls of pod that created no sandbox, waiting until
// deadline.
func askAttempts(path, pod string, deadline time.Time) (ctlReply, error) {
	c, err := dialControl(path)
	if err != nil {
		return ctlReply{}, err
	}
	if c == nil {
		return ctlReply{}, fmt.Errorf("no daemon answers on %s", path)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if err := send(c, ctlRequest{Op: "attempts", Pod: pod}); err != nil {
		return ctlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var rep ctlReply
	files, err := receive(c, &rep)
	closeAll(files)
	if err != nil {
		return ctlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	if !rep.OK {
		return ctlReply{}, fmt.Errorf("control socket %s: %s", path, rep.Error)
	}
	return rep, nil
}

// handover gives the sockets to the process pid and waits for it to say it
// serves them.
func (cs *controlServer) handover(c *net.UnixConn, pid int) {
	cs.mu.Lock()
	busy, closed := cs.handing, cs.closed
	if !busy && !closed {
		cs.handing = true
	}
	cs.mu.Unlock()
	switch {
	case closed:
		send(c, ctlReply{Error: "this daemon is stopping"})
		return
	case busy:
		send(c, ctlReply{Error: "another handover is under way"})
		return
	}
	ok := false
	defer func() {
		if !ok {
			cs.mu.Lock()
			cs.handing = false
			cs.mu.Unlock()
		}
	}()
	files, rep, err := cs.files()
	if err != nil {
		send(c, ctlReply{Error: err.Error()})
		return
	}
	err = send(c, rep, files...)
	closeAll(files)
	if err != nil {
		return
	}
	cs.log.Info("handing the sockets over; serving until the new process says it serves them", "pid", pid)
	var ready ctlRequest
	got, err := receive(c, &ready)
	closeAll(got)
	if err != nil || ready.Op != "ready" {
		cs.log.Warn("the new process went away before serving; this one goes on serving", "pid", pid, "error", err)
		return
	}
	ok = true
	cs.mu.Lock()
	if w := cs.successor[pid]; w != nil {
		w <- pid
	}
	cs.mu.Unlock()
	cs.handed <- pid
	send(c, ctlReply{OK: true, PID: os.Getpid()})
}

// reload applies the configuration file again; if the binary was replaced
// since this process started, it starts the new binary, which takes over.
func (cs *controlServer) reload() ctlReply {
	if cs.exe.replaced() {
		return cs.upgrade()
	}
	cs.mu.Lock()
	closed := cs.closed
	cs.mu.Unlock()
	if closed {
		return ctlReply{Error: "this daemon is stopping"}
	}
	rc := make(chan ctlReply, 1)
	select {
	case cs.reloads <- rc:
		return <-rc
	case <-time.After(time.Minute):
		return ctlReply{Error: "the daemon did not take the reload request"}
	}
}

// upgrade starts the binary now at this process's path, with the same
// arguments; it takes the sockets over (handover) and this process drains.
func (cs *controlServer) upgrade() ctlReply {
	cmd := exec.Command(cs.exe.path, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), controlEnv+"="+cs.path)
	took := make(chan int, 1)
	exited := make(chan error, 1)
	cs.mu.Lock()
	if err := cmd.Start(); err != nil {
		cs.mu.Unlock()
		return ctlReply{Error: fmt.Sprintf("upgrade: start %s: %v", cs.exe.path, err)}
	}
	cs.successor[cmd.Process.Pid] = took
	cs.mu.Unlock()
	cs.log.Info("the binary was replaced: starting it to take over", "path", cs.exe.path, "pid", cmd.Process.Pid)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cs.mu.Lock()
		delete(cs.successor, cmd.Process.Pid)
		cs.mu.Unlock()
	}()
	select {
	case pid := <-took:
		return ctlReply{OK: true, Changed: true, Upgraded: pid, PID: os.Getpid()}
	case err := <-exited:
		cs.log.Error("upgrade refused: the new binary exited before serving; this one goes on serving", "error", err)
		return ctlReply{Error: fmt.Sprintf("upgrade refused: the new binary exited before serving (%v); its error is in the log; the running daemon goes on serving", err)}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return ctlReply{Error: "upgrade refused: the new binary did not serve within 2m; the running daemon goes on serving"}
	}
}

// executable is this process's binary: its path, and the file it ran from.
type executable struct {
	path string
	fi   os.FileInfo
}

func currentExecutable() executable {
	p, err := os.Executable()
	if err != nil {
		return executable{}
	}
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return executable{}
	}
	return executable{path: p, fi: fi}
}

// replaced tells whether another file is now at the path this process was
// started from, as after a package upgrade.
func (e executable) replaced() bool {
	if e.fi == nil {
		return false
	}
	fi, err := os.Stat(e.path)
	return err == nil && !os.SameFile(fi, e.fi)
}
