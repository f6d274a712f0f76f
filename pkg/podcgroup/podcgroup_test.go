package podcgroup

import (
	"bufio"
	"reflect"
	"strings"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	const (
		v1 = `25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/memory rw shared:12 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 25 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
99 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
`
		v2 = `25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
40 1 0:40 / /mnt/with\040space rw - ext4 /dev/sda1 rw
`
	)
	for name, tc := range map[string]struct {
		in, parent string
		want       *Cgroups
		err        string
	}{
		"hybrid v1": {in: v1, parent: "/cri-guard-calibrate", want: &Cgroups{Parent: "/cri-guard-calibrate",
			V1:     []string{"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd"},
			Memory: "/sys/fs/cgroup/memory", Unified: "/sys/fs/cgroup/unified"}},
		"v2":              {in: v2, parent: "/x", want: &Cgroups{Parent: "/x", V2: "/sys/fs/cgroup"}},
		"escaped v1":      {in: `30 25 0:28 / /sys/fs/cg\040mem rw - cgroup cgroup rw,memory`, parent: "/x", want: &Cgroups{Parent: "/x", V1: []string{"/sys/fs/cg mem"}, Memory: "/sys/fs/cg mem"}},
		"no cgroups":      {in: "40 1 0:40 / /mnt rw - ext4 /dev/sda1 rw\n", parent: "/x", err: "no cgroup filesystem"},
		"v1 no memory":    {in: "32 25 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n", parent: "/x", err: "memory"},
		"relative parent": {in: v2, parent: "x", err: "clean absolute"},
		"root parent":     {in: v2, parent: "/", err: "clean absolute"},
		"dotdot parent":   {in: v2, parent: "/a/../b", err: "clean absolute"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parseMountInfo(bufio.NewScanner(strings.NewReader(tc.in)), tc.parent)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCreateRejects(t *testing.T) {
	c := &Cgroups{Parent: "/p", V2: t.TempDir()}
	for name, tc := range map[string]struct {
		uid   string
		limit int64
	}{
		"empty uid":  {"", 1},
		"slash":      {"a/b", 1},
		"dotdot":     {"..", 1},
		"zero limit": {"a", 0},
		"negative":   {"a", -2},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.Create(tc.uid, tc.limit); err == nil {
				t.Error("Create succeeded")
			}
		})
	}
}
