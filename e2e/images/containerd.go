package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Defaults of Import: the local cluster's containerd (e2e/cluster), its
// CRI namespace and the snapshotter its CRI plugin uses.
const (
	DefaultContainerdAddress = "/run/containerd/containerd.sock"
	DefaultNamespace         = "k8s.io"
	DefaultSnapshotter       = "overlayfs"
)

// ErrNoContainerd means there is no containerd to import into, or no ctr
// to talk to it with.
var ErrNoContainerd = errors.New("cannot import into containerd")

// ImportOption changes one of Import's defaults.
type ImportOption func(*importConfig)

type importConfig struct {
	address, namespace, snapshotter string
}

// WithAddress imports into the containerd listening on socket. Default
// DefaultContainerdAddress.
func WithAddress(socket string) ImportOption {
	return func(c *importConfig) { c.address = socket }
}

// WithNamespace imports into containerd namespace ns. Default
// DefaultNamespace, the one the kubelet's images live in.
func WithNamespace(ns string) ImportOption {
	return func(c *importConfig) { c.namespace = ns }
}

// WithSnapshotter unpacks the image for snapshotter. Default
// DefaultSnapshotter, the CRI plugin's.
func WithSnapshotter(name string) ImportOption {
	return func(c *importConfig) { c.snapshotter = name }
}

// Import loads the docker-archive tarball at tarPath into containerd with
// `ctr images import`, unpacked, so a pod can use it at once with
// imagePullPolicy: IfNotPresent. The image keeps the reference it is
// tagged with in the tarball. ctr must be on PATH (the containerd package).
func Import(ctx context.Context, tarPath string, opts ...ImportOption) error {
	c := importConfig{address: DefaultContainerdAddress, namespace: DefaultNamespace, snapshotter: DefaultSnapshotter}
	for _, o := range opts {
		o(&c)
	}
	if fi, err := os.Stat(c.address); err != nil || fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: containerd is not running at %s: run `make cluster-up` first", ErrNoContainerd, c.address)
	}
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		return fmt.Errorf("%w: ctr is not on PATH: install Debian's containerd package (`make tools`)", ErrNoContainerd)
	}
	if _, err := os.Stat(tarPath); err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	cmd := exec.CommandContext(ctx, ctr,
		"--address", c.address, "--namespace", c.namespace, "--connect-timeout", "10s",
		"images", "import", "--no-unpack=false", "--snapshotter", c.snapshotter, tarPath)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import %s into containerd at %s: %s: %w\n%s", tarPath, c.address, strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
