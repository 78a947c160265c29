package cluster

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ambientlite/mesh/e2e/images"
)

// Image is the reference of one of the project's images in this cluster:
// <prefix>/<name>:<tag>, or the fixed reference of a catalog image that has
// one (echo-advanced: the upstream name the conformance manifests run).
func (c Config) Image(name string) string {
	prefix, tag := c.ImagePrefix, c.ImageTag
	if prefix == "" {
		prefix = DefaultImagePrefix
	}
	if tag == "" {
		tag = DefaultImageTag
	}
	if img, err := images.Lookup(name); err == nil {
		return img.RefOrDefault(prefix, tag)
	}
	return prefix + "/" + name + ":" + tag
}

// KubectlArgv is the command line that runs the cluster's kubectl with the
// admin kubeconfig; append arguments to it.
func (c Config) KubectlArgv() []string { return c.kubectl() }

// loadClusterImages builds the images the cluster itself runs (the pod
// sandbox and CoreDNS) and imports them into the fresh containerd.
func loadClusterImages(ctx context.Context, c Config, out io.Writer) error {
	return buildAndImport(ctx, c, out, []string{"pause", "coredns"})
}

// EnsureImages builds and imports the named images into the cluster's
// containerd unless it already holds them.
func EnsureImages(ctx context.Context, c Config, out io.Writer, names ...string) error {
	have, err := run(ctx, "ctr", "--address", containerdSocket, "-n", "k8s.io", "images", "list", "-q")
	if err != nil {
		return fmt.Errorf("list images in containerd: %w", err)
	}
	var missing []string
	for _, n := range names {
		if !slices.Contains(strings.Fields(have), c.Image(n)) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return buildAndImport(ctx, c, out, missing)
}

func buildAndImport(ctx context.Context, c Config, out io.Writer, names []string) error {
	built, err := images.Build(ctx, images.Options{
		ModuleRoot: c.ModuleRoot,
		ToolsDir:   c.ToolsDir,
		OutDir:     filepath.Join(c.ModuleRoot, "_output", "images"),
		Prefix:     c.ImagePrefix,
		Tag:        c.ImageTag,
		Names:      names,
	})
	if err != nil {
		return fmt.Errorf("build images %s: %w", strings.Join(names, ", "), err)
	}
	for _, b := range built {
		if err := images.Import(ctx, b.Tarball); err != nil {
			return err
		}
		fmt.Fprintf(out, "    loaded %s\n", b.Ref)
	}
	return nil
}

// CNIConfDir is the directory containerd reads its CNI network
// configuration from (the bridge conflist the cluster writes; the mesh's
// node agent chains its plugin into it).
func (c Config) CNIConfDir() string { return c.path("cni") }
