package critest

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/internal/harness"
)

func fakeHelpers() *Helpers {
	return &Helpers{
		Busybox: []byte("busybox"),
		Applets: []string{"sh", "ls", "httpd", "id", "ipcs", "busybox", "sbin/odd"},
		Nginx:   []byte("nginx"),
		NNP:     []byte("nnp"),
	}
}

func TestImageSpecsCoverCritest(t *testing.T) {
	specs := fakeHelpers().ImageSpecs()
	byRef := map[string]harness.ImageSpec{}
	for _, s := range specs {
		for _, r := range s.Refs {
			if _, dup := byRef[r]; dup {
				t.Errorf("ref %s served twice", r)
			}
			byRef[r] = s
		}
		if _, err := harness.Build(s); err != nil {
			t.Errorf("Build(%v): %v", s.Refs, err)
		}
	}
	want := []string{
		BusyboxRef, NginxRef, HttpdRef, NoNewPrivsRef, HostNetNginxRef, PredefinedGroupRef,
		"gcr.io/k8s-staging-cri-tools/test-image-latest:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-tag:test",
		"gcr.io/k8s-staging-cri-tools/test-image-tag:all",
		"gcr.io/k8s-staging-cri-tools/test-image-1:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-2:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-3:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:1",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:2",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:3",
		"gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-user-username:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-user-uid-group:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-user-username-group:latest",
	}
	for _, r := range want {
		if _, ok := byRef[r]; !ok {
			t.Errorf("no stand-in for %s", r)
		}
	}
	if _, ok := byRef[DigestPinnedRef]; ok {
		t.Errorf("digest-pinned ref must not be claimed as served")
	}
	if _, ok := Unservable()[DigestPinnedRef]; !ok {
		t.Errorf("Unservable() lacks %s", DigestPinnedRef)
	}

	users := map[string]string{
		"test-image-user-uid": "1002", "test-image-user-username": "www-data",
		"test-image-user-uid-group": "1003:1004", "test-image-user-username-group": "www-data:1004",
		"test-image-predefined-group": "1000",
	}
	for name, user := range users {
		s := byRef["gcr.io/k8s-staging-cri-tools/"+name+":latest"]
		if s.Config.User != user {
			t.Errorf("%s: User = %q, want %q", name, s.Config.User, user)
		}
	}

	// The three test-image-tags tags are one image; test-image-tag's are not.
	if a, b := byRef["gcr.io/k8s-staging-cri-tools/test-image-tags:1"], byRef["gcr.io/k8s-staging-cri-tools/test-image-tags:3"]; len(a.Refs) != 3 || a.Refs[2] != b.Refs[2] {
		t.Errorf("test-image-tags refs = %v, want one image with three tags", a.Refs)
	}
	if a := byRef["gcr.io/k8s-staging-cri-tools/test-image-tag:test"]; len(a.Refs) != 1 {
		t.Errorf("test-image-tag:test refs = %v, want its own image", a.Refs)
	}

	nnp := findFile(byRef[NoNewPrivsRef], "/usr/local/bin/nnp")
	if nnp == nil || nnp.Mode&os.ModeSetuid == 0 || nnp.UID != 0 {
		t.Errorf("nnp = %+v, want a setuid-root file", nnp)
	}
	if e := byRef[NoNewPrivsRef].Config.Entrypoint; len(e) != 1 || e[0] != "/usr/local/bin/nnp" {
		t.Errorf("nonewprivs entrypoint = %q", e)
	}
	for ref, port := range map[string]string{NginxRef: "80", HostNetNginxRef: "12003"} {
		s := byRef[ref]
		if findFile(s, "/usr/sbin/nginx") == nil || findFile(s, "/usr/share/nginx/html/index.html") == nil {
			t.Errorf("%s lacks the nginx stand-in or its index", ref)
		}
		if !contains(s.Config.Env, "NGINX_PORT="+port) {
			t.Errorf("%s env = %q, want NGINX_PORT=%s", ref, s.Config.Env, port)
		}
	}
	if cmd := strings.Join(byRef[HttpdRef].Config.Cmd, " "); !strings.Contains(cmd, "httpd -f") || !strings.Contains(cmd, "echo 'httpd") {
		t.Errorf("httpd cmd = %q, want it to log \"httpd\" and serve in the foreground", cmd)
	}

	group := findFile(byRef[PredefinedGroupRef], "/etc/group")
	if group == nil || !strings.Contains(string(group.Data), "group-defined-in-image:x:50000:default-user") {
		t.Errorf("predefined-group /etc/group lacks group 50000 with default-user")
	}

	base := byRef[BusyboxRef]
	for _, p := range []string{"/bin/busybox", "/bin/sh", "/bin/ls", "/bin/ipcs", "/bin/pgrep", "/etc/passwd", "/tmp"} {
		if findFile(base, p) == nil {
			t.Errorf("busybox image lacks %s", p)
		}
	}
	if f := findFile(base, "/bin/ipcs"); f == nil || f.Linkname != "" {
		t.Errorf("/bin/ipcs must be the stand-in script, not an applet link: %+v", f)
	}
	if findFile(base, "/bin/sbin/odd") != nil {
		t.Error("applet names with a slash must be ignored")
	}
	passwd := findFile(base, "/etc/passwd")
	for _, u := range []string{"\nnobody:x:65534:", "\nwww-data:x:33:"} {
		if !strings.Contains(string(passwd.Data), u) {
			t.Errorf("/etc/passwd lacks %q", u)
		}
	}
	if f := findFile(base, "/tmp"); f.Mode&os.ModeSticky == 0 || f.Mode.Perm() != 0o777 {
		t.Errorf("/tmp mode = %v, want sticky 0777", f.Mode)
	}
}

func findFile(s harness.ImageSpec, p string) *harness.File {
	var found *harness.File
	for _, layer := range s.Layers { // upper layers win
		for i := range layer {
			if layer[i].Path == p {
				found = &layer[i]
			}
		}
	}
	return found
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestRelabelMakesADistinctValidImage(t *testing.T) {
	orig, err := harness.Build(harness.ImageSpec{
		Refs:   []string{"registry.k8s.io/pause:3.10"},
		Layers: [][]harness.File{{{Path: "/pause", Mode: 0o755, Data: []byte("pause")}}},
		Config: harness.ImageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535"},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := relabel(orig, PauseRefs, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest() == orig.Digest() || img.Config.Digest == orig.Config.Digest {
		t.Error("relabelled image has the original's digest")
	}
	if len(img.Refs) != 2 || img.Refs[0] != PauseRefs[0] || img.Refs[1] != PauseRefs[1] {
		t.Errorf("refs = %v, want %v", img.Refs, PauseRefs)
	}
	if img.Digest() != sha256Digest(img.Manifest.Data) || img.Config.Digest != sha256Digest(img.Config.Data) {
		t.Error("digests do not match the content")
	}
	var m struct {
		Config harness.Descriptor   `json:"config"`
		Layers []harness.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(img.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != img.Config.Digest || m.Config.Size != img.Config.Size() {
		t.Errorf("manifest config descriptor %+v does not describe the config", m.Config)
	}
	if len(m.Layers) != 1 || m.Layers[0].Digest != orig.Layers[0].Digest {
		t.Errorf("layers changed: %+v", m.Layers)
	}
	var cfg struct {
		Config struct {
			User       string
			Entrypoint []string
			Labels     map[string]string
		} `json:"config"`
	}
	if err := json.Unmarshal(img.Config.Data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Labels["k"] != "v" || cfg.Config.User != "65535:65535" || len(cfg.Config.Entrypoint) != 1 {
		t.Errorf("config = %+v, want the original plus the label", cfg.Config)
	}
	// The registry serves it under both refs.
	reg := harness.NewRegistry()
	if err := reg.Add(img); err != nil {
		t.Fatal(err)
	}
	if hosts := reg.Hosts(); len(hosts) != 2 {
		t.Errorf("registry hosts = %v, want registry.k8s.io and k8s.gcr.io", hosts)
	}
}
