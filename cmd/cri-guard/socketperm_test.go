package main_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeSocket serves versionOnly at path with the given mode and group,
// as a runtime's own socket.
func runtimeSocket(t *testing.T, path string, mode os.FileMode, gid int) string {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, versionOnly{})
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(s.Stop)
	return "unix://" + path
}

// TestDefaultsStartInFrontOfEachRuntime: with its defaults (0660 root:root)
// cri-guard starts and answers in front of each runtime's own socket, on a
// socket of its own and on one passed by systemd as cri-guard.socket makes
// it (SocketMode=0660).
func TestDefaultsStartInFrontOfEachRuntime(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the runtime sockets their owner and group")
	}
	bin := binary(t)
	for _, rt := range []struct {
		name string
		mode os.FileMode
		gid  int
	}{
		{"containerd", 0o660, 0},
		{"CRI-O", 0o660, 0},
		{"cri-dockerd", 0o755, 0},               // as cri-dockerd makes it itself
		{"cri-dockerd socket unit", 0o660, 999}, // SocketGroup=docker
	} {
		t.Run(rt.name, func(t *testing.T) {
			dir := shortDir(t)
			up := runtimeSocket(t, filepath.Join(dir, "rt.sock"), rt.mode, rt.gid)

			sock := "unix://" + filepath.Join(dir, "g.sock")
			d := start(t, exec.Command(bin, "serve", "--listen", sock, "--upstream", up))
			if _, err := version(sock, time.Minute); err != nil {
				t.Fatalf("own socket: %v\n%s", err, d.out.String())
			}
			d.stop(t)

			path := filepath.Join(dir, "act.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			os.Chmod(path, 0o660)
			d = activate(t, bin, l, "serve", "--upstream", up)
			if _, err := version("unix://"+path, time.Minute); err != nil {
				t.Fatalf("activated socket: %v\n%s", err, d.out.String())
			}
		})
	}
}

// TestSocketActivationRefusesAWiderSocket: the socket systemd passes is
// held to the same rule as one cri-guard makes; before, it was not checked.
func TestSocketActivationRefusesAWiderSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the runtime socket its owner and group")
	}
	bin := binary(t)
	dir := shortDir(t)
	rtPath := filepath.Join(dir, "rt.sock")
	up := runtimeSocket(t, rtPath, 0o660, 0)
	path := filepath.Join(dir, "act.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(path, 0o666)
	d := activate(t, bin, l, "serve", "--upstream", up)
	select {
	case <-d.exited:
	case <-time.After(time.Minute): // a hang guard
		t.Fatalf("cri-guard serves a 0666 socket in front of a 0660 runtime:\n%s", d.out.String())
	}
	want := "cri-guard: socket activation: the socket would give access that the runtime's own socket does not: mode 0666 owner 0 group 0 lets every user connect, but " +
		rtPath + " is mode 0660 owner 0 group 0; set SocketMode= and SocketGroup= of cri-guard.socket no wider than the runtime's socket\n"
	if d.err == nil || !strings.HasSuffix(d.out.String(), want) {
		t.Fatalf("exit %v, output:\n%s\nwant it to end with\n%s", d.err, d.out.String(), want)
	}
}
