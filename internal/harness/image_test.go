package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testSpec() ImageSpec {
	return ImageSpec{
		Refs: []string{"example.com/team/app:v1", "docker.io/library/app:latest"},
		Layers: [][]File{
			{
				{Path: "/bin/tool", Mode: 0o755, Data: []byte("#!/bin/sh\necho tool\n")},
				{Path: "/bin/alias", Linkname: "tool"},
				{Path: "etc/app/config", Mode: 0o600, Data: []byte("k=v\n"), UID: 1000, GID: 1000},
				{Path: "/tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
			},
			{
				{Path: "/etc/app/extra", Mode: 0o644, Data: []byte("second layer\n")},
			},
		},
		Config: ImageConfig{
			Entrypoint:   []string{"/bin/tool"},
			Cmd:          []string{"--flag"},
			Env:          []string{"A=b"},
			User:         "1000:1000",
			WorkingDir:   "/",
			Labels:       map[string]string{"l": "v"},
			ExposedPorts: []string{"8080/tcp"},
			StopSignal:   "SIGINT",
		},
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	a, err := Build(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() != b.Digest() || a.Config.Digest != b.Config.Digest {
		t.Fatalf("digests differ between builds: %s/%s vs %s/%s", a.Digest(), a.Config.Digest, b.Digest(), b.Config.Digest)
	}
	for i := range a.Layers {
		if a.Layers[i].Digest != b.Layers[i].Digest {
			t.Errorf("layer %d digest differs: %s vs %s", i, a.Layers[i].Digest, b.Layers[i].Digest)
		}
	}
	for _, blob := range a.Blobs() {
		if got := digestOf(blob.Data); got != blob.Digest {
			t.Errorf("%s blob digest %s, content hashes to %s", blob.MediaType, blob.Digest, got)
		}
	}
	spec := testSpec()
	spec.Config.Cmd = []string{"--other"}
	c, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest() == a.Digest() {
		t.Error("changing the config did not change the manifest digest")
	}
}

func TestBuildManifestAndConfig(t *testing.T) {
	img, err := Build(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	var m ociManifest
	if err := json.Unmarshal(img.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.MediaType != MediaTypeManifest || img.Manifest.MediaType != MediaTypeManifest {
		t.Errorf("manifest header: %+v", m)
	}
	if m.Config.Digest != img.Config.Digest || m.Config.Size != img.Config.Size() || m.Config.MediaType != MediaTypeConfig {
		t.Errorf("manifest config %+v, want %+v", m.Config, img.Config.Descriptor())
	}
	if len(m.Layers) != 2 || m.Layers[0].MediaType != MediaTypeLayer || m.Layers[1].Digest != img.Layers[1].Digest {
		t.Errorf("manifest layers %+v", m.Layers)
	}
	var cfg ociImageConfig
	if err := json.Unmarshal(img.Config.Data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	c := cfg.Config
	if c.User != "1000:1000" || c.Entrypoint[0] != "/bin/tool" || c.Cmd[0] != "--flag" || c.Env[0] != "A=b" ||
		c.Labels["l"] != "v" || c.StopSignal != "SIGINT" || c.WorkingDir != "/" {
		t.Errorf("runtime config %+v", c)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.Type != "layers" {
		t.Fatalf("rootfs %+v", cfg.RootFS)
	}
	for i, l := range img.Layers {
		raw := gunzip(t, l.Data)
		if got := digestOf(raw); got != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d diff_id %s, uncompressed content hashes to %s", i, cfg.RootFS.DiffIDs[i], got)
		}
	}
}

func TestBuildLayerContents(t *testing.T) {
	img, err := Build(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		typ      byte
		mode     int64
		data     string
		linkname string
		uid      int
	}
	got := map[string]entry{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(gunzip(t, img.Layers[0].Data)))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", hdr.Name, hdr.ModTime, epoch)
		}
		got[hdr.Name] = entry{hdr.Typeflag, hdr.Mode, string(data), hdr.Linkname, hdr.Uid}
		order = append(order, hdr.Name)
	}
	want := map[string]entry{
		"bin/":           {tar.TypeDir, 0o755, "", "", 0},
		"bin/tool":       {tar.TypeReg, 0o755, "#!/bin/sh\necho tool\n", "", 0},
		"bin/alias":      {tar.TypeSymlink, 0o777, "", "tool", 0},
		"etc/":           {tar.TypeDir, 0o755, "", "", 0},
		"etc/app/":       {tar.TypeDir, 0o755, "", "", 0},
		"etc/app/config": {tar.TypeReg, 0o600, "k=v\n", "", 1000},
		"tmp/":           {tar.TypeDir, 0o1777, "", "", 0},
	}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %d entries", order, len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("missing %s", name)
		} else if g != w {
			t.Errorf("%s: got %+v, want %+v", name, g, w)
		}
	}
	// Parent directories come before their contents.
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if pos["etc/"] > pos["etc/app/"] || pos["etc/app/"] > pos["etc/app/config"] {
		t.Errorf("parents not before children: %v", order)
	}
}

func TestBuildRejectsBadSpecs(t *testing.T) {
	for name, spec := range map[string]ImageSpec{
		"no layers": {Refs: []string{"a/b:c"}},
		"duplicate": {Layers: [][]File{{{Path: "/a", Data: nil}, {Path: "a"}}}},
		"root path": {Layers: [][]File{{{Path: "/"}}}},
		"bad ref":   {Refs: []string{"Upper/Case:x"}, Layers: [][]File{{{Path: "/a"}}}},
	} {
		if _, err := Build(spec); err == nil {
			t.Errorf("%s: Build succeeded, want error", name)
		}
	}
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                               "docker.io/library/busybox:latest",
		"busybox:1.28":                          "docker.io/library/busybox:1.28",
		"library/busybox":                       "docker.io/library/busybox:latest",
		"docker.io/busybox":                     "docker.io/library/busybox:latest",
		"index.docker.io/library/busybox:1":     "docker.io/library/busybox:1",
		"registry.k8s.io/pause:3.10":            "registry.k8s.io/pause:3.10",
		"localhost:5000/a/b/c":                  "localhost:5000/a/b/c:latest",
		"localhost/x:y":                         "localhost/x:y",
		"quay.io/org/img@sha256:" + sixtyFour(): "quay.io/org/img@sha256:" + sixtyFour(),
	} {
		r, err := ParseRef(in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRef(%q) = %s, want %s", in, r, want)
		}
	}
	if r, _ := ParseRef("registry.k8s.io/pause:3.10"); r.Host != "registry.k8s.io" || r.Repo != "pause" || r.Tag != "3.10" {
		t.Errorf("ParseRef fields: %+v", r)
	}
	for _, bad := range []string{"", "a//b", "Foo/bar", "x@sha256:short"} {
		if _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) succeeded, want error", bad)
		}
	}
}

func sixtyFour() string { return "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }

func TestWriteOCIArchive(t *testing.T) {
	img, err := Build(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteOCIArchive(&buf, img); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name], _ = io.ReadAll(tr)
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var idx ociIndex
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 {
		t.Fatalf("index has %d manifests, want one per ref", len(idx.Manifests))
	}
	names := map[string]string{}
	for _, d := range idx.Manifests {
		if d.Digest != img.Digest() || d.MediaType != MediaTypeManifest || d.Platform == nil {
			t.Errorf("index entry %+v", d)
		}
		names[d.Annotations["io.containerd.image.name"]] = d.Annotations["org.opencontainers.image.ref.name"]
	}
	if names["example.com/team/app:v1"] != "v1" || names["docker.io/library/app:latest"] != "latest" {
		t.Errorf("index annotations %v", names)
	}
	for _, b := range img.Blobs() {
		data, ok := files["blobs/sha256/"+b.Digest[len("sha256:"):]]
		if !ok || !bytes.Equal(data, b.Data) {
			t.Errorf("blob %s missing or different in archive", b.Digest)
		}
	}
}

func TestBusyboxImage(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("%s not installed (busybox-static)", BusyboxPath)
	}
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Refs) != 3 || img.Refs[0] != BusyboxRef {
		t.Errorf("refs %v", img.Refs)
	}
	links := map[string]string{}
	regular := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(gunzip(t, img.Layers[0].Data)))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			links[hdr.Name] = hdr.Linkname
		case tar.TypeReg:
			regular[hdr.Name] = true
		}
	}
	for _, a := range []string{"sh", "ls", "cat", "echo", "sleep", "true", "id", "env", "ps", "wget", "nc", "httpd", "grep", "sed", "mount"} {
		if links["bin/"+a] != "busybox" {
			t.Errorf("bin/%s -> %q, want busybox", a, links["bin/"+a])
		}
	}
	for _, f := range []string{"bin/busybox", "etc/passwd", "etc/group"} {
		if !regular[f] {
			t.Errorf("missing regular file %s", f)
		}
	}
}

func TestPauseImageProgram(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := PauseImage(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ociImageConfig
	if err := json.Unmarshal(img.Config.Data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Entrypoint[0] != "/pause" || img.Refs[0] != PauseRef {
		t.Errorf("pause image config %+v refs %v", cfg.Config, img.Refs)
	}
	// The program exits 0 on SIGTERM.
	cmd := exec.Command(filepath.Join(dir, "pause"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Signal it once it catches SIGTERM: before its handler is in place the
	// default action kills it, and on a loaded machine that can take any time.
	for end := time.Now().Add(time.Minute); !catches(t, cmd.Process.Pid, syscall.SIGTERM); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("pause never caught SIGTERM")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pause after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(time.Minute): // a hang guard
		cmd.Process.Kill()
		<-done
		t.Error("pause did not exit on SIGTERM")
	}
}

// catches tells whether process pid has a handler for sig (SigCgt in
// /proc/PID/status).
func catches(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("SigCgt %q: %v", v, err)
			}
			return mask&(1<<(sig-1)) != 0
		}
	}
	t.Fatalf("no SigCgt in /proc/%d/status", pid)
	return false
}

func gunzip(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
