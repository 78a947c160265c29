//go:build e2e

package e2e

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// localCNIBinDir is where the local cluster's containerd looks for CNI
// plugins (Debian's containernetworking-plugins).
const localCNIBinDir = "/usr/lib/cni"

var (
	installOnce sync.Once
	installErr  error
)

// installMesh applies the CRDs and install/manifests once per test binary
// and waits until istiod-lite is rolled out.
func installMesh(t *testing.T) {
	t.Helper()
	installOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		steps := [][]string{
			{"apply", "--server-side", "--force-conflicts", "-f", "../crds/gateway-api-experimental.yaml", "-f", "../crds/security.istio.io.yaml"},
			{"wait", "--for=condition=Established", "--timeout=60s", "crd/gateways.gateway.networking.k8s.io", "crd/httproutes.gateway.networking.k8s.io", "crd/authorizationpolicies.security.istio.io", "crd/peerauthentications.security.istio.io"},
			{"apply", "--server-side", "--force-conflicts", "-f", "../install/manifests/istiod-lite.yaml"},
			{"-n", "istio-system", "rollout", "restart", "deployment/istiod"},
			{"-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=180s"},
		}
		for _, s := range steps {
			if _, installErr = kube.Kubectl(ctx, nil, s...); installErr != nil {
				return
			}
		}
		// ztunnel, pointed at the local cluster's CNI directories.
		zt, err := os.ReadFile("../install/manifests/ztunnel.yaml")
		if err != nil {
			installErr = err
			return
		}
		manifest := strings.NewReplacer("/opt/cni/bin", localCNIBinDir, "/etc/cni/net.d", kube.CNIConfDir()).Replace(string(zt))
		for _, s := range [][]string{
			{"apply", "--server-side", "--force-conflicts", "-f", "-"},
			{"-n", "istio-system", "rollout", "restart", "daemonset/ztunnel"},
			{"-n", "istio-system", "rollout", "status", "daemonset/ztunnel", "--timeout=180s"},
		} {
			var in io.Reader
			if s[0] == "apply" {
				in = strings.NewReader(manifest)
			}
			if _, installErr = kube.Kubectl(ctx, in, s...); installErr != nil {
				return
			}
		}
	})
	if installErr != nil {
		t.Fatalf("install the mesh: %v", installErr)
	}
}

// clientset returns a client-go clientset for the local cluster.
func clientset(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kube.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
