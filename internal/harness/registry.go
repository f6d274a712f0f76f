package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Registry is a small read-only OCI distribution registry serving built
// images over plain HTTP on 127.0.0.1.
//
// Images are stored per upstream host and repository, so that
// registry.k8s.io/pause and docker.io/library/pause do not clash. A client
// selects the upstream host either with a path prefix,
//
//	/h/<host>/v2/<repo>/manifests/<reference>
//
// which is what the containerd hosts.toml written by Start uses (see
// MirrorURL), or with the ns=<host> query parameter that containerd (1.5+)
// adds when it talks to a mirror:
//
//	/v2/<repo>/manifests/<reference>?ns=<host>
//
// A request that names no host is served from the first host, in sorted
// order, that has the repository.
//
// Supported: GET /v2/, and GET and HEAD of manifests (by tag or digest) and
// blobs (by digest). Everything else is 404 or 405 in the registry's JSON
// error form. The Registry logs nothing.
type Registry struct {
	mu    sync.RWMutex
	repos map[repoKey]*repository

	srv *http.Server
	ln  net.Listener
}

type repoKey struct{ host, repo string }

type repository struct {
	tags  map[string]string // tag -> manifest digest
	blobs map[string]Blob   // digest -> blob (manifests, configs, layers)
}

// NewRegistry returns an empty registry. Add images, then Start it; it is
// also an http.Handler, e.g. for httptest.
func NewRegistry() *Registry {
	return &Registry{repos: map[repoKey]*repository{}}
}

// Add makes img available under each of its Refs. It may be called before
// or after Start.
func (r *Registry) Add(img *Image) error {
	if len(img.Refs) == 0 {
		return errors.New("registry: image has no refs")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range img.Refs {
		ref, err := ParseRef(s)
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		key := repoKey{ref.Host, ref.Repo}
		repo := r.repos[key]
		if repo == nil {
			repo = &repository{tags: map[string]string{}, blobs: map[string]Blob{}}
			r.repos[key] = repo
		}
		for _, b := range img.Blobs() {
			repo.blobs[b.Digest] = b
		}
		if ref.Tag != "" {
			repo.tags[ref.Tag] = img.Digest()
		}
	}
	return nil
}

// Hosts returns the upstream hosts the registry has images for, sorted.
func (r *Registry) Hosts() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	set := map[string]bool{}
	for k := range r.repos {
		set[k.host] = true
	}
	hosts := make([]string, 0, len(set))
	for h := range set {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// Start listens on 127.0.0.1 on a free port and serves in the background.
func (r *Registry) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return errors.New("registry: already started")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("registry: listen: %w", err)
	}
	r.ln = ln
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLogger()}
	go r.srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed after Close
	return nil
}

// Addr is the "127.0.0.1:port" the registry listens on, or "" before Start.
func (r *Registry) Addr() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ln == nil {
		return ""
	}
	return r.ln.Addr().String()
}

// MirrorURL is the URL to configure as the mirror of upstream host, e.g.
// "http://127.0.0.1:34567/h/registry.k8s.io". containerd appends "/v2".
func (r *Registry) MirrorURL(host string) string {
	return "http://" + r.Addr() + "/h/" + host
}

// Close stops serving. It is safe to call more than once.
func (r *Registry) Close() error {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("registry: close: %w", err)
	}
	return nil
}

// ServeHTTP implements the read-only distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	host := req.URL.Query().Get("ns")
	p := req.URL.Path
	if rest, ok := strings.CutPrefix(p, "/h/"); ok {
		h, tail, found := strings.Cut(rest, "/")
		if !found {
			regError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
			return
		}
		host, p = h, "/"+tail
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		regError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only")
		return
	}
	if p == "/v2" || p == "/v2/" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			w.Write([]byte("{}")) //nolint:errcheck
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		regError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
		return
	}
	var name, kind, reference string
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		name, kind, reference = rest[:i], "manifests", rest[i+len("/manifests/"):]
	} else if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		name, kind, reference = rest[:i], "blobs", rest[i+len("/blobs/"):]
	} else {
		regError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
		return
	}
	repo := r.lookup(host, name)
	if repo == nil {
		regError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
		return
	}
	var blob Blob
	found := false
	r.mu.RLock()
	if kind == "manifests" {
		digest := reference
		if !strings.HasPrefix(reference, "sha256:") {
			digest = repo.tags[reference]
		}
		blob, found = repo.blobs[digest]
		found = found && (blob.MediaType == MediaTypeManifest || blob.MediaType == MediaTypeIndex)
	} else {
		blob, found = repo.blobs[reference]
	}
	r.mu.RUnlock()
	if !found {
		if kind == "manifests" {
			regError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
		} else {
			regError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		}
		return
	}
	ct := blob.MediaType
	if kind == "blobs" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Docker-Content-Digest", blob.Digest)
	w.Header().Set("Content-Length", strconv.Itoa(len(blob.Data)))
	w.Header().Set("Etag", `"`+blob.Digest+`"`)
	if kind == "blobs" {
		// Supports Range requests, which containerd uses to resume.
		http.ServeContent(w, req, "", epoch, bytes.NewReader(blob.Data))
		return
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		w.Write(blob.Data) //nolint:errcheck
	}
}

func (r *Registry) lookup(host, name string) *repository {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if host != "" {
		if host == "index.docker.io" || host == "registry-1.docker.io" {
			host = "docker.io"
		}
		return r.repos[repoKey{host, name}]
	}
	var keys []repoKey
	for k := range r.repos {
		if k.repo == name {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].host < keys[j].host })
	return r.repos[keys[0]]
}

type regErrorBody struct {
	Errors []regErrorEntry `json:"errors"`
}

type regErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func regError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(regErrorBody{Errors: []regErrorEntry{{Code: code, Message: msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
