package oom

import "testing"

func TestParseRuntimeInfo(t *testing.T) {
	c, err := ParseContainerInfo(map[string]string{"info": `{"sandboxID":"sb1","runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/pod1/c1","resources":{"memory":{"limit":16777216}}}}}`})
	if err != nil || c != (ContainerInfo{SandboxID: "sb1", CgroupsPath: "/kubepods/pod1/c1", MemoryLimit: 16 << 20}) {
		t.Errorf("container: %+v, %v", c, err)
	}
	if c, err := ParseContainerInfo(nil); err != nil || c != (ContainerInfo{}) {
		t.Errorf("no info: %+v, %v", c, err)
	}
	if _, err := ParseContainerInfo(map[string]string{"info": "{"}); err == nil || err.Error() != "container info: unexpected end of JSON input" {
		t.Errorf("bad info: %v", err)
	}
	p, err := ParseSandboxCgroupParent(map[string]string{"info": `{"config":{"linux":{"cgroup_parent":"/kubepods/pod1"}}}`})
	if err != nil || p != "/kubepods/pod1" {
		t.Errorf("sandbox: %q, %v", p, err)
	}
}
