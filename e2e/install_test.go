//go:build e2e

package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambientlite/mesh/e2e/mesh"
)

var (
	installOnce sync.Once
	installErr  error
)

// installMesh applies the CRDs and install/manifests once per test binary
// and waits until istiod-lite and ztunnel are rolled out (mesh.Install).
func installMesh(t *testing.T) {
	t.Helper()
	installOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		installErr = mesh.Install(ctx, kube)
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
