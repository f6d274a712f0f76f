package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Whoever can connect to a CRI socket controls the node's containers, so
// cri-guard's socket must let no one connect who cannot connect to the
// runtime's own socket. connect(2) on a unix socket needs write permission
// on the socket file and nothing else (read and execute bits do not
// matter), and root may always connect. So the rule compares the users each
// socket lets write: its owner (u+w), the members of its group (g+w) and
// everyone (o+w). Group members are read from /etc/passwd (primary group)
// and /etc/group; a group that /etc/group does not list (one served by
// LDAP, say) has members cri-guard cannot see, and counts as covered only
// by the same group or by o+w.
//
// Examples, all with cri-guard's default 0660 root:root: containerd's
// socket is 0660 root:root and CRI-O's the same; cri-dockerd's is 0755
// root:root when it creates it itself (or 0660 root:docker from its socket
// unit). In each case only root, and the members of group root, who are
// normally root alone, can connect to cri-guard's, and they can connect to
// the runtime's too.

// SocketAccess is what decides who may connect to a unix socket file.
type SocketAccess struct {
	UID, GID uint32
	Mode     os.FileMode // permission bits
}

func (a SocketAccess) String() string {
	return fmt.Sprintf("mode %04o owner %d group %d", a.Mode.Perm(), a.UID, a.GID)
}

// ErrWiderThanUpstream is returned when cri-guard's socket would let
// someone connect whom the runtime's own socket does not.
var ErrWiderThanUpstream = errors.New("the socket would give access that the runtime's own socket does not")

// The account files read for group members; tests change them.
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// CheckNotWider makes sure that the socket Listen creates with mode and
// group gid (-1: the process's group) lets no one connect to the runtime
// whom the runtime's own socket, upstream, does not let. It returns nil
// when upstream does not exist yet.
func CheckNotWider(mode os.FileMode, gid int, upstream string) error {
	ours := SocketAccess{UID: uint32(os.Geteuid()), Mode: mode.Perm()}
	if gid >= 0 {
		ours.UID, ours.GID = 0, uint32(gid) // Listen chowns it to root:gid
	} else {
		ours.GID = uint32(os.Getegid())
	}
	return checkAccess(ours, upstream, loadAccounts())
}

// CheckListenerNotWider is CheckNotWider for a socket made by someone else,
// such as the one systemd passes under socket activation: it reads the
// socket file's owner, group and mode. An abstract socket has no file and
// anyone in the network namespace may connect to it.
func CheckListenerNotWider(l net.Listener, upstream string) error {
	addr, ok := l.Addr().(*net.UnixAddr)
	if !ok || addr.Name == "" {
		return fmt.Errorf("listener %v: not a unix socket with a path", l.Addr())
	}
	var ours SocketAccess
	if strings.HasPrefix(addr.Name, "@") {
		ours = SocketAccess{Mode: 0o777}
	} else {
		a, err := statAccess(addr.Name)
		if err != nil {
			return fmt.Errorf("listening socket: %w", err)
		}
		ours = a
	}
	return checkAccess(ours, upstream, loadAccounts())
}

func statAccess(path string) (SocketAccess, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return SocketAccess{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return SocketAccess{}, fmt.Errorf("%s: no owner information", path)
	}
	return SocketAccess{UID: st.Uid, GID: st.Gid, Mode: fi.Mode().Perm()}, nil
}

func checkAccess(ours SocketAccess, upstream string, acc *accounts) error {
	path, err := SocketPath(upstream)
	if err != nil {
		return err
	}
	up, err := statAccess(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runtime socket: %w", err)
	}
	if extra := acc.connect(ours).minus(acc.connect(up)); extra != "" {
		return fmt.Errorf("%w: %s lets %s connect, but %s is %s", ErrWiderThanUpstream, ours, extra, path, up)
	}
	return nil
}

// who is who may connect to a socket besides root.
type who struct {
	everyone bool
	users    map[string]bool // user names ("uid N" when unnamed)
	groups   map[uint32]bool // groups whose members are unknown
}

func (a *accounts) connect(s SocketAccess) who {
	w := who{users: map[string]bool{}, groups: map[uint32]bool{}}
	if s.Mode&0o002 != 0 {
		w.everyone = true
		return w
	}
	if s.Mode&0o200 != 0 && s.UID != 0 {
		w.users[a.userName(s.UID)] = true
	}
	if s.Mode&0o020 != 0 {
		members, known := a.members(s.GID)
		if !known {
			w.groups[s.GID] = true
		}
		for _, m := range members {
			w.users[m] = true
		}
	}
	return w
}

// minus describes who w lets connect that o does not; "" when no one.
func (w who) minus(o who) string {
	if o.everyone {
		return ""
	}
	if w.everyone {
		return "every user"
	}
	var users []string
	for u := range w.users {
		if !o.users[u] {
			users = append(users, u)
		}
	}
	var groups []string
	for g := range w.groups {
		if !o.groups[g] {
			groups = append(groups, strconv.FormatUint(uint64(g), 10))
		}
	}
	slices.Sort(users)
	slices.Sort(groups)
	var parts []string
	switch len(users) {
	case 0:
	case 1:
		parts = append(parts, "user "+users[0])
	default:
		parts = append(parts, "users "+strings.Join(users, ", "))
	}
	for _, g := range groups {
		parts = append(parts, "the members of group "+g+" (not listed in "+groupFile+")")
	}
	return strings.Join(parts, " and ")
}

// accounts are the local users and groups.
type accounts struct {
	names   map[uint32]string   // uid to name
	primary map[uint32][]string // gid to the users whose primary group it is
	groups  map[uint32][]string // gid to the members /etc/group lists
	root    map[string]bool     // names of uid 0
}

// loadAccounts reads passwdFile and groupFile. A file that cannot be read
// leaves every group unknown, so that only the same group covers it.
func loadAccounts() *accounts {
	a := &accounts{names: map[uint32]string{}, primary: map[uint32][]string{}, groups: map[uint32][]string{}, root: map[string]bool{}}
	readColon(passwdFile, func(f []string) {
		if len(f) < 4 {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		if _, dup := a.names[uint32(uid)]; !dup {
			a.names[uint32(uid)] = f[0]
		}
		if uid == 0 {
			a.root[f[0]] = true
		}
		a.primary[uint32(gid)] = append(a.primary[uint32(gid)], f[0])
	})
	readColon(groupFile, func(f []string) {
		if len(f) < 4 {
			return
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return
		}
		var m []string
		for _, u := range strings.Split(f[3], ",") {
			if u = strings.TrimSpace(u); u != "" {
				m = append(m, u)
			}
		}
		a.groups[uint32(gid)] = append(a.groups[uint32(gid)], m...)
	})
	return a
}

func readColon(path string, line func([]string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		t := sc.Text()
		if t == "" || strings.HasPrefix(t, "#") || strings.HasPrefix(t, "+") || strings.HasPrefix(t, "-") {
			continue
		}
		line(strings.Split(t, ":"))
	}
}

func (a *accounts) userName(uid uint32) string {
	if n, ok := a.names[uid]; ok {
		return n
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// members returns the users of group gid other than root, and whether the
// group is known.
func (a *accounts) members(gid uint32) ([]string, bool) {
	listed, known := a.groups[gid]
	var out []string
	for _, u := range append(slices.Clone(a.primary[gid]), listed...) {
		if !a.root[u] {
			out = append(out, u)
		}
	}
	return out, known
}
