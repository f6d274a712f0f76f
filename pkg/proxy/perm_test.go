package proxy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

const testPasswd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000::/home/alice:/bin/bash
bob:x:1001:4242::/home/bob:/bin/bash
kubelet:x:1002:1002::/var/lib/kubelet:/usr/sbin/nologin
`

const testGroup = `root:x:0:
daemon:x:1:
alice:x:1000:
docker:x:999:alice
kube:x:4242:carol
`

// withAccounts points the account files at fixtures for one test.
func withAccounts(t *testing.T, passwd, group string) {
	t.Helper()
	dir := t.TempDir()
	pw, gr := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	os.WriteFile(pw, []byte(passwd), 0o644)
	os.WriteFile(gr, []byte(group), 0o644)
	oldPw, oldGr := passwdFile, groupFile
	passwdFile, groupFile = pw, gr
	t.Cleanup(func() { passwdFile, groupFile = oldPw, oldGr })
}

// TestCheckAccess compares who may connect (write) to cri-guard's socket
// and to the runtime's, for the runtimes' own sockets and for sockets
// that let someone else in.
func TestCheckAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the fake runtime socket its owner and group")
	}
	withAccounts(t, testPasswd, testGroup)
	up := filepath.Join(t.TempDir(), "runtime.sock")
	l, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	def := SocketAccess{UID: 0, GID: 0, Mode: 0o660} // cri-guard's defaults
	group := groupFile
	for _, tc := range []struct {
		name    string
		ours    SocketAccess
		runtime SocketAccess
		group   string // /etc/group, if not testGroup
		want    string // "" for no error
	}{
		{name: "containerd 0660 root:root", ours: def, runtime: SocketAccess{0, 0, 0o660}},
		{name: "CRI-O 0660 root:root", ours: def, runtime: SocketAccess{0, 0, 0o660}},
		{name: "cri-dockerd 0755 root:root", ours: def, runtime: SocketAccess{0, 0, 0o755}},
		{name: "cri-dockerd socket unit 0660 root:docker", ours: def, runtime: SocketAccess{0, 999, 0o660}},
		{name: "runtime 0600, group root has only root", ours: def, runtime: SocketAccess{0, 0, 0o600}},
		{name: "runtime 0600, group root has alice", ours: def, runtime: SocketAccess{0, 0, 0o600},
			group: "root:x:0:alice\n",
			want:  "mode 0660 owner 0 group 0 lets user alice connect, but %s is mode 0600 owner 0 group 0"},
		{name: "group kube in front of root:root", ours: SocketAccess{0, 4242, 0o660}, runtime: SocketAccess{0, 0, 0o660},
			want: "mode 0660 owner 0 group 4242 lets users bob, carol connect, but %s is mode 0660 owner 0 group 0"},
		{name: "group kube in front of root:kube", ours: SocketAccess{0, 4242, 0o660}, runtime: SocketAccess{0, 4242, 0o660}},
		{name: "group docker in front of cri-dockerd's unit", ours: SocketAccess{0, 999, 0o660}, runtime: SocketAccess{0, 999, 0o660}},
		{name: "group docker in front of an alice-owned socket", ours: SocketAccess{0, 999, 0o660}, runtime: SocketAccess{1000, 0, 0o755}},
		{name: "unlisted group", ours: SocketAccess{0, 5555, 0o660}, runtime: SocketAccess{0, 0, 0o660},
			want: "mode 0660 owner 0 group 5555 lets the members of group 5555 (not listed in " + group + ") connect, but %s is mode 0660 owner 0 group 0"},
		{name: "unlisted group, the same", ours: SocketAccess{0, 5555, 0o660}, runtime: SocketAccess{0, 5555, 0o660}},
		{name: "everyone", ours: SocketAccess{0, 0, 0o666}, runtime: SocketAccess{0, 0, 0o660},
			want: "mode 0666 owner 0 group 0 lets every user connect, but %s is mode 0660 owner 0 group 0"},
		{name: "everyone, runtime too", ours: SocketAccess{0, 0, 0o666}, runtime: SocketAccess{0, 0, 0o777}},
		{name: "read bits do not connect", ours: SocketAccess{0, 4242, 0o644}, runtime: SocketAccess{0, 0, 0o600}},
		{name: "owned by the kubelet (SocketUser=)", ours: SocketAccess{1002, 0, 0o600}, runtime: SocketAccess{0, 0, 0o660},
			want: "mode 0600 owner 1002 group 0 lets user kubelet connect, but %s is mode 0660 owner 0 group 0"},
		{name: "owner without a name", ours: SocketAccess{7777, 0, 0o600}, runtime: SocketAccess{0, 0, 0o600},
			want: "mode 0600 owner 7777 group 0 lets user uid 7777 connect, but %s is mode 0600 owner 0 group 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.group != "" {
				withAccounts(t, testPasswd, tc.group)
			}
			if err := os.Chown(up, int(tc.runtime.UID), int(tc.runtime.GID)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(up, tc.runtime.Mode); err != nil {
				t.Fatal(err)
			}
			err := checkAccess(tc.ours, "unix://"+up, loadAccounts())
			want := ""
			if tc.want != "" {
				want = ErrWiderThanUpstream.Error() + ": " + fmt.Sprintf(tc.want, up)
			}
			if got := errText(err); got != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}

	if err := checkAccess(def, "unix://"+filepath.Join(t.TempDir(), "absent.sock"), loadAccounts()); err != nil {
		t.Errorf("runtime socket absent: %v", err)
	}
	if err := checkAccess(def, "tcp://127.0.0.1:1", loadAccounts()); err == nil || err.Error() != `endpoint "tcp://127.0.0.1:1": only unix:// endpoints are supported` {
		t.Errorf("tcp runtime: %v", err)
	}
}

// TestCheckListenerNotWider: the socket that systemd passes is checked by
// its file's owner, group and mode, like one cri-guard makes.
func TestCheckListenerNotWider(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the sockets their owner and group")
	}
	withAccounts(t, testPasswd, testGroup)
	dir := t.TempDir()
	up := filepath.Join(dir, "runtime.sock")
	ul, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	os.Chmod(up, 0o755) // cri-dockerd's
	ours := filepath.Join(dir, "activated.sock")
	l, err := net.Listen("unix", ours)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		mode os.FileMode
		gid  int
		want string
	}{
		{0o660, 0, ""},
		{0o666, 0, "mode 0666 owner 0 group 0 lets every user connect, but " + up + " is mode 0755 owner 0 group 0"},
		{0o660, 4242, "mode 0660 owner 0 group 4242 lets users bob, carol connect, but " + up + " is mode 0755 owner 0 group 0"},
	} {
		os.Chmod(ours, tc.mode)
		os.Chown(ours, 0, tc.gid)
		err := CheckListenerNotWider(l, "unix://"+up)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != ErrWiderThanUpstream.Error()+": "+tc.want) {
			t.Errorf("mode %04o group %d: got %v, want %q", tc.mode, tc.gid, err, tc.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
