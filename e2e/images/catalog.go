package images

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// catalog lists every image the project builds. Adding an image is adding a
// row; the zero value of every optional field is documented on [Image].
var catalog = []Image{
	{Name: "istiod-lite", Package: "./istiod-lite/cmd/istiod-lite", Ports: []string{"15012/tcp", "15014/tcp", "8080/tcp"}},
	{Name: "ztunnel", Package: "./ztunnel/cmd/ztunnel", ExtraBinaries: []Binary{{Package: "./ztunnel/cmd/ambient-cni", Path: "/usr/local/bin/ambient-cni"}}, Ports: []string{"15020/tcp", "15021/tcp"}},
	{Name: "meshecho", Package: "./e2e/cmd/meshecho", Ports: []string{"8080/tcp", "9090/tcp", "9000/tcp"}},
	{Name: "waypoint", Package: "./waypoint/cmd/waypoint", Ports: []string{"15008/tcp", "15020/tcp", "15021/tcp"}},
	{Name: "pause", Package: "./e2e/cmd/pause", Path: "/pause"},
	{Name: "coredns", Tool: "coredns", Path: "/coredns", Ports: []string{"53/udp", "53/tcp"}},
	// Istio's echo app under the name the Gateway API conformance suite's
	// mesh tests run (sigs.k8s.io/gateway-api/conformance, mesh/manifests.yaml):
	// the server as entrypoint, the `client` the tests kubectl exec into the
	// pod on PATH, and the TLS pair its --crt=/cert.crt --key=/cert.key name.
	{Name: "echo-advanced", Ref: "registry.k8s.io/gateway-api/echo-advanced:v1.5.1", Package: "istio.io/istio/pkg/test/echo/cmd/server", Path: "/usr/local/bin/server", ExtraBinaries: []Binary{{Package: "istio.io/istio/pkg/test/echo/cmd/client", Path: "/usr/local/bin/client"}}, Files: selfSignedFiles("/cert.crt", "/cert.key", "echo")},
}

// Image is one row of the catalog: where an image's binaries come from and
// how the image wraps them. The image holds its main binary, any
// ExtraBinaries and Files, on top of a minimal /etc and /tmp.
type Image struct {
	// Name names the image: <prefix>/<Name>:<tag>, and its tarball,
	// <Name>.tar. It is what --only takes.
	Name string
	// Ref, when set, is the image's fixed reference, such as
	// "registry.k8s.io/gateway-api/echo-advanced:v1.5.1": the image is
	// tagged with it whatever the prefix and tag, so that a pod naming that
	// upstream image finds ours in containerd (imagePullPolicy:
	// IfNotPresent) without a registry. Pushing ignores it: a registry of
	// ours cannot hold another registry's names, so --push sends the image
	// to <prefix>/<Name>:<tag> like any other. Default "": <prefix>/<Name>:<tag>.
	Ref string

	// Package is the Go package that builds the main binary: a package of
	// this module, relative to the module root ("./e2e/cmd/pause"), or the
	// import path of a package in a module go.mod requires
	// ("istio.io/istio/pkg/test/echo/cmd/server"; e2e/images/upstream.go
	// keeps such modules in go.mod). Every package is compiled by the same
	// single `go build`. Exactly one of Package and Tool is set.
	Package string
	// Tool is the file name of a prebuilt main binary in the tools
	// directory (an upstream build such as coredns, see
	// e2e/cluster/build-tools.sh).
	Tool string
	// Path is where the main binary goes in the image. Default
	// /usr/local/bin/<Name>.
	Path string
	// ExtraBinaries are more binaries the image holds beside the main one,
	// each with its own Path. Default none.
	ExtraBinaries []Binary
	// Files are files the image holds beside its binaries. Default none.
	Files []File

	// Entrypoint is the image's entrypoint. Default [Path].
	Entrypoint []string
	// Ports are the exposed ports, as "<number>/<tcp|udp>". Default none.
	Ports []string
	// Env is the environment the image adds after PATH
	// (/usr/local/bin:/usr/bin:/bin), as "KEY=value". Default none.
	Env []string
}

// Binary is a binary an image holds beside its main one.
type Binary struct {
	// Package is the Go package that builds it, as [Image.Package].
	// Exactly one of Package and Tool is set.
	Package string
	// Tool is the file name of a prebuilt binary in the tools directory,
	// as [Image.Tool].
	Tool string
	// Path is where the binary goes in the image, a clean absolute path.
	// Required.
	Path string
}

// File is a file an image holds beside its binaries.
type File struct {
	// Path is where the file goes in the image, a clean absolute path.
	// Required.
	Path string
	// Mode is the file's permission bits. Default 0644.
	Mode fs.FileMode
	// Contents returns the file's bytes when the image is built. It must
	// return the same bytes on every call, since an image's digest depends
	// on its inputs alone. Required.
	Contents func() ([]byte, error)
}

// perm is the file's permission bits: Mode, or its default.
func (f File) perm() fs.FileMode {
	if f.Mode == 0 {
		return 0o644
	}
	return f.Mode
}

// BinaryPath is where the main binary goes in the image: Path, or its default.
func (img Image) BinaryPath() string {
	if img.Path != "" {
		return img.Path
	}
	return "/usr/local/bin/" + img.Name
}

// EntrypointOrDefault is the image's entrypoint: Entrypoint, or its default.
func (img Image) EntrypointOrDefault() []string {
	if len(img.Entrypoint) > 0 {
		return img.Entrypoint
	}
	return []string{img.BinaryPath()}
}

// Binaries returns every binary of the image, the main one (with its
// default Path filled in) first.
func (img Image) Binaries() []Binary {
	first := Binary{Package: img.Package, Tool: img.Tool, Path: img.BinaryPath()}
	return append([]Binary{first}, img.ExtraBinaries...)
}

// RefOrDefault is the reference Build tags the image with: Ref, or
// <prefix>/<Name>:<tag>.
func (img Image) RefOrDefault(prefix, tag string) string {
	if img.Ref != "" {
		return img.Ref
	}
	return prefix + "/" + img.Name + ":" + tag
}

// Validate reports a row that cannot be built.
func (img Image) Validate() error {
	var errs []error
	if img.Name == "" || strings.Trim(img.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		errs = append(errs, fmt.Errorf("name %q: want lowercase letters, digits and dashes", img.Name))
	}
	if img.Ref != "" {
		if _, err := name.NewTag(img.Ref, name.StrictValidation); err != nil {
			errs = append(errs, fmt.Errorf("ref %q: want a full reference, registry/repository:tag: %w", img.Ref, err))
		}
	}
	paths := map[string]bool{}
	usePath := func(what, p string) {
		switch {
		case !path.IsAbs(p) || path.Clean(p) != p || p == "/":
			errs = append(errs, fmt.Errorf("%spath %q: want a clean absolute file path", what, p))
		case paths[p]:
			errs = append(errs, fmt.Errorf("%spath %s: used twice in the image", what, p))
		}
		paths[p] = true
	}
	for i, b := range img.Binaries() {
		what := ""
		if i > 0 {
			what = fmt.Sprintf("extra binary %d: ", i)
		}
		switch {
		case (b.Package == "") == (b.Tool == ""):
			errs = append(errs, fmt.Errorf("%sset exactly one of Package and Tool", what))
		case b.Package != "" && !validPackage(b.Package):
			errs = append(errs, fmt.Errorf("%spackage %q: want a clean path relative to the module root, like ./e2e/cmd/pause, or the import path of a package in a required module, like istio.io/istio/pkg/test/echo/cmd/server", what, b.Package))
		case b.Tool != "" && (strings.Contains(b.Tool, "/") || b.Tool == "." || b.Tool == ".."):
			errs = append(errs, fmt.Errorf("%stool %q: want a file name in the tools dir", what, b.Tool))
		}
		usePath(what, b.Path)
	}
	for i, f := range img.Files {
		what := fmt.Sprintf("file %d: ", i+1)
		usePath(what, f.Path)
		if f.Mode&^fs.ModePerm != 0 {
			errs = append(errs, fmt.Errorf("%smode %v: want permission bits only", what, f.Mode))
		}
		if f.Contents == nil {
			errs = append(errs, fmt.Errorf("%s%s has no Contents", what, f.Path))
		}
	}
	for _, p := range img.Ports {
		num, proto, _ := strings.Cut(p, "/")
		if n, err := strconv.ParseUint(num, 10, 16); err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
			errs = append(errs, fmt.Errorf("port %q: want <1-65535>/<tcp|udp>", p))
		}
	}
	for _, kv := range img.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("env %q: want KEY=value", kv))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("image %q: %w", img.Name, err)
	}
	return nil
}

// validPackage reports whether p names a package the way [Image.Package]
// wants: "./" and a clean relative path, or an import path whose first
// element is a domain name (so not of the standard library).
func validPackage(p string) bool {
	if rel, ok := strings.CutPrefix(p, "./"); ok {
		return rel != "" && path.Clean(rel) == rel && !strings.HasPrefix(rel, "../")
	}
	first, _, _ := strings.Cut(p, "/")
	return path.Clean(p) == p && !path.IsAbs(p) && strings.Contains(first, ".") &&
		!slices.Contains(strings.Split(p, "/"), "..") && !strings.ContainsAny(p, " \\:")
}

// Catalog returns every image the project builds, in build order.
func Catalog() []Image {
	rows := slices.Clone(catalog)
	for i := range rows {
		rows[i].ExtraBinaries = slices.Clone(rows[i].ExtraBinaries)
		rows[i].Files = slices.Clone(rows[i].Files)
		rows[i].Entrypoint = slices.Clone(rows[i].Entrypoint)
		rows[i].Ports = slices.Clone(rows[i].Ports)
		rows[i].Env = slices.Clone(rows[i].Env)
	}
	return rows
}

// Names returns the names of the catalog's images, sorted.
func Names() []string { return names(catalog) }

func names(rows []Image) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// Lookup returns the catalog's image called name.
func Lookup(name string) (Image, error) { return lookup(catalog, name) }

func lookup(rows []Image, name string) (Image, error) {
	for _, r := range rows {
		if r.Name == name {
			return r, nil
		}
	}
	return Image{}, fmt.Errorf("unknown image %q (known: %s)", name, strings.Join(names(rows), ", "))
}
