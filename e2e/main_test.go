//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ambientlite/mesh/e2e/cluster"
)

// kube is the running local cluster every test uses.
var kube cluster.Config

// TestMain brings the local cluster up (a no-op when it is up already) and
// makes sure the test images are loaded. The cluster is left running, so a
// second `make test` starts at once; `make cluster-down` stops it.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	c, err := cluster.Up(ctx, cluster.Config{StateDir: os.Getenv("AMBIENT_LITE_STATE_DIR")}, os.Stdout)
	if err == nil {
		err = cluster.EnsureImages(ctx, c, os.Stdout, "meshecho", "istiod-lite", "waypoint", "ztunnel")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot bring up the local cluster:", err)
		os.Exit(1)
	}
	kube = c
	os.Exit(m.Run())
}

// kubectl runs kubectl against the cluster, with stdin as its input when
// it is not empty, and fails the test on error.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	out, err := kube.Kubectl(ctx, strings.NewReader(stdin), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// namespace creates a namespace with a random suffix and deletes it (without
// waiting) when the test ends, dumping its pods first if the test failed.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := prefix + "-" + hex.EncodeToString(b)
	kubectl(t, "", "create", "namespace", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := kube.Kubectl(ctx, nil, "-n", ns, "get", "pods,svc,endpointslices", "-o", "wide")
			t.Logf("state of %s:\n%s", ns, out)
			out, _ = kube.Kubectl(ctx, nil, "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
			t.Logf("events of %s:\n%s", ns, out)
		}
		_, _ = kube.Kubectl(ctx, nil, "delete", "namespace", ns, "--wait=false")
	})
	return ns
}

// manifest reads testdata/name and fills in the namespace and image.
func manifest(t *testing.T, name, ns string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("$NS", ns, "$IMAGE", kube.Image("meshecho")).Replace(string(b))
}
