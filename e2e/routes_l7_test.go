//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
)

// TestWaypointRoutes: in a namespace that uses a waypoint, HTTPRoutes
// apply to traffic from enrolled pods (client ztunnel → waypoint → backend
// pod): a 90/10 split measured over 1,000 requests lands within ±3 points;
// a retry policy turns a backend failing half its requests into ≥ 99%
// success; a request timeout yields 504; a route change reaches the
// waypoint within a second (measured from the API write); a deleted route
// stops applying; AuthorizationPolicies attached to the Service or the
// waypoint's Gateway answer 403.
func TestWaypointRoutes(t *testing.T) {
	installMesh(t)
	ns := namespace(t, "wp-routes")
	kubectl(t, "", "label", "namespace", ns, "istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint")
	kubectl(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: %s, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`, ns), "apply", "-f", "-")
	kubectl(t, manifest(t, "routes.yaml", ns), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/waypoint", "deployment/echo-v1", "deployment/echo-v2", "deployment/flaky", "deployment/client", "--timeout=180s")

	// Without a route the Service's own endpoints answer (both versions).
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, ns, 20, "http://echo:8080/"); r.Status["200"] != 20 || len(r.Versions) != 2 {
			return fmt.Errorf("without a route: %+v, want 20 OK from both versions", r)
		}
		return nil
	})

	// 90/10 split.
	kubectl(t, splitRoute(ns, 90, 10), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error {
		return routeStatus(t, ns, "echo-split")
	})
	res := meshechoClientN(t, ns, 1000, 8, "http://echo:8080/")
	if res.Status["200"] != 1000 {
		t.Fatalf("split: %+v, want 1000 × 200", res)
	}
	v1 := 100 * float64(res.Versions["v1"]) / 1000
	t.Logf("90/10 split over 1,000 requests: v1 %.1f%%, v2 %.1f%%", v1, 100*float64(res.Versions["v2"])/1000)
	if math.Abs(v1-90) > 3 {
		t.Errorf("split: v1 got %.1f%% of 1,000 requests, want 90 ± 3", v1)
	}

	// A route change reaches the waypoint within a second: a mesh client
	// on the node sends requests through the waypoint back to back and
	// notes when the first answer from the new backend arrives.
	probe := newWaypointProbe(t, ns)
	if v := probe.version(t); v != "v1" && v != "v2" {
		t.Fatalf("probe through the waypoint answered version %q", v)
	}
	// The change is written with client-go (a kubectl process start on a
	// loaded 2-core machine would dominate): the clock runs from just
	// before the API call to the first request of a run of twenty that all
	// reach v2 (the old split sends 90% to v1).
	rc, err := clientcmd.BuildConfigFromFlags("", kube.KubeconfigPath())
	must(t, err)
	gw, err := gwclient.NewForConfig(rc)
	must(t, err)
	patch := []byte(`{"spec":{"rules":[{"backendRefs":[{"name":"echo-v1","port":8080,"weight":0},{"name":"echo-v2","port":8080,"weight":100}]}]}}`)
	start := time.Now()
	if _, err := gw.GatewayV1().HTTPRoutes(ns).Patch(t.Context(), "echo-split", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	written := time.Since(start)
	var took time.Duration
	for streak := 0; streak < 20; {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("route change 90/10 → 0/100 not applied after 10 s")
		}
		at := time.Since(start)
		if probe.version(t) != "v2" {
			streak = 0
			continue
		}
		if streak == 0 {
			took = at
		}
		streak++
	}
	t.Logf("route change: API write (%v) → first request routed by the new rule: %v", written.Round(time.Millisecond), took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("route change reached the waypoint after %v, want within 1 s", took)
	}

	// A deleted route stops applying: both versions again.
	kubectl(t, "", "-n", ns, "delete", "httproute", "echo-split")
	poll(t, 10*time.Second, func() error {
		if r := meshechoClient(t, ns, 20, "http://echo:8080/"); r.Status["200"] != 20 || r.Versions["v1"] == 0 {
			return fmt.Errorf("after deleting the route: %+v, want both versions", r)
		}
		return nil
	})

	// Retries: the flaky backend fails half its requests (503); without a
	// retry policy about half fail, with one at least 99% succeed.
	base := meshechoClientN(t, ns, 200, 4, "http://flaky:8080/")
	t.Logf("flaky backend without retries: %d of 200 answered 200", base.Status["200"])
	if ok := base.Status["200"]; ok > 160 || ok < 40 {
		t.Errorf("flaky backend without retries: %d of 200 answered 200 (%v), want about half", ok, base.Status)
	}
	kubectl(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky-retry, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky, port: 8080}]
  rules:
  - backendRefs: [{name: flaky, port: 8080}]
    retry: {attempts: 8, codes: [503], backoff: 10ms}
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error { return routeStatus(t, ns, "flaky-retry") })
	poll(t, 10*time.Second, func() error {
		if r := meshechoClient(t, ns, 20, "http://flaky:8080/"); r.Status["200"] < 20 {
			return fmt.Errorf("retry route not applied yet: %d of 20 answered 200", r.Status["200"])
		}
		return nil
	})
	ret := meshechoClientN(t, ns, 1000, 8, "http://flaky:8080/")
	t.Logf("flaky backend with retries: %d of 1000 answered 200", ret.Status["200"])
	if ret.Status["200"] < 990 {
		t.Errorf("with retries: %d of 1000 answered 200 (%v), want ≥ 99%%", ret.Status["200"], ret.Status)
	}

	// Timeout: a backend slower than timeouts.request gets 504.
	kubectl(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-timeout, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    backendRefs: [{name: echo, port: 8080}]
    timeouts: {request: 500ms}
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error { return routeStatus(t, ns, "echo-timeout") })
	poll(t, 10*time.Second, func() error {
		r := meshechoClient(t, ns, 3, "http://echo:8080/slow?delay=2s")
		if r.Status["504"] != 3 {
			return fmt.Errorf("slow backend behind a 500ms timeout: statuses %v, want 3 × 504", r.Status)
		}
		return nil
	})
	if r := meshechoClient(t, ns, 3, "http://echo:8080/slow?delay=100ms"); r.Status["200"] != 3 {
		t.Errorf("a backend within the timeout: %+v, want 3 OK", r)
	}

	kubectl(t, "", "-n", ns, "delete", "httproute", "echo-timeout")

	// L7 policy in the waypoint: a DENY on paths of the Service echo gives
	// 403 there and nowhere else; an ALLOW on the waypoint's Gateway for
	// another principal only shuts the client out of everything.
	kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-no-private, namespace: %s}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/private*"]}}]}]
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, ns, 3, "http://echo:8080/private/x"); r.Status["403"] != 3 {
			return fmt.Errorf("DENY /private*: statuses %v, want 3 × 403", r.Status)
		}
		if r := meshechoClient(t, ns, 3, "http://echo:8080/public"); r.Status["200"] != 3 {
			return fmt.Errorf("path not denied: statuses %v, want 3 × 200", r.Status)
		}
		return nil
	})
	kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-others, namespace: %[1]s}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/%[1]s/sa/someone-else"]}}]}]
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, ns, 3, "http://flaky:8080/"); r.Status["403"] != 3 {
			return fmt.Errorf("ALLOW for another principal: statuses %v, want 3 × 403", r.Status)
		}
		return nil
	})
	kubectl(t, "", "-n", ns, "delete", "authorizationpolicy", "echo-no-private", "only-others")
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, ns, 3, "http://echo:8080/private/x"); r.Status["200"] != 3 {
			return fmt.Errorf("policies deleted: statuses %v, want 3 × 200", r.Status)
		}
		return nil
	})
}

// splitRoute is an HTTPRoute on the Service echo sending w1 and w2 parts
// to echo-v1 and echo-v2.
func splitRoute(ns string, w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-split, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: %d}
    - {name: echo-v2, port: 8080, weight: %d}
`, ns, w1, w2)
}

// routeStatus is nil once the route is Accepted and ResolvedRefs.
func routeStatus(t *testing.T, ns, name string) error {
	got := kubectl(t, "", "-n", ns, "get", "httproute", name, "-o",
		`jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}/{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`)
	if got != "True/True" {
		return fmt.Errorf("httproute %s Accepted/ResolvedRefs = %q", name, got)
	}
	return nil
}

// meshechoClientN runs n requests with c in flight from the client pod.
func meshechoClientN(t *testing.T, ns string, n, c int, url string) clientResult {
	t.Helper()
	out, err := kube.Kubectl(t.Context(), nil, "-n", ns, "exec", "deploy/client", "--",
		"meshecho", "client", "-n", fmt.Sprint(n), "-c", fmt.Sprint(c), "--timeout=5s", "-o", "json", url)
	var r clientResult
	if i := strings.Index(out, "{"); i >= 0 {
		_ = json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.Requests == 0 {
		t.Logf("meshecho client in %s: %v\n%s", ns, err, out)
	}
	return r
}

// waypointProbe sends HTTP requests through the namespace's waypoint from
// the node, as a ztunnel would: HBONE with a mesh certificate of the
// namespace, :authority = the echo Service's VIP:8080.
type waypointProbe struct {
	d      *hbone.Dialer
	target hbone.Target
}

func newWaypointProbe(t *testing.T, ns string) *waypointProbe {
	t.Helper()
	ctx := t.Context()
	cs := clientset(t)
	app := runPod(t, cs, ns, "probe", "probe")
	dir := t.TempDir()
	tokenFile, rootFile := filepath.Join(dir, "token"), filepath.Join(dir, "root.pem")
	must(t, os.WriteFile(tokenFile, []byte(boundToken(t, cs, app, "istio-ca")), 0o600))
	must(t, os.WriteFile(rootFile, []byte(rootPEM(t, cs, ns)), 0o600))
	istiod, err := cs.CoreV1().Services("istio-system").Get(ctx, "istiod", metav1.GetOptions{})
	must(t, err)
	certs, err := meshcert.NewClient(meshcert.Config{
		Address: istiod.Spec.ClusterIP + ":15012", ServerName: istiodHost,
		RootCertFile: rootFile, TokenFile: tokenFile,
	})
	must(t, err)
	t.Cleanup(func() { certs.Close() })
	src := hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "probe"}
	cert, err := certs.Fetch(ctx, src)
	must(t, err)
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &cert.TLS, nil },
		Roots:       cert.Roots,
	}
	t.Cleanup(func() { d.Close() })
	wp, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=waypoint"})
	if err != nil || len(wp.Items) == 0 {
		t.Fatalf("waypoint pods: %v %v", wp, err)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
	must(t, err)
	p := &waypointProbe{d: d, target: hbone.Target{
		Address:     net.JoinHostPort(wp.Items[0].Status.PodIP, "15008"),
		Authority:   net.JoinHostPort(svc.Spec.ClusterIP, "8080"),
		Source:      src,
		Destination: hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "waypoint"},
	}}
	return p
}

// version sends one request in a new tunnel and returns the x-echo-version
// of the answer ("" on failure).
func (p *waypointProbe) version(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := p.d.DialContext(ctx, p.target)
	if err != nil {
		t.Logf("probe: %v", err)
		return ""
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(st, "GET / HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(st), nil)
	if err != nil {
		t.Logf("probe: %v", err)
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return strings.TrimSpace(resp.Status)
	}
	return resp.Header.Get("x-echo-version")
}
