package critest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// Image references that critest v1.37.0 pulls on Linux (see IMAGES.md).
const (
	// BusyboxRef is critest's default test container image.
	BusyboxRef = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	// NginxRef is the web server image (port 80) and the image of the
	// HostPID/PodPID/ContainerPID specs, which look for "master process".
	NginxRef = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
	// HttpdRef is the web server of the "Multiple Containers" specs.
	HttpdRef = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4"
	// NoNewPrivsRef runs a setuid-root program printing "Effective uid: N".
	NoNewPrivsRef = "registry.k8s.io/e2e-test-images/nonewprivs:1.3"
	// HostNetNginxRef serves HTTP on port 12003 in the host network.
	HostNetNginxRef = "gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest"
	// PredefinedGroupRef runs as UID 1000, a member of GID 50000 in /etc/group.
	PredefinedGroupRef = "gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest"
	// DigestPinnedRef is pulled by digest; its content cannot be reproduced.
	DigestPinnedRef = "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"

	stagingRegistry = "gcr.io/k8s-staging-cri-tools/"
)

// PauseRefs are the two references of the same pause image that the
// "removing image from one registry" and "pulled from different registries"
// specs pull; they must resolve to one image, and to no other tag.
var PauseRefs = []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"}

// Unservable lists the references critest pulls that no stand-in can
// serve, with the reason. The specs using them fail directly.
func Unservable() map[string]string {
	return map[string]string{
		DigestPinnedRef: "pulled by a fixed manifest digest of the upstream image; a stand-in has a different digest",
	}
}

//go:embed csrc/nginx.c
var nginxSource []byte

//go:embed csrc/nnp.c
var nnpSource []byte

// passwd and group follow the upstream busybox image, so that names such
// as nobody and www-data resolve as critest expects.
const basePasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const baseGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`

// ipcsScript stands in for util-linux `ipcs -m`, which busybox-static
// lacks: it lists the SysV shared memory segments of the caller's IPC
// namespace from /proc/sysvipc/shm. The header contains no digits, so an
// empty namespace never "contains" a segment ID.
const ipcsScript = `#!/bin/sh
# ipcs stand-in (cri-guard critest image): shared memory segments only.
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
if [ -r /proc/sysvipc/shm ]; then
	sed 1d /proc/sysvipc/shm | while read key shmid perms size cpid lpid nattch uid rest; do
		echo "$key $shmid $uid $perms $size $nattch"
	done
fi
echo
`

// pgrepScript stands in for pgrep, which busybox-static lacks (critest's
// "execSync with timeout" runs `sh -c "pgrep sleep || true"`): it prints
// the PIDs whose command name matches the pattern, and exits 1 if none.
const pgrepScript = `#!/bin/sh
# pgrep stand-in (cri-guard critest image): pgrep PATTERN
if [ $# -ne 1 ]; then
	echo "usage: pgrep PATTERN" >&2
	exit 2
fi
self=$$
found=1
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[ "$pid" = "$self" ] && continue
	read -r comm < "$d/comm" 2>/dev/null || continue
	case "$comm" in pgrep) continue ;; esac
	if echo "$comm" | grep -q -e "$1"; then
		echo "$pid"
		found=0
	fi
done
exit $found
`

const indexHTML = "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n" +
	"<body><h1>Welcome to nginx!</h1><p>cri-guard critest stand-in.</p></body></html>\n"

var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// Helpers are the stand-in programs compiled for the images.
type Helpers struct {
	Busybox []byte // busybox-static binary
	Applets []string
	Nginx   []byte // csrc/nginx.c
	NNP     []byte // csrc/nnp.c
}

// BuildHelpers compiles the C helpers with `gcc -static -Os -s` in
// workDir and reads busybox from harness.BusyboxPath.
func BuildHelpers(ctx context.Context, workDir string) (*Helpers, error) {
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("critest helpers: %w", err)
	}
	bb, err := os.ReadFile(harness.BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("critest helpers: %w (is busybox-static installed?)", err)
	}
	out, err := exec.CommandContext(ctx, harness.BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("critest helpers: busybox --list: %w", err)
	}
	h := &Helpers{Busybox: bb, Applets: strings.Fields(string(out))}
	if h.Nginx, err = compileC(ctx, workDir, "nginx", nginxSource); err != nil {
		return nil, err
	}
	if h.NNP, err = compileC(ctx, workDir, "nnp", nnpSource); err != nil {
		return nil, err
	}
	return h, nil
}

func compileC(ctx context.Context, dir, name string, src []byte) ([]byte, error) {
	srcPath := filepath.Join(dir, name+".c")
	bin := filepath.Join(dir, name)
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		return nil, fmt.Errorf("critest helper %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, "gcc", "-static", "-Os", "-s", "-o", bin, srcPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("critest helper %s: gcc: %w: %s", name, err, bytes.TrimSpace(out))
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("critest helper %s: %w", name, err)
	}
	return data, nil
}

// baseLayer is a busybox root file system like the upstream busybox image:
// /bin/busybox, a relative symlink in /bin per applet, ipcs and pgrep
// stand-ins, /etc/passwd and /etc/group, and the usual empty directories.
func (h *Helpers) baseLayer() []harness.File {
	files := []harness.File{
		{Path: "/tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		{Path: "/bin/busybox", Mode: 0o755, Data: h.Busybox},
		{Path: "/bin/ipcs", Mode: 0o755, Data: []byte(ipcsScript)},
		{Path: "/bin/pgrep", Mode: 0o755, Data: []byte(pgrepScript)},
	}
	seen := map[string]bool{"busybox": true, "ipcs": true, "pgrep": true}
	applets := append([]string(nil), h.Applets...)
	sort.Strings(applets)
	for _, a := range applets {
		if seen[a] || strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		files = append(files, harness.File{Path: "/bin/" + a, Linkname: "busybox"})
	}
	return append(files,
		harness.File{Path: "/etc/passwd", Mode: 0o644, Data: []byte(basePasswd)},
		harness.File{Path: "/etc/group", Mode: 0o644, Data: []byte(baseGroup)},
		harness.File{Path: "/root", Mode: os.ModeDir | 0o700},
		harness.File{Path: "/home", Mode: os.ModeDir | 0o755},
		harness.File{Path: "/var/www", Mode: os.ModeDir | 0o755},
		harness.File{Path: "/var/run", Mode: os.ModeDir | 0o755},
		harness.File{Path: "/var/spool/mail", Mode: os.ModeDir | 0o755},
		harness.File{Path: "/usr/sbin", Mode: os.ModeDir | 0o755},
		harness.File{Path: "/usr/bin", Mode: os.ModeDir | 0o755},
	)
}

func busyboxConfig() harness.ImageConfig {
	return harness.ImageConfig{Cmd: []string{"sh"}, Env: defaultEnv}
}

// ImageSpecs returns a stand-in for every image critest v1.37.0 pulls on
// Linux, except the pause image (see Images) and the Unservable ones.
func (h *Helpers) ImageSpecs() []harness.ImageSpec {
	base := h.baseLayer()
	var specs []harness.ImageSpec
	add := func(refs []string, cfg harness.ImageConfig, upper ...[]harness.File) {
		layers := [][]harness.File{base}
		for _, u := range upper {
			if len(u) > 0 {
				layers = append(layers, u)
			}
		}
		specs = append(specs, harness.ImageSpec{Refs: refs, Layers: layers, Config: cfg})
	}
	// marker is the file that images/image-test/Dockerfile ADDs.
	marker := func(name string) []harness.File {
		return []harness.File{{Path: "/" + name, Mode: 0o644}}
	}

	// Default test container image.
	add([]string{BusyboxRef}, busyboxConfig())

	// Web servers.
	nginxFiles := func(port string) ([]harness.File, harness.ImageConfig) {
		return []harness.File{
				{Path: "/usr/sbin/nginx", Mode: 0o755, Data: h.Nginx},
				{Path: "/usr/share/nginx/html/index.html", Mode: 0o644, Data: []byte(indexHTML)},
				{Path: "/etc/nginx/conf.d/default.conf", Mode: 0o644, Data: []byte("# listen " + port + ";\n")},
			}, harness.ImageConfig{
				Entrypoint:   []string{"/usr/sbin/nginx"},
				Cmd:          []string{"-g", "daemon off;"},
				Env:          append(append([]string(nil), defaultEnv...), "NGINX_PORT="+port),
				ExposedPorts: []string{port + "/tcp"},
				StopSignal:   "SIGQUIT",
			}
	}
	files, cfg := nginxFiles("80")
	add([]string{NginxRef}, cfg, files)
	files, cfg = nginxFiles("12003")
	add([]string{HostNetNginxRef}, cfg, files)
	add([]string{HttpdRef}, harness.ImageConfig{
		Cmd: []string{"/bin/sh", "-c",
			"echo 'httpd (cri-guard stand-in): serving /usr/local/apache2/htdocs on port 80'; " +
				"exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs"},
		Env:          defaultEnv,
		ExposedPorts: []string{"80/tcp"},
	}, []harness.File{
		{Path: "/usr/local/apache2/htdocs/index.html", Mode: 0o644, Data: []byte("<html><body><h1>It works!</h1></body></html>\n")},
	})

	// No new privileges: a setuid-root helper as the entrypoint.
	add([]string{NoNewPrivsRef}, harness.ImageConfig{
		Entrypoint: []string{"/usr/local/bin/nnp"},
		Env:        defaultEnv,
	}, []harness.File{
		{Path: "/usr/local/bin/nnp", Mode: os.ModeSetuid | 0o755, Data: h.NNP},
	})

	// Image users (images/build IMAGE_USERS).
	for _, u := range []struct{ name, user string }{
		{"test-image-user-uid", "1002"},
		{"test-image-user-username", "www-data"},
		{"test-image-user-uid-group", "1003:1004"},
		{"test-image-user-username-group", "www-data:1004"},
	} {
		cfg := busyboxConfig()
		cfg.User = u.user
		add([]string{stagingRegistry + u.name + ":latest"}, cfg, marker(u.name))
	}

	// A user whose group membership comes from the image's /etc/group.
	cfg = busyboxConfig()
	cfg.User = "1000"
	add([]string{PredefinedGroupRef}, cfg, []harness.File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(basePasswd +
			"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(baseGroup +
			"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")},
		{Path: "/home/default-user", Mode: os.ModeDir | 0o755, UID: 1000, GID: 1000},
	})

	// Reference tests (images/image-test/Dockerfile: busybox + one marker file).
	for _, name := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest"} {
		add([]string{stagingRegistry + name + ":latest"}, busyboxConfig(), marker(name))
	}
	// The digest-pinned image cannot match its digest; serve its tag anyway.
	add([]string{stagingRegistry + "test-image-digest:latest"}, busyboxConfig(), marker("test-image-digest"))
	// Three tags of one image.
	add([]string{
		stagingRegistry + "test-image-tags:1",
		stagingRegistry + "test-image-tags:2",
		stagingRegistry + "test-image-tags:3",
	}, busyboxConfig(), marker("same-image"))
	// test-image-tag:test and :all are different images.
	for _, tag := range []string{"test", "all"} {
		add([]string{stagingRegistry + "test-image-tag:" + tag}, busyboxConfig(), marker(tag))
	}
	return specs
}

// Images builds every stand-in image critest needs, including a pause
// image served under PauseRefs. That one is harness.PauseImage with an
// extra label, so that it is a different image from the runtime's sandbox
// image: critest removes pause:3.9 by image ID and expects exactly its two
// tags on it, which fails when it shares its ID with the sandbox image
// (containerd re-tags that one whenever it starts a sandbox). The harness
// also serves registry.k8s.io/pause:3.9; images passed in
// harness.Options.Images are added to the registry after the harness's
// own, so this one is served under that tag.
func Images(ctx context.Context, workDir string) ([]*harness.Image, error) {
	h, err := BuildHelpers(ctx, workDir)
	if err != nil {
		return nil, err
	}
	var imgs []*harness.Image
	for _, spec := range h.ImageSpecs() {
		img, err := harness.Build(spec)
		if err != nil {
			return nil, fmt.Errorf("critest image %s: %w", spec.Refs[0], err)
		}
		imgs = append(imgs, img)
	}
	pause, err := harness.PauseImage(ctx, filepath.Join(workDir, "pause"))
	if err != nil {
		return nil, err
	}
	pause, err = relabel(pause, PauseRefs, map[string]string{"io.cri-guard.critest": "pause-3.9"})
	if err != nil {
		return nil, fmt.Errorf("critest pause image: %w", err)
	}
	return append(imgs, pause), nil
}

// relabel returns a copy of img served as refs, with labels added to its
// config (and so a different config digest and image ID).
func relabel(img *harness.Image, refs []string, labels map[string]string) (*harness.Image, error) {
	var cfg map[string]any
	if err := json.Unmarshal(img.Config.Data, &cfg); err != nil {
		return nil, err
	}
	rc, _ := cfg["config"].(map[string]any)
	if rc == nil {
		rc = map[string]any{}
		cfg["config"] = rc
	}
	l, _ := rc["Labels"].(map[string]any)
	if l == nil {
		l = map[string]any{}
		rc["Labels"] = l
	}
	for k, v := range labels {
		l[k] = v
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(img.Manifest.Data, &m); err != nil {
		return nil, err
	}
	cfgBlob := harness.Blob{MediaType: img.Config.MediaType, Digest: sha256Digest(cfgJSON), Data: cfgJSON}
	m["config"] = cfgBlob.Descriptor()
	mJSON, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &harness.Image{
		Refs:     append([]string(nil), refs...),
		Manifest: harness.Blob{MediaType: img.Manifest.MediaType, Digest: sha256Digest(mJSON), Data: mJSON},
		Config:   cfgBlob,
		Layers:   append([]harness.Blob(nil), img.Layers...),
	}, nil
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Refs returns every reference served by imgs, sorted.
func Refs(imgs []*harness.Image) []string {
	var refs []string
	for _, img := range imgs {
		refs = append(refs, img.Refs...)
	}
	sort.Strings(refs)
	return refs
}
