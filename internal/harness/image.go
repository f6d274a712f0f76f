package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// OCI media types used by the images built here.
const (
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// epoch is the fixed timestamp of every file and config, so that building
// the same ImageSpec twice yields the same digests.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one entry of an image layer. Parent directories are added
// automatically (mode 0755, owned by root) when not listed explicitly.
type File struct {
	Path     string      // absolute or relative path inside the image, e.g. "/bin/sh"
	Mode     os.FileMode // permission bits plus os.ModeDir for a directory
	Data     []byte      // regular file contents
	Linkname string      // if set, the entry is a symlink pointing here
	UID, GID int
}

// ImageConfig is the runtime part of an OCI image config.
type ImageConfig struct {
	Entrypoint   []string
	Cmd          []string
	Env          []string
	User         string
	WorkingDir   string
	Labels       map[string]string
	ExposedPorts []string // e.g. "80/tcp"
	StopSignal   string
}

// ImageSpec describes an image to Build.
type ImageSpec struct {
	// Refs are the full references the image is served as, e.g.
	// "registry.k8s.io/pause:3.10" or "docker.io/library/busybox:latest".
	Refs   []string
	Layers [][]File
	Config ImageConfig
}

// Blob is a content-addressed piece of an image.
type Blob struct {
	MediaType string
	Digest    string // "sha256:<hex>"
	Data      []byte
}

// Size is the length of the blob in bytes.
func (b Blob) Size() int64 { return int64(len(b.Data)) }

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is an OCI platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Descriptor returns the blob's descriptor.
func (b Blob) Descriptor() Descriptor {
	return Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size()}
}

// Image is a built image: a manifest, a config and its layers.
type Image struct {
	Refs     []string
	Manifest Blob
	Config   Blob
	Layers   []Blob
}

// Digest is the manifest digest, which identifies the image.
func (img *Image) Digest() string { return img.Manifest.Digest }

// Blobs returns every blob of the image, manifest first.
func (img *Image) Blobs() []Blob {
	return append([]Blob{img.Manifest, img.Config}, img.Layers...)
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

type ociRuntimeConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

type ociRootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type ociHistory struct {
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
}

type ociImageConfig struct {
	Created      time.Time        `json:"created"`
	Architecture string           `json:"architecture"`
	OS           string           `json:"os"`
	Config       ociRuntimeConfig `json:"config"`
	RootFS       ociRootFS        `json:"rootfs"`
	History      []ociHistory     `json:"history,omitempty"`
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Build builds the image described by spec. The result only depends on
// spec: building the same spec twice gives the same digests.
func Build(spec ImageSpec) (*Image, error) {
	if len(spec.Layers) == 0 {
		return nil, errors.New("build image: at least one layer is required")
	}
	for _, ref := range spec.Refs {
		if _, err := ParseRef(ref); err != nil {
			return nil, fmt.Errorf("build image: %w", err)
		}
	}
	img := &Image{Refs: append([]string(nil), spec.Refs...)}
	cfg := ociImageConfig{
		Created:      epoch,
		Architecture: "amd64",
		OS:           "linux",
		Config: ociRuntimeConfig{
			User:       spec.Config.User,
			Env:        spec.Config.Env,
			Entrypoint: spec.Config.Entrypoint,
			Cmd:        spec.Config.Cmd,
			WorkingDir: spec.Config.WorkingDir,
			Labels:     spec.Config.Labels,
			StopSignal: spec.Config.StopSignal,
		},
		RootFS: ociRootFS{Type: "layers"},
	}
	if len(spec.Config.ExposedPorts) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.Config.ExposedPorts {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	for i, files := range spec.Layers {
		raw, err := layerTar(files)
		if err != nil {
			return nil, fmt.Errorf("build image: layer %d: %w", i, err)
		}
		gz, err := gzipBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("build image: layer %d: %w", i, err)
		}
		img.Layers = append(img.Layers, Blob{MediaType: MediaTypeLayer, Digest: digestOf(gz), Data: gz})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digestOf(raw))
		cfg.History = append(cfg.History, ociHistory{Created: epoch, CreatedBy: fmt.Sprintf("cri-guard harness layer %d", i)})
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("build image: config: %w", err)
	}
	img.Config = Blob{MediaType: MediaTypeConfig, Digest: digestOf(cfgJSON), Data: cfgJSON}
	m := ociManifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: img.Config.Descriptor()}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, l.Descriptor())
	}
	mJSON, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("build image: manifest: %w", err)
	}
	img.Manifest = Blob{MediaType: MediaTypeManifest, Digest: digestOf(mJSON), Data: mJSON}
	return img, nil
}

// layerTar writes files as an uncompressed tar stream, adding missing
// parent directories and rejecting duplicates.
func layerTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	var addDirs func(p string) error
	addDirs = func(p string) error {
		dir := path.Dir(p)
		if dir == "." || dir == "/" || seen[dir] {
			return nil
		}
		if err := addDirs(dir); err != nil {
			return err
		}
		seen[dir] = true
		return tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755,
			ModTime: epoch, Format: tar.FormatPAX,
		})
	}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, fmt.Errorf("invalid path %q", f.Path)
		}
		if seen[p] {
			return nil, fmt.Errorf("duplicate path %q", p)
		}
		if err := addDirs(p); err != nil {
			return nil, err
		}
		seen[p] = true
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    int64(f.Mode.Perm()),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if f.Mode&os.ModeSetuid != 0 {
			hdr.Mode |= 0o4000
		}
		if f.Mode&os.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		if f.Mode&os.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		switch {
		case f.Linkname != "":
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.Linkname
			hdr.Mode = 0o777
		case f.Mode.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		default:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gzipBytes(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteOCIArchive writes imgs as a tar of an OCI image layout, as accepted
// by `ctr images import`. Each ref gets an index entry annotated with both
// io.containerd.image.name (the full ref) and
// org.opencontainers.image.ref.name (the tag).
func WriteOCIArchive(w io.Writer, imgs ...*Image) error {
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)),
			ModTime: epoch, Format: tar.FormatPAX,
		}); err != nil {
			return fmt.Errorf("write oci archive: %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write oci archive: %s: %w", name, err)
		}
		return nil
	}
	idx := ociIndex{SchemaVersion: 2, MediaType: MediaTypeIndex}
	blobs := map[string][]byte{}
	for _, img := range imgs {
		for _, b := range img.Blobs() {
			blobs[b.Digest] = b.Data
		}
		refs := img.Refs
		if len(refs) == 0 {
			refs = []string{""}
		}
		for _, ref := range refs {
			d := img.Manifest.Descriptor()
			d.Platform = &Platform{Architecture: "amd64", OS: "linux"}
			if ref != "" {
				r, err := ParseRef(ref)
				if err != nil {
					return fmt.Errorf("write oci archive: %w", err)
				}
				d.Annotations = map[string]string{
					"io.containerd.image.name":          r.String(),
					"org.opencontainers.image.ref.name": r.Tag,
				}
			}
			idx.Manifests = append(idx.Manifests, d)
		}
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("write oci archive: index: %w", err)
	}
	if err := add("index.json", idxJSON); err != nil {
		return err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write oci archive: %w", err)
	}
	return nil
}

// Ref is a parsed, normalised image reference.
type Ref struct {
	Host   string // registry host, e.g. "docker.io"
	Repo   string // repository path, e.g. "library/busybox"
	Tag    string // tag, empty if Digest is set and no tag was given
	Digest string // "sha256:..." if the ref was pinned
}

// String returns the normalised full reference.
func (r Ref) String() string {
	s := r.Host + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// ParseRef parses and normalises an image reference the way containerd's
// CRI plugin does: "busybox" is "docker.io/library/busybox:latest".
func ParseRef(s string) (Ref, error) {
	var r Ref
	if s == "" {
		return r, errors.New("empty image reference")
	}
	rest := s
	if i := strings.Index(rest, "@"); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if !strings.HasPrefix(r.Digest, "sha256:") || len(r.Digest) != len("sha256:")+64 {
			return Ref{}, fmt.Errorf("image reference %q: invalid digest", s)
		}
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		r.Tag = rest[i+1:]
		rest = rest[:i]
	}
	if first, remainder, ok := strings.Cut(rest, "/"); ok &&
		(strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Host, rest = first, remainder
	} else {
		r.Host = "docker.io"
	}
	if r.Host == "index.docker.io" || r.Host == "registry-1.docker.io" {
		r.Host = "docker.io"
	}
	if r.Host == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	r.Repo = rest
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if r.Repo == "" || strings.HasPrefix(r.Repo, "/") || strings.HasSuffix(r.Repo, "/") || strings.Contains(r.Repo, "//") ||
		r.Repo != strings.ToLower(r.Repo) {
		return Ref{}, fmt.Errorf("image reference %q: invalid repository %q", s, r.Repo)
	}
	return r, nil
}
