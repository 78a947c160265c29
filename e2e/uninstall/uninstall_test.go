//go:build e2e

// Package uninstall is the user's way in and out of the mesh: `ambientctl
// install` on the local cluster, an enrolled sample carried over mutual
// TLS, then `ambientctl uninstall`: the sample answers in plain text, its
// pods were never restarted, and a new pod starts (the CNI plugin left the
// node with ztunnel). It removes the mesh from the shared cluster, so `make
// e2e` runs it after the other e2e tests and the conformance suite.
package uninstall

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambientlite/mesh/e2e/cluster"
	"github.com/ambientlite/mesh/e2e/mesh"
)

func TestInstallUninstall(t *testing.T) {
	ctx := t.Context()
	c, err := cluster.Up(ctx, cluster.Config{StateDir: os.Getenv("AMBIENT_LITE_STATE_DIR")}, testWriter{t})
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	actl := filepath.Join(c.ModuleRoot, "_output", "bin", "ambientctl")
	if _, err := os.Stat(actl); err != nil {
		t.Fatalf("ambientctl not built (make build): %v", err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, append([]string{"--kubeconfig", c.KubeconfigPath()}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		var in io.Reader
		if stdin != "" {
			in = strings.NewReader(stdin)
		}
		out, err := c.Kubectl(ctx, in, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	out := run(actl, "install", "--set", "cni.binDir="+mesh.LocalCNIBinDir, "--set", "cni.confDir="+c.CNIConfDir(), "--timeout", "4m")
	t.Logf("ambientctl install:\n%s", out)
	again := run(actl, "install", "--set", "cni.binDir="+mesh.LocalCNIBinDir, "--set", "cni.confDir="+c.CNIConfDir(), "--timeout", "4m")
	if strings.Contains(again, " created") || strings.Contains(again, " configured") {
		t.Errorf("a second install changed something:\n%s", again)
	}
	run(actl, "check")

	const ns = "uninstall-sample"
	kubectl("", "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=120s")
	b, err := os.ReadFile(filepath.Join(c.ModuleRoot, "e2e/testdata/echo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kubectl(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {istio.io/dataplane-mode: ambient}}\n", ns), "apply", "-f", "-")
	t.Cleanup(func() { c.Kubectl(t.Context(), nil, "delete", "namespace", ns, "--wait=false") })
	kubectl(strings.NewReplacer("$NS", ns, "$IMAGE", c.Image("meshecho")).Replace(string(b)), "apply", "-f", "-")
	kubectl("", "-n", ns, "rollout", "status", "deployment/echo-v1", "deployment/echo-v2", "deployment/client", "--timeout=180s")
	poll(t, 30*time.Second, func() error {
		got := kubectl("", "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{" "}{end}`)
		if strings.Count(got, "enabled") != 3 {
			return fmt.Errorf("redirection annotations %q, want 3 enabled", got)
		}
		return nil
	})
	client := func() (ok int) {
		out, _ := c.Kubectl(ctx, nil, "-n", ns, "exec", "deploy/client", "--", "meshecho", "client", "-n", "10", "--keepalive=false", "--timeout=3s", "-o", "json", "http://echo:8080/")
		var r struct {
			Status map[string]int `json:"status"`
		}
		if i := strings.Index(out, "{"); i >= 0 {
			_ = json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
		}
		return r.Status["200"]
	}
	if ok := client(); ok != 10 {
		t.Fatalf("in the mesh: %d of 10 answered", ok)
	}
	restarts := kubectl("", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}")

	out = run(actl, "uninstall", "--timeout", "4m")
	t.Logf("ambientctl uninstall:\n%s", out)
	if got := kubectl("", "get", "namespace", "istio-system", "--ignore-not-found", "-o", "name"); got != "" {
		t.Errorf("istio-system still there after uninstall: %q", got)
	}
	if got := kubectl("", "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{end}`); got != "" {
		t.Errorf("pods still marked captured: %q", got)
	}
	if ok := client(); ok != 10 {
		t.Errorf("after uninstall, plain text: %d of 10 answered", ok)
	}
	if got := kubectl("", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"); got != restarts {
		t.Errorf("pods restarted by the uninstall: %q → %q", restarts, got)
	}
	confs, _ := filepath.Glob(filepath.Join(c.CNIConfDir(), "*"))
	for _, f := range confs {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "ambient-cni") {
			t.Errorf("the CNI plugin is still configured in %s", f)
		}
	}
	// A new pod starts with plain networking.
	kubectl("", "-n", ns, "scale", "deployment/echo-v1", "--replicas=2")
	kubectl("", "-n", ns, "rollout", "status", "deployment/echo-v1", "--timeout=120s")
}

func poll(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(time.Second)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
