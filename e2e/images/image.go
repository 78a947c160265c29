package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Every image carries the label SourceLabel=Source, naming where it is built from.
const (
	SourceLabel = "org.opencontainers.image.source"
	Source      = "github.com/ambientlite/mesh"
)

// imagePATH is the image's PATH.
const imagePATH = "PATH=/usr/local/bin:/usr/bin:/bin"

// epoch is the modification time of every file in every image, so the same
// binary always gives the same layer and the same digest.
var epoch = time.Unix(0, 0).UTC()

// The minimal /etc every image carries: root and nobody, and name
// resolution from /etc/hosts then DNS (Go's resolver reads nsswitch.conf).
const (
	etcPasswd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	etcGroup  = "root:x:0:\nnobody:x:65534:\n"
	etcNSS    = "hosts: files dns\n"
)

// newImage returns row's image: one layer with binaries (keyed by their
// path in the image, one for each of row.Binaries()) and row.Files, a
// config naming the entrypoint and platform, and nothing that varies
// between builds.
func newImage(row Image, binaries map[string][]byte) (v1.Image, error) {
	if err := row.Validate(); err != nil {
		return nil, err
	}
	var files []layerFile
	for _, b := range row.Binaries() {
		body, ok := binaries[b.Path]
		if !ok {
			return nil, fmt.Errorf("image %s: no binary for %s", row.Name, b.Path)
		}
		files = append(files, layerFile{path: b.Path, mode: 0o755, body: body})
	}
	if len(binaries) != len(files) {
		return nil, fmt.Errorf("image %s: %d binaries given for %d paths", row.Name, len(binaries), len(files))
	}
	for _, f := range row.Files {
		body, err := f.Contents()
		if err != nil {
			return nil, fmt.Errorf("image %s: contents of %s: %w", row.Name, f.Path, err)
		}
		files = append(files, layerFile{path: f.Path, mode: int64(f.perm()), body: body})
	}
	layerTar, err := rootFS(files)
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", row.Name, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", row.Name, err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       config(row),
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", row.Name, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "ambientlite images: " + row.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: add layer: %w", row.Name, err)
	}
	return img, nil
}

// config is row's runtime configuration.
func config(row Image) v1.Config {
	c := v1.Config{
		Entrypoint: slices.Clone(row.EntrypointOrDefault()),
		Env:        append([]string{imagePATH}, row.Env...),
		Labels:     map[string]string{SourceLabel: Source},
	}
	if len(row.Ports) > 0 {
		c.ExposedPorts = make(map[string]struct{}, len(row.Ports))
		for _, p := range row.Ports {
			c.ExposedPorts[p] = struct{}{}
		}
	}
	return c
}

// layerFile is a regular file of an image's layer.
type layerFile struct {
	path string // absolute, clean
	mode int64  // permission bits
	body []byte
}

// rootFS returns the uncompressed tar of the image's file system: files and
// their parent directories, /tmp (1777) and /etc, everything owned by root,
// in path order, with fixed times. A file whose path is taken by another
// file or directory is an error.
func rootFS(files []layerFile) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	entries := map[string]entry{}
	dir := func(name string, mode int64) {
		entries[name] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
	}
	file := func(name string, mode int64, body []byte) {
		entries[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
	}
	dir("etc", 0o755)
	file("etc/passwd", 0o644, []byte(etcPasswd))
	file("etc/group", 0o644, []byte(etcGroup))
	file("etc/nsswitch.conf", 0o644, []byte(etcNSS))
	dir("tmp", 0o1777)
	size := 16 << 10
	for _, f := range files {
		name := strings.TrimPrefix(f.path, "/")
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			e, ok := entries[d]
			if !ok {
				dir(d, 0o755)
			} else if e.hdr.Typeflag != tar.TypeDir {
				return nil, fmt.Errorf("path %s: its directory /%s is a file", f.path, d)
			}
		}
		if e, ok := entries[name]; ok {
			return nil, fmt.Errorf("path %s clashes with %s", f.path, e.hdr.Name)
		}
		file(name, f.mode, f.body)
		size += len(f.body) + 1024
	}

	var buf bytes.Buffer
	buf.Grow(size)
	tw := tar.NewWriter(&buf)
	for _, key := range slices.Sorted(maps.Keys(entries)) {
		e := entries[key]
		e.hdr.Uname, e.hdr.Gname = "root", "root"
		e.hdr.ModTime = epoch
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
