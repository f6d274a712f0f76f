package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "cri-guard.sock")

	l, err := Listen("unix://"+sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Dir(sock)); fi.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want 0750", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// A live server keeps its socket.
	if _, err := Listen(sock, 0o660, -1); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("second Listen on a live socket: got %v, want ErrSocketInUse", err)
	}

	// A stale socket is replaced. Leave the file behind the way a killed
	// process does.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	l2, err := Listen(sock, 0o600, os.Getgid())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
	if fi, err := os.Stat(sock); err == nil {
		t.Errorf("closing the listener left %v", fi.Mode())
	}
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, []byte("keep me"), 0o644)
	for name, tc := range map[string]struct {
		endpoint, want string
	}{
		"regular file": {file, file + " exists and is not a socket; refusing to remove it"},
		"relative":     {"unix://run/x.sock", `endpoint "unix://run/x.sock": the socket path must be absolute`},
		"tcp":          {"tcp://127.0.0.1:1", `endpoint "tcp://127.0.0.1:1": only unix:// endpoints are supported`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Listen(tc.endpoint, 0o660, -1)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("the regular file was changed")
	}
}

// TestRemoveStale: the one rule for both of the daemon's sockets (the CRI
// socket, "unix", and the control socket, "unixpacket"): only a refused
// connection means nobody serves the file.
func TestRemoveStale(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket"} {
		for name, tc := range map[string]struct {
			setup   func(t *testing.T, path string)
			want    string // the error, "" for none
			removed bool
		}{
			"missing": {setup: func(*testing.T, string) {}, removed: true},
			"stale": {setup: func(t *testing.T, path string) {
				l := listenAt(t, network, path)
				l.SetUnlinkOnClose(false)
				l.Close()
			}, removed: true},
			"live": {setup: func(t *testing.T, path string) {
				l := listenAt(t, network, path)
				t.Cleanup(func() { l.Close() })
			}, want: "%s: socket is in use by a live server"},
			"other socket type": {setup: func(t *testing.T, path string) {
				other := map[string]string{"unix": "unixpacket", "unixpacket": "unix"}[network]
				l := listenAt(t, other, path)
				t.Cleanup(func() { l.Close() })
			}, want: "%s: cannot tell whether the socket is in use: dial " + network + " %[1]s: connect: protocol wrong type for socket"},
			"regular file": {setup: func(t *testing.T, path string) {
				os.WriteFile(path, nil, 0o600)
			}, want: "%s exists and is not a socket; refusing to remove it"},
		} {
			t.Run(network+"/"+name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "s")
				tc.setup(t, path)
				err := RemoveStale(network, path)
				want := ""
				if tc.want != "" {
					want = fmt.Sprintf(tc.want, path)
				}
				if got := fmt.Sprint(err); err == nil && want != "" || err != nil && got != want {
					t.Errorf("RemoveStale(%s): got %v, want %q", network, err, want)
				}
				if _, err := os.Lstat(path); tc.removed != errors.Is(err, os.ErrNotExist) {
					t.Errorf("file removed: %v, want %v", errors.Is(err, os.ErrNotExist), tc.removed)
				}
			})
		}
	}
}

func listenAt(t *testing.T, network, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		t.Fatal(err)
	}
	return l
}
