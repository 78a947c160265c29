package images

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// catalog lists every image the project builds. Adding an image is adding a
// row; the zero value of every optional field is documented on [Image].
var catalog = []Image{
	{Name: "meshecho", Package: "./e2e/cmd/meshecho", Ports: []string{"8080/tcp", "9090/tcp", "9000/tcp"}},
	{Name: "pause", Package: "./e2e/cmd/pause", Path: "/pause"},
	{Name: "coredns", Tool: "coredns", Path: "/coredns", Ports: []string{"53/udp", "53/tcp"}},
}

// Image is one row of the catalog: where an image's binary comes from and
// how the image wraps it. The image holds that binary alone, on top of a
// minimal /etc and /tmp.
type Image struct {
	// Name names the image: <prefix>/<Name>:<tag>.
	Name string
	// Package is the Go package of this module that builds the binary,
	// relative to the module root ("./e2e/cmd/pause"). Exactly one of
	// Package and Tool is set.
	Package string
	// Tool is the file name of a prebuilt binary in the tools directory
	// (an upstream build such as coredns, see e2e/cluster/build-tools.sh).
	Tool string
	// Path is where the binary goes in the image. Default
	// /usr/local/bin/<Name>.
	Path string
	// Entrypoint is the image's entrypoint. Default [Path].
	Entrypoint []string
	// Ports are the exposed ports, as "<number>/<tcp|udp>". Default none.
	Ports []string
	// Env is the environment the image adds after PATH, as "KEY=value".
	// Default none.
	Env []string
}

// BinaryPath is where the binary goes in the image: Path, or its default.
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

// Validate reports a row that cannot be built.
func (img Image) Validate() error {
	var errs []error
	if img.Name == "" || strings.Trim(img.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		errs = append(errs, fmt.Errorf("name %q: want lowercase letters, digits and dashes", img.Name))
	}
	switch {
	case (img.Package == "") == (img.Tool == ""):
		errs = append(errs, errors.New("set exactly one of Package and Tool"))
	case img.Package != "" && (!strings.HasPrefix(img.Package, "./") || path.Clean(img.Package) != img.Package[2:]):
		errs = append(errs, fmt.Errorf("package %q: want a clean path relative to the module root, like ./e2e/cmd/pause", img.Package))
	case img.Tool != "" && (strings.Contains(img.Tool, "/") || img.Tool == "." || img.Tool == ".."):
		errs = append(errs, fmt.Errorf("tool %q: want a file name in the tools dir", img.Tool))
	}
	if p := img.BinaryPath(); !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		errs = append(errs, fmt.Errorf("path %q: want a clean absolute file path", p))
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

// Catalog returns every image the project builds, in build order.
func Catalog() []Image {
	rows := slices.Clone(catalog)
	for i := range rows {
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
