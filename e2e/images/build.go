// Package images builds the project's OCI images without Docker. An image
// is one layer with a minimal /etc and /tmp and static binaries (Go
// packages, of this module or of a module go.mod requires, all compiled by
// one `go build`, or prebuilt upstream binaries from the tools directory),
// plus any files the row makes (such as a TLS certificate and key); the
// catalog ([Catalog]) lists the images as data.
//
// [Build] writes each image as a docker-archive tarball <out>/<name>.tar
// tagged <prefix>/<name>:<tag> (default localhost/ambientlite/<name>:dev),
// or with the row's fixed reference, for a stand-in for an upstream image
// (echo-advanced is registry.k8s.io/gateway-api/echo-advanced:v1.5.1, the
// Gateway API conformance suite's echo app, built from Istio's source).
// Builds are deterministic: the same inputs give the same digest. [Import]
// loads a tarball into the local cluster's containerd with ctr, where pods
// use it with imagePullPolicy: IfNotPresent; [Push] sends it to a registry
// instead, every image as <prefix>/<name>:<tag> (fixed references
// included). [Run] is the images command (e2e/cmd/images, `make images`).
package images

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Defaults of Options.
const (
	DefaultPrefix = "localhost/ambientlite"
	DefaultTag    = "dev"
	// ModulePath is the Go module whose root Build looks for.
	ModulePath = "github.com/ambientlite/mesh"
)

// Options says which images Build makes and where. The zero value builds
// every available image into <module root>/_output/images.
type Options struct {
	// ModuleRoot is the root of this Go module, where `go build` runs.
	// Default: found by walking up from the working directory to the
	// go.mod of ModulePath.
	ModuleRoot string
	// ToolsDir holds the prebuilt upstream binaries (coredns). Default
	// none: images that need one are skipped, unless named in Names.
	ToolsDir string
	// OutDir receives the tarballs, <OutDir>/<name>.tar. Default
	// <ModuleRoot>/_output/images.
	OutDir string
	// Prefix is the repository prefix: images are <Prefix>/<name>:<Tag>,
	// except that one with a fixed [Image.Ref] is tagged with that (only
	// its [Built.PushRef] uses Prefix and Tag). Default DefaultPrefix.
	Prefix string
	// Tag is the images' tag. Default DefaultTag.
	Tag string
	// Names are the images to build, in this order. Default: every
	// catalog image whose inputs are available. Naming an image whose
	// prebuilt binary is missing is an error.
	Names []string
	// Logger receives notes such as skipped images. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	prefix, tag := cmp.Or(o.Prefix, DefaultPrefix), cmp.Or(o.Tag, DefaultTag)
	if _, err := name.NewTag(prefix + "/image:" + tag); err != nil {
		errs = append(errs, fmt.Errorf("prefix %q and tag %q do not make an image reference: %w", prefix, tag, err))
	}
	for _, n := range o.Names {
		if _, err := Lookup(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() (Options, error) {
	o.Prefix = strings.TrimSuffix(cmp.Or(o.Prefix, DefaultPrefix), "/")
	o.Tag = cmp.Or(o.Tag, DefaultTag)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	if o.ModuleRoot == "" {
		wd, err := os.Getwd()
		if err != nil {
			return o, err
		}
		if o.ModuleRoot, err = FindModuleRoot(wd); err != nil {
			return o, err
		}
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(o.ModuleRoot, "_output", "images")
	}
	return o, nil
}

// Built is one image Build wrote.
type Built struct {
	Name string
	// Ref is the reference the tarball is tagged with, the one Import
	// gives the image in containerd: the row's fixed [Image.Ref], or else
	// <prefix>/<name>:<tag>.
	Ref string
	// PushRef is where the image goes when pushed, <prefix>/<name>:<tag>,
	// for a row with a fixed Ref too: a registry of ours cannot hold
	// another registry's names. Equal to Ref for the other rows.
	PushRef string
	// Digest is the manifest digest, "sha256:...", as a registry knows
	// the image after Push. (`ctr images import` writes a manifest of its
	// own for a docker archive, so containerd lists another digest.)
	Digest string
	// ID is the config digest, "sha256:...": the image ID containerd,
	// crictl and the kubelet show, the same however the image travels.
	ID string
	// Size is the tarball's size in bytes.
	Size int64
	// Tarball is the docker-archive file, <OutDir>/<name>.tar.
	Tarball string
}

// Build compiles the Go binaries of the chosen images (one `go build` for
// all of them), wraps each image's binaries and files in its image and
// writes the tarballs.
func Build(ctx context.Context, opts Options) ([]Built, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rows, skipped, err := choose(catalog, opts.Names, opts.ToolsDir)
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		opts.Logger.Info("skipping image", "image", s.name, "reason", s.reason)
	}
	if len(rows) == 0 {
		return nil, nil
	}

	binDir, err := os.MkdirTemp("", "ambientlite-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	var pkgs []string
	for _, r := range rows {
		for _, b := range r.Binaries() {
			if b.Package != "" && !slices.Contains(pkgs, b.Package) {
				pkgs = append(pkgs, b.Package)
			}
		}
	}
	if err := goBuild(ctx, opts.Logger, opts.ModuleRoot, binDir, pkgs); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}

	var built []Built
	for _, r := range rows {
		if err := ctx.Err(); err != nil {
			return built, err
		}
		bins := map[string]string{}
		for _, b := range r.Binaries() {
			bins[b.Path] = filepath.Join(opts.ToolsDir, b.Tool)
			if b.Package != "" {
				bins[b.Path] = filepath.Join(binDir, path.Base(b.Package))
			}
		}
		pushRef := opts.Prefix + "/" + r.Name + ":" + opts.Tag
		b, err := buildOne(r, bins, r.RefOrDefault(opts.Prefix, opts.Tag), pushRef, filepath.Join(opts.OutDir, r.Name+".tar"))
		if err != nil {
			return built, err
		}
		opts.Logger.Debug("built image", "image", b.Ref, "digest", b.Digest)
		built = append(built, b)
	}
	return built, nil
}

// buildOne wraps the binaries (host files keyed by their path in the
// image) in row's image and writes it, tagged ref, to tarPath (through a
// temporary file, so a reader never sees half a tarball).
func buildOne(row Image, bins map[string]string, ref, pushRef, tarPath string) (Built, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return Built{}, fmt.Errorf("image %s: %w", row.Name, err)
	}
	if _, err := name.NewTag(pushRef); err != nil {
		return Built{}, fmt.Errorf("image %s: %w", row.Name, err)
	}
	binaries := map[string][]byte{}
	for imgPath, bin := range bins {
		if binaries[imgPath], err = os.ReadFile(bin); err != nil {
			return Built{}, fmt.Errorf("image %s: read binary for %s: %w", row.Name, imgPath, err)
		}
	}
	img, err := newImage(row, binaries)
	if err != nil {
		return Built{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Built{}, fmt.Errorf("image %s: digest: %w", row.Name, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return Built{}, fmt.Errorf("image %s: config digest: %w", row.Name, err)
	}
	tmp := tarPath + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return Built{}, fmt.Errorf("image %s: write %s: %w", row.Name, tarPath, err)
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		os.Remove(tmp)
		return Built{}, fmt.Errorf("image %s: %w", row.Name, err)
	}
	fi, err := os.Stat(tarPath)
	if err != nil {
		return Built{}, err
	}
	return Built{Name: row.Name, Ref: tag.String(), PushRef: pushRef, Digest: digest.String(), ID: id.String(), Size: fi.Size(), Tarball: tarPath}, nil
}

// skip is an image Build leaves out, and why.
type skip struct{ name, reason string }

// choose returns the rows to build for names (all of rows when empty) and
// those left out for want of a prebuilt binary in toolsDir. A named image
// with a binary missing is an error.
func choose(rows []Image, names []string, toolsDir string) ([]Image, []skip, error) {
	explicit := len(names) > 0
	if !explicit {
		for _, r := range rows {
			names = append(names, r.Name)
		}
	}
	var chosen []Image
	var skipped []skip
	var errs []error
	for _, n := range names {
		r, err := lookup(rows, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.ContainsFunc(chosen, func(c Image) bool { return c.Name == n }) {
			continue
		}
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if tool, missing := missingTool(r, toolsDir); missing != "" {
			if explicit {
				errs = append(errs, fmt.Errorf("image %s needs the prebuilt binary %s: %s", r.Name, tool, missing))
			} else {
				skipped = append(skipped, skip{r.Name, missing})
			}
			continue
		}
		chosen = append(chosen, r)
	}
	return chosen, skipped, errors.Join(errs...)
}

// missingTool returns the first prebuilt binary of row that cannot be
// found in toolsDir, and why; or "", "".
func missingTool(row Image, toolsDir string) (tool, why string) {
	for _, b := range row.Binaries() {
		if b.Tool == "" {
			continue
		}
		if why := toolMissing(toolsDir, b.Tool); why != "" {
			return b.Tool, why
		}
	}
	return "", ""
}

// toolMissing says why tool cannot be found in toolsDir, or returns "".
func toolMissing(toolsDir, tool string) string {
	if toolsDir == "" {
		return "no tools dir given (--tools-dir, e.g. the directory e2e/cluster/build-tools.sh prints)"
	}
	fi, err := os.Stat(filepath.Join(toolsDir, tool))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s is not in the tools dir %s (e2e/cluster/build-tools.sh builds it)", tool, toolsDir)
	case err != nil:
		return err.Error()
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%s is not a regular file", filepath.Join(toolsDir, tool))
	}
	return ""
}

// goBuild compiles pkgs, static for linux/GOARCH, into dir with a single
// `go build` run in moduleRoot; packages of other modules build at the
// versions go.mod gives. Each binary is named for its package's last path
// element. VCS stamping is off so that a binary, hence its image, depends
// on the source alone.
func goBuild(ctx context.Context, log *slog.Logger, moduleRoot, dir string, pkgs []string) error {
	if len(pkgs) == 0 {
		return nil
	}
	bases := map[string]string{}
	for _, p := range pkgs {
		b := path.Base(p)
		if other, ok := bases[b]; ok {
			return fmt.Errorf("packages %s and %s both build a binary named %s", other, p, b)
		}
		bases[b] = p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go is not on PATH (add /usr/local/go/bin): %w", err)
	}
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	log.Info("compiling", "packages", strings.Join(pkgs, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// FindModuleRoot returns the directory, dir or above, holding the go.mod of
// ModulePath. A go.mod of another module (such as a nested tools module) is
// passed over.
func FindModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if modulePath(filepath.Join(d, "go.mod")) == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of %s in %s or above: run from the Ambient Lite checkout", ModulePath, dir)
		}
	}
}

// modulePath returns the module path a go.mod declares, or "".
func modulePath(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
