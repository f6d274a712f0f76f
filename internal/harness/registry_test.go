package harness

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func testImage(t *testing.T, content string, refs ...string) *Image {
	t.Helper()
	img, err := Build(ImageSpec{Refs: refs, Layers: [][]File{{{Path: "/f", Mode: 0o644, Data: []byte(content)}}}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newTestRegistry(t *testing.T, imgs ...*Image) *httptest.Server {
	t.Helper()
	reg := NewRegistry()
	for _, img := range imgs {
		if err := reg.Add(img); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestRegistryBase(t *testing.T) {
	srv := newTestRegistry(t)
	for _, p := range []string{"/v2/", "/h/registry.k8s.io/v2/"} {
		resp, body := do(t, "GET", srv.URL+p)
		if resp.StatusCode != 200 || string(body) != "{}" {
			t.Errorf("GET %s: %d %q", p, resp.StatusCode, body)
		}
		if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("GET %s: missing API version header", p)
		}
	}
}

func TestRegistryManifestsAndBlobs(t *testing.T) {
	img := testImage(t, "one", "registry.k8s.io/pause:3.10")
	srv := newTestRegistry(t, img)
	base := srv.URL + "/h/registry.k8s.io/v2/pause"

	for _, ref := range []string{"3.10", img.Digest()} {
		resp, body := do(t, "GET", base+"/manifests/"+ref)
		if resp.StatusCode != 200 {
			t.Fatalf("GET manifest %s: %d %s", ref, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Content-Type"); got != MediaTypeManifest {
			t.Errorf("manifest Content-Type %q", got)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != img.Digest() {
			t.Errorf("manifest Docker-Content-Digest %q, want %s", got, img.Digest())
		}
		if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(img.Manifest.Data)) {
			t.Errorf("manifest Content-Length %q", got)
		}
		if string(body) != string(img.Manifest.Data) {
			t.Errorf("manifest body differs")
		}
	}
	resp, body := do(t, "HEAD", base+"/manifests/3.10")
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Docker-Content-Digest") != img.Digest() ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(img.Manifest.Data)) {
		t.Errorf("HEAD manifest: %d, %d body bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}

	for _, b := range []Blob{img.Config, img.Layers[0]} {
		resp, body := do(t, "GET", base+"/blobs/"+b.Digest)
		if resp.StatusCode != 200 || string(body) != string(b.Data) {
			t.Errorf("GET blob %s: %d, body equal %v", b.Digest, resp.StatusCode, string(body) == string(b.Data))
		}
		if resp.Header.Get("Docker-Content-Digest") != b.Digest || resp.Header.Get("Content-Type") != "application/octet-stream" ||
			resp.Header.Get("Content-Length") != strconv.Itoa(len(b.Data)) {
			t.Errorf("GET blob headers %v", resp.Header)
		}
		resp, body = do(t, "HEAD", base+"/blobs/"+b.Digest)
		if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != strconv.Itoa(len(b.Data)) {
			t.Errorf("HEAD blob: %d, %d bytes, headers %v", resp.StatusCode, len(body), resp.Header)
		}
	}
	// A config digest is not a manifest.
	if resp, _ := do(t, "GET", base+"/manifests/"+img.Config.Digest); resp.StatusCode != 404 {
		t.Errorf("config fetched as manifest: %d", resp.StatusCode)
	}
}

func TestRegistryHostsDoNotClash(t *testing.T) {
	k8s := testImage(t, "k8s", "registry.k8s.io/pause:3.10")
	hub := testImage(t, "hub", "docker.io/pause:3.10") // docker.io/library/pause
	quay := testImage(t, "quay", "quay.io/pause:3.10")
	srv := newTestRegistry(t, k8s, hub, quay)
	for url, want := range map[string]string{
		srv.URL + "/h/registry.k8s.io/v2/pause/manifests/3.10":              k8s.Digest(),
		srv.URL + "/v2/pause/manifests/3.10?ns=registry.k8s.io":             k8s.Digest(),
		srv.URL + "/h/quay.io/v2/pause/manifests/3.10":                      quay.Digest(),
		srv.URL + "/v2/pause/manifests/3.10?ns=quay.io":                     quay.Digest(),
		srv.URL + "/h/docker.io/v2/library/pause/manifests/3.10":            hub.Digest(),
		srv.URL + "/v2/library/pause/manifests/3.10?ns=docker.io":           hub.Digest(),
		srv.URL + "/v2/library/pause/manifests/3.10":                        hub.Digest(), // no host: unique repo
		srv.URL + "/h/registry-1.docker.io/v2/library/pause/manifests/3.10": hub.Digest(),
	} {
		resp, _ := do(t, "GET", url)
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want {
			t.Errorf("GET %s: %d %s, want %s", url, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), want)
		}
	}
	// A blob of one host's image is not served under another host.
	resp, _ := do(t, "GET", srv.URL+"/h/quay.io/v2/pause/blobs/"+k8s.Layers[0].Digest)
	if resp.StatusCode != 404 {
		t.Errorf("cross-host blob: %d, want 404", resp.StatusCode)
	}
}

func TestRegistryErrors(t *testing.T) {
	img := testImage(t, "x", "registry.k8s.io/pause:3.10")
	srv := newTestRegistry(t, img)
	for url, want := range map[string]struct {
		status int
		code   string
	}{
		srv.URL + "/h/registry.k8s.io/v2/pause/manifests/nope":              {404, "MANIFEST_UNKNOWN"},
		srv.URL + "/h/registry.k8s.io/v2/pause/blobs/sha256:" + sixtyFour(): {404, "BLOB_UNKNOWN"},
		srv.URL + "/h/registry.k8s.io/v2/other/manifests/3.10":              {404, "NAME_UNKNOWN"},
		srv.URL + "/h/gcr.io/v2/pause/manifests/3.10":                       {404, "NAME_UNKNOWN"},
		srv.URL + "/v2/pause/tags/list":                                     {404, "NAME_UNKNOWN"},
		srv.URL + "/other":                                                  {404, "NAME_UNKNOWN"},
	} {
		resp, body := do(t, "GET", url)
		var e regErrorBody
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("GET %s: body %q is not registry JSON: %v", url, body, err)
			continue
		}
		if resp.StatusCode != want.status || len(e.Errors) != 1 || e.Errors[0].Code != want.code ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s, want %d %s", url, resp.StatusCode, body, want.status, want.code)
		}
	}
	resp, _ := do(t, "PUT", srv.URL+"/h/registry.k8s.io/v2/pause/manifests/3.10")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", resp.StatusCode)
	}
}

func TestRegistryStartClose(t *testing.T) {
	reg := NewRegistry()
	if err := reg.Add(testImage(t, "y", "gcr.io/a/b:c")); err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	resp, _ := do(t, "GET", reg.MirrorURL("gcr.io")+"/v2/a/b/manifests/c")
	if resp.StatusCode != 200 {
		t.Errorf("GET via MirrorURL: %d", resp.StatusCode)
	}
	if got := reg.Hosts(); len(got) != 1 || got[0] != "gcr.io" {
		t.Errorf("Hosts() = %v", got)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get("http://" + reg.Addr() + "/v2/"); err == nil {
		t.Error("registry still serving after Close")
	}
}
