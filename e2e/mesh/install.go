// Package mesh puts Ambient Lite on the local cluster for the end-to-end
// tests and the Gateway API conformance run: the CRDs, istiod-lite and the
// ztunnel DaemonSet, from crds/ and install/manifests/ of this module.
package mesh

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ambientlite/mesh/e2e/cluster"
)

// LocalCNIBinDir is where the local cluster's containerd looks for CNI
// plugins (Debian's containernetworking-plugins); ztunnel's node agent
// installs its plugin there.
const LocalCNIBinDir = "/usr/lib/cni"

// Install applies the Gateway API (experimental channel) and
// security.istio.io CRDs, istiod-lite and ztunnel (pointed at the local
// cluster's CNI directories) and waits until both are rolled out. Both are
// restarted, so that images loaded since the last install run. c must be the
// Config cluster.Up returned (ModuleRoot and ToolsDir filled in).
func Install(ctx context.Context, c cluster.Config) error {
	root := c.ModuleRoot
	steps := [][]string{
		{"apply", "--server-side", "--force-conflicts",
			"-f", filepath.Join(root, "crds/gateway-api-experimental.yaml"),
			"-f", filepath.Join(root, "crds/security.istio.io.yaml")},
		{"wait", "--for=condition=Established", "--timeout=60s", "crd/gateways.gateway.networking.k8s.io", "crd/httproutes.gateway.networking.k8s.io", "crd/authorizationpolicies.security.istio.io", "crd/peerauthentications.security.istio.io"},
		{"apply", "--server-side", "--force-conflicts", "-f", filepath.Join(root, "install/manifests/istiod-lite.yaml")},
		{"-n", "istio-system", "rollout", "restart", "deployment/istiod"},
		{"-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=180s"},
	}
	for _, s := range steps {
		if _, err := c.Kubectl(ctx, nil, s...); err != nil {
			return err
		}
	}
	zt, err := os.ReadFile(filepath.Join(root, "install/manifests/ztunnel.yaml"))
	if err != nil {
		return fmt.Errorf("read the ztunnel manifest: %w", err)
	}
	manifest := strings.NewReplacer("/opt/cni/bin", LocalCNIBinDir, "/etc/cni/net.d", c.CNIConfDir()).Replace(string(zt))
	for _, s := range [][]string{
		{"apply", "--server-side", "--force-conflicts", "-f", "-"},
		{"-n", "istio-system", "rollout", "restart", "daemonset/ztunnel"},
		{"-n", "istio-system", "rollout", "status", "daemonset/ztunnel", "--timeout=180s"},
	} {
		var in io.Reader
		if s[0] == "apply" {
			in = strings.NewReader(manifest)
		}
		if _, err := c.Kubectl(ctx, in, s...); err != nil {
			return err
		}
	}
	return nil
}
