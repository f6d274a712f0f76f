package calibrate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// ErrNotRuntime means the endpoint is not a container runtime: cri-guard's
// own socket, or something that does not name a runtime.
var ErrNotRuntime = errors.New("not a container runtime")

// Dial connects to a CRI endpoint ("unix:///path" or a path).
func Dial(endpoint string) (*grpc.ClientConn, error) {
	path, err := proxy.SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", endpoint, err)
	}
	return conn, nil
}

// Peer describes the process serving a unix socket.
type Peer struct {
	PID     int
	Exe     string
	Cmdline []string
}

// CheckRuntime asks the endpoint for its CRI Version and refuses (with
// ErrNotRuntime) one that is cri-guard rather than a runtime. cri-guard
// relays Version to its runtime, so the answer alone cannot tell; three
// signs are checked:
//
//   - the RuntimeName is empty or names cri-guard;
//   - the process serving the socket (its peer credentials, SO_PEERCRED)
//     runs a cri-guard binary: the same executable as this command, or one
//     whose name starts with "cri-guard";
//   - the socket file is named like cri-guard's (cri-guard*.sock).
//
// A socket that systemd holds for a socket-activated cri-guard is
// identified by its name only.
func CheckRuntime(ctx context.Context, endpoint string, rs runtimeapi.RuntimeServiceClient) (*runtimeapi.VersionResponse, error) {
	path, err := proxy.SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := rs.Version(vctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s does not answer CRI Version: %w", endpoint, err)
	}
	peer, _ := socketPeer(path) // best effort: a peer in another pid namespace is unknown
	self, _ := os.Executable()
	if why := notRuntime(v.GetRuntimeName(), path, peer, self); why != "" {
		return v, fmt.Errorf("%s: %w: %s", endpoint, ErrNotRuntime, why)
	}
	return v, nil
}

// notRuntime says why an endpoint is not a runtime, or "".
func notRuntime(runtimeName, socket string, peer Peer, self string) string {
	name := strings.ToLower(runtimeName)
	switch {
	case name == "":
		return "it answers CRI Version without a runtime name"
	case strings.Contains(name, "cri-guard"):
		return fmt.Sprintf("it calls itself %q", runtimeName)
	}
	if peer.PID > 0 {
		exe := strings.TrimSuffix(peer.Exe, " (deleted)")
		isGuard := exe != "" && (strings.HasPrefix(filepath.Base(exe), "cri-guard") || sameFile(exe, self))
		if !isGuard && len(peer.Cmdline) > 0 {
			isGuard = strings.HasPrefix(filepath.Base(peer.Cmdline[0]), "cri-guard")
		}
		if isGuard {
			why := fmt.Sprintf("the socket is served by cri-guard (pid %d, %s), which relays to a runtime", peer.PID, exe)
			if up := flagValue(peer.Cmdline, "upstream"); up != "" {
				why += "; calibrate against its upstream, " + up
			}
			return why
		}
	}
	if base := filepath.Base(socket); strings.HasPrefix(base, "cri-guard") {
		return fmt.Sprintf("the socket %s is named like cri-guard's", socket)
	}
	return ""
}

// flagValue finds --name value or --name=value in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) && strings.HasPrefix(args[i], "-") {
			return args[i+1]
		}
	}
	return ""
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// socketPeer connects to a unix socket and reads who serves it.
func socketPeer(path string) (Peer, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return Peer{}, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, serr
	}
	p := Peer{PID: int(cred.Pid)}
	if p.PID <= 0 {
		return p, nil
	}
	p.Exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); err == nil {
		p.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	return p, nil
}
