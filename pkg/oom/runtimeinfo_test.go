package oom

import "testing"

func TestParseContainerInfo(t *testing.T) {
	for name, tc := range map[string]struct {
		info map[string]string
		want ContainerInfo
		err  string
	}{
		"containerd, limit": {
			info: map[string]string{"info": `{"sandboxID":"sb1","runtimeSpec":{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/kubepods/pod1/c1","resources":{"memory":{"limit":16777216}}}}}`},
			want: ContainerInfo{SandboxID: "sb1", CgroupsPath: "/kubepods/pod1/c1", Spec: true, MemoryLimit: 16 << 20},
		},
		"containerd, no limit in the spec": {
			info: map[string]string{"info": `{"sandboxID":"sb1","runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/pod1/c1","resources":{"cpu":{"shares":2}}}}}`},
			want: ContainerInfo{SandboxID: "sb1", CgroupsPath: "/kubepods/pod1/c1", Spec: true},
		},
		"cri-dockerd 0.4.3: pid and sandbox only, nothing said": {
			info: map[string]string{"info": `{"pid":4242,"sandboxID":"sb1"}`},
			want: ContainerInfo{SandboxID: "sb1"},
		},
		"no info (CRI-O)": {},
		"bad info": {
			info: map[string]string{"info": "{"},
			err:  "container info: unexpected end of JSON input",
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseContainerInfo(tc.info)
			if (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) || got != tc.want {
				t.Errorf("got %+v, %v\nwant %+v, %q", got, err, tc.want, tc.err)
			}
		})
	}
	p, err := ParseSandboxCgroupParent(map[string]string{"info": `{"config":{"linux":{"cgroup_parent":"/kubepods/pod1"}}}`})
	if err != nil || p != "/kubepods/pod1" {
		t.Errorf("sandbox: %q, %v", p, err)
	}
}

func TestResolveLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		status int64
		info   ContainerInfo
		cg     *Cgroup
		want   Limit
	}{
		"status":                         {status: 16 << 20, want: Limit{Known: true, Bytes: 16 << 20, From: "runtime"}},
		"spec without a limit":           {info: ContainerInfo{Spec: true}, cg: &Cgroup{Read: true, Limit: 1 << 20}, want: Limit{Known: true, From: "runtime"}},
		"nothing said, cgroup read":      {cg: &Cgroup{Read: true, Limit: 64 << 20}, want: Limit{Known: true, Bytes: 64 << 20, From: "cgroup"}},
		"nothing said, cgroup unlimited": {cg: &Cgroup{Read: true, Unlimited: true}, want: Limit{Known: true, From: "cgroup"}},
		"nothing said, cgroup gone":      {cg: &Cgroup{Error: "gone"}, want: Limit{}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := ResolveLimit(tc.status, tc.info, tc.cg); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
