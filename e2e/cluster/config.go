// Package cluster starts and stops a real single-node Kubernetes cluster on
// this machine: upstream etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet, kube-proxy and CoreDNS, with Debian's containerd,
// runc and CNI plugins. It is what `make cluster-up` / `make cluster-down`
// run and what the Go e2e tests start.
//
// Every process it starts is recorded by PID (with its start time, so a
// recycled PID is never signalled) and placed in a cgroup of its own; every
// host change (an address on lo, sysctls, firewall rules, mounts) is undone
// by Down. Up is idempotent: on a healthy cluster it returns at once, and on
// the remains of a run that died half-way it cleans up first.
//
// Traffic never leaves the machine: pods sit on a bridge with no
// masquerading and a guard nftables table drops any packet to or from the
// node, pod or service ranges that would leave through an interface other
// than lo and the pod bridge.
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/ambientlite/mesh/e2e/images"
)

// Config describes the local cluster. The zero value is valid: every empty
// field takes the default documented on it.
type Config struct {
	// StateDir holds certificates, kubeconfigs, etcd data, containerd's
	// root, logs and PID files. Default /var/lib/ambient-lite/cluster.
	StateDir string
	// ToolsDir holds the upstream binaries (kube-apiserver, kubelet, etcd,
	// coredns, ...). Default: the directory build-tools.sh prints, which
	// builds them on first use.
	ToolsDir string
	// ModuleRoot is the root of this Go module, used to build images and
	// find build-tools.sh. Default: found by walking up from the working
	// directory to go.mod.
	ModuleRoot string
	// NodeName is the Kubernetes node's name. Default "ambient-lite".
	NodeName string
	// NodeIP is a /32 added to lo; the API server and kubelet bind to it.
	// Default 10.250.0.1.
	NodeIP netip.Addr
	// PodCIDR is the range of the pod bridge. Default 10.244.0.0/24.
	PodCIDR netip.Prefix
	// ServiceCIDR is the ClusterIP range. Default 10.96.0.0/16.
	ServiceCIDR netip.Prefix
	// ClusterDomain is the DNS domain of the cluster. Default cluster.local.
	ClusterDomain string
	// ImagePrefix and ImageTag name the images the cluster itself uses
	// (pause, coredns). Defaults localhost/ambientlite and dev.
	ImagePrefix string
	ImageTag    string
}

// Defaults of Config.
const (
	DefaultStateDir      = "/var/lib/ambient-lite/cluster"
	DefaultNodeName      = "ambient-lite"
	DefaultClusterDomain = "cluster.local"
	DefaultImagePrefix   = "localhost/ambientlite"
	DefaultImageTag      = "dev"
	bridgeName           = "cni0"
	containerdSocket     = "/run/containerd/containerd.sock"
	containerdState      = "/run/containerd"
	kubeletRoot          = "/var/lib/kubelet"
	guardTable           = "ambient_lite_guard"
	apiPort              = 6443
)

var (
	DefaultNodeIP      = netip.MustParseAddr("10.250.0.1")
	DefaultPodCIDR     = netip.MustParsePrefix("10.244.0.0/24")
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
)

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() (Config, error) {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName
	}
	if !c.NodeIP.IsValid() {
		c.NodeIP = DefaultNodeIP
	}
	if !c.PodCIDR.IsValid() {
		c.PodCIDR = DefaultPodCIDR
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = DefaultServiceCIDR
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	if c.ImagePrefix == "" {
		c.ImagePrefix = DefaultImagePrefix
	}
	if c.ImageTag == "" {
		c.ImageTag = DefaultImageTag
	}
	if c.ModuleRoot == "" {
		wd, err := os.Getwd()
		if err != nil {
			return c, err
		}
		if c.ModuleRoot, err = images.FindModuleRoot(wd); err != nil {
			return c, err
		}
	}
	return c, c.Validate()
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.NodeIP.IsValid() && (!c.NodeIP.Is4() || c.NodeIP.IsLoopback()) {
		errs = append(errs, fmt.Errorf("node IP %s: must be a non-loopback IPv4 address (kubelet rejects loopback)", c.NodeIP))
	}
	if c.PodCIDR.IsValid() && (!c.PodCIDR.Addr().Is4() || c.PodCIDR.Bits() > 28) {
		errs = append(errs, fmt.Errorf("pod CIDR %s: must be IPv4 and at least a /28", c.PodCIDR))
	}
	if c.ServiceCIDR.IsValid() && (!c.ServiceCIDR.Addr().Is4() || c.ServiceCIDR.Bits() > 24) {
		errs = append(errs, fmt.Errorf("service CIDR %s: must be IPv4 and at least a /24", c.ServiceCIDR))
	}
	if c.PodCIDR.IsValid() && c.ServiceCIDR.IsValid() && c.PodCIDR.Overlaps(c.ServiceCIDR) {
		errs = append(errs, fmt.Errorf("pod CIDR %s overlaps service CIDR %s", c.PodCIDR, c.ServiceCIDR))
	}
	if c.NodeIP.IsValid() && (c.PodCIDR.Contains(c.NodeIP) || c.ServiceCIDR.Contains(c.NodeIP)) {
		errs = append(errs, fmt.Errorf("node IP %s lies inside the pod or service range", c.NodeIP))
	}
	return errors.Join(errs...)
}

// KubeconfigPath is where the cluster's admin kubeconfig is written; it
// stays the same across restarts.
func (c Config) KubeconfigPath() string {
	dir := c.StateDir
	if dir == "" {
		dir = DefaultStateDir
	}
	return filepath.Join(dir, "kubeconfig")
}

// apiServerServiceIP is the first address of the service range (kubernetes.default).
func (c Config) apiServerServiceIP() netip.Addr { return c.ServiceCIDR.Masked().Addr().Next() }

// dnsServiceIP is the ClusterIP of kube-dns: the tenth address of the range.
func (c Config) dnsServiceIP() netip.Addr {
	a := c.ServiceCIDR.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	return a
}

// bridgeIP is the pod bridge's own address (the pods' gateway).
func (c Config) bridgeIP() netip.Addr { return c.PodCIDR.Masked().Addr().Next() }

func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

// toolsDirFile records the ToolsDir of the running cluster, for Status.
func (c Config) toolsDirFile() string { return c.path("tools-dir") }

// withRecordedTools fills in ToolsDir from the running cluster's record.
func (c Config) withRecordedTools() Config {
	if c.ToolsDir == "" {
		if b, err := os.ReadFile(c.toolsDirFile()); err == nil {
			c.ToolsDir = strings.TrimSpace(string(b))
		}
	}
	return c
}
