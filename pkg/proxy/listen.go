package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// SocketPath returns the file path of a unix endpoint, given as
// "unix:///path" or as an absolute path.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix:// endpoints are supported", endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: the socket path must be absolute", endpoint)
	}
	return filepath.Clean(p), nil
}

// Listen creates the unix socket for endpoint. The parent directory is
// created with mode 0750 when missing. The socket gets mode, and group gid
// unless gid is negative. A stale socket file, one that nobody answers on,
// is removed; a socket that a live process serves is left alone and
// ErrSocketInUse returned.
func Listen(endpoint string, mode os.FileMode, gid int) (net.Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("socket group: %w", err)
		}
	}
	return l, nil
}

// removeStale removes path if it is a socket that nobody serves.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether the socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// ErrWiderThanUpstream is returned by CheckNotWider.
var ErrWiderThanUpstream = errors.New("the socket would give access that the runtime's own socket does not")

// CheckNotWider makes sure that a socket with mode and group gid (-1: the
// process's group) gives no one access to the runtime that the runtime's
// own socket, upstream, does not give: whoever reaches a CRI socket
// controls the node's containers. It returns nil when upstream does not
// exist yet; the caller may check again later.
func CheckNotWider(mode os.FileMode, gid int, upstream string) error {
	path, err := SocketPath(upstream)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runtime socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if gid < 0 {
		gid = os.Getegid()
	}
	// Connecting to a unix socket takes write permission; other bits do
	// not matter.
	up := fi.Mode().Perm()
	extra := mode.Perm() &^ up & 0o022
	if mode.Perm()&0o020 != 0 && up&0o020 != 0 && uint32(gid) != st.Gid {
		extra |= 0o020 // the group may connect, but another group
	}
	if extra != 0 {
		return fmt.Errorf("%w: mode %04o group %d, but %s is mode %04o group %d", ErrWiderThanUpstream, mode.Perm(), gid, path, up, st.Gid)
	}
	return nil
}
