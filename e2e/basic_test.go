//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// clientResult is the JSON summary `meshecho client -o json` prints.
type clientResult struct {
	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Errors   int            `json:"errors"`
	Status   map[string]int `json:"status"`
	Versions map[string]int `json:"versions"`
}

// TestServiceReachesBothVersions deploys the test app in two versions
// behind one Service and checks that a client pod reaches both by DNS name,
// over every protocol the app speaks, through kube-proxy's ClusterIP.
func TestServiceReachesBothVersions(t *testing.T) {
	ns := namespace(t, "e2e-basic")
	kubectl(t, manifest(t, "echo.yaml", ns), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/echo-v1", "deployment/echo-v2", "deployment/client", "--timeout=120s")

	const n = 40
	cases := []struct {
		name string
		url  string
	}{
		{"http short name", "http://echo:8080/hello"},
		{"http FQDN", fmt.Sprintf("http://echo.%s.svc.cluster.local:8080/hello", ns)},
		{"h2c", "h2c://echo:8080/hello"},
		{"grpc", "grpc://echo:9090"},
		{"tcp", "tcp://echo:9000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Endpoints and kube-proxy's rules follow readiness a moment
			// later, so poll until both versions answer (or time runs out).
			eventually(t, 30*time.Second, func() error {
				out := kubectl(t, "", "-n", ns, "exec", "deploy/client", "--",
					"meshecho", "client", "-n", fmt.Sprint(n), "-c", "4", "--keepalive=false", "-o", "json", tc.url)
				var r clientResult
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					t.Fatalf("client output is not JSON: %v\n%s", err, out)
				}
				if r.Requests != n || r.OK != n || r.Errors != 0 {
					return fmt.Errorf("requests=%d ok=%d errors=%d, want %d/%d/0\n%s", r.Requests, r.OK, r.Errors, n, n, out)
				}
				if r.Versions["v1"] == 0 || r.Versions["v2"] == 0 || r.Versions["v1"]+r.Versions["v2"] != n {
					return fmt.Errorf("versions %v: want answers from both v1 and v2 adding up to %d", r.Versions, n)
				}
				if (strings.HasPrefix(tc.url, "http") || strings.HasPrefix(tc.url, "h2c")) && r.Status["200"] != n {
					return fmt.Errorf("status %v: want %d × 200", r.Status, n)
				}
				return nil
			})
		})
	}
}

// eventually calls check until it returns nil, failing the test with the
// last error when timeout passes.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", timeout, err)
		}
		t.Logf("not yet: %v", err)
		time.Sleep(time.Second)
	}
}

// TestLogsAndPortForward checks the node's streaming paths: kubectl logs and
// kubectl port-forward to a Service.
func TestLogsAndPortForward(t *testing.T) {
	ns := namespace(t, "e2e-stream")
	kubectl(t, manifest(t, "echo.yaml", ns), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/echo-v1", "--timeout=120s")

	kubectl(t, "", "-n", ns, "logs", "deployment/echo-v1")

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	argv := append(kube.KubectlArgv(), "-n", ns, "port-forward", "deployment/echo-v1", ":8080")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	// "Forwarding from 127.0.0.1:PORT -> 8080"
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("port-forward printed nothing: %v", err)
	}
	var local string
	if _, err := fmt.Sscanf(line, "Forwarding from %s ->", &local); err != nil {
		t.Fatalf("unexpected port-forward output %q", line)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+local+"/via-port-forward", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ServiceVersion=v1") || !strings.Contains(string(body), "URL=/via-port-forward") {
		t.Fatalf("port-forwarded reply %s:\n%s", resp.Status, body)
	}
}
