//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// nodeMetrics is ztunnel's Prometheus endpoint on the (single) node: the
// DaemonSet runs on the host network.
const nodeMetrics = "http://10.250.0.1:15020/metrics"

// TestZtunnelMTLS: labelling a namespace captures its running pods without
// a restart; their traffic then goes pod → ztunnel → HBONE (mutual TLS) →
// ztunnel → pod, with both principals in ztunnel's metrics; an
// AuthorizationPolicy DENY blocks it; removing the label restores plain
// traffic.
func TestZtunnelMTLS(t *testing.T) {
	installMesh(t)
	ns := namespace(t, "zt")
	kubectl(t, manifest(t, "echo.yaml", ns), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/echo-v1", "deployment/echo-v2", "deployment/client", "--timeout=120s")
	kubectl(t, "", "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=60s")
	restarts := kubectl(t, "", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}")

	kubectl(t, "", "label", "namespace", ns, "istio.io/dataplane-mode=ambient")
	poll(t, 30*time.Second, func() error {
		got := kubectl(t, "", "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{" "}{end}`)
		if strings.Count(got, "enabled") != 3 {
			return fmt.Errorf("redirection annotations: %q, want 3 enabled", got)
		}
		return nil
	})
	if got := kubectl(t, "", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"); got != restarts {
		t.Errorf("pods restarted when enrolled: %q → %q", restarts, got)
	}

	// A pod created in the enrolled namespace is captured by the CNI plugin
	// before it runs: a second client, with another service account (for
	// the ALLOW case below).
	kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: intruder, namespace: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: intruder, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: intruder}}
  template:
    metadata: {labels: {app: intruder}}
    spec:
      serviceAccountName: intruder
      containers:
      - {name: client, image: %[2]s, imagePullPolicy: IfNotPresent, args: [server, --grpc-port=0, --tcp-port=0]}
`, ns, kube.Image("meshecho")), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/intruder", "--timeout=120s")
	poll(t, 20*time.Second, func() error {
		if got := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app=intruder", "-o", `jsonpath={.items[*].metadata.annotations.ambient\.istio\.io/redirection}`); got != "enabled" {
			return fmt.Errorf("new pod in the enrolled namespace: redirection annotation %q, want enabled", got)
		}
		return nil
	})

	principal := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", ns)
	mtls := func() float64 {
		text := httpGet(t, nodeMetrics)
		var sum float64
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "istio_tcp_connections_opened_total{") &&
				strings.Contains(l, `reporter="destination"`) &&
				strings.Contains(l, `connection_security_policy="mutual_tls"`) &&
				strings.Contains(l, `source_principal="`+principal+`"`) &&
				strings.Contains(l, `destination_principal="`+principal+`"`) &&
				strings.Contains(l, `destination_workload_namespace="`+ns+`"`) {
				f := strings.Fields(l)
				var v float64
				fmt.Sscan(f[len(f)-1], &v)
				sum += v
			}
		}
		return sum
	}
	podIPs := func() []netip.Addr {
		var ips []netip.Addr
		for _, f := range strings.Fields(kubectl(t, "", "-n", ns, "get", "pods", "-o", "jsonpath={.items[*].status.podIP}")) {
			ips = append(ips, netip.MustParseAddr(f))
		}
		return ips
	}
	// On the wire between the pods (captured on the node): only TLS to
	// 15008, for pod-to-service (the client dials the Service) and
	// pod-to-pod (the new pod dials an echo pod's IP).
	echoIP := strings.Fields(kubectl(t, "", "-n", ns, "get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[*].status.podIP}"))[0]
	cap := sniff(t, podIPs()...)
	before := mtls()
	res := meshechoClient(t, ns, 20, "http://echo:8080/")
	if res.OK != 20 || len(res.Versions) != 2 {
		t.Fatalf("through ztunnel: %+v, want 20 OK from both versions", res)
	}
	if r := meshechoClientIn(t, ns, "intruder", 5, "http://"+echoIP+":8080/"); r.OK != 5 {
		t.Fatalf("pod to pod from the new pod: %+v, want 5 OK", r)
	}
	conns, problems := tlsOnly(cap.stop(), 15008, []byte("GET /"))
	for _, p := range problems {
		t.Error(p)
	}
	if conns < 1 {
		t.Errorf("packet capture saw no HBONE connection between the pods")
	}
	t.Logf("packet capture between the pods: %d HBONE connections (to :15008), only TLS, %d problems", conns, len(problems))
	if after := mtls(); after-before < 20 {
		t.Errorf("mutual-TLS connections with both principals counted by the destination ztunnel: %v → %v, want +20", before, after)
	}
	intruderPrincipal := fmt.Sprintf(`source_principal="spiffe://cluster.local/ns/%s/sa/intruder"`, ns)
	if text := httpGet(t, nodeMetrics); !strings.Contains(text, intruderPrincipal) {
		t.Errorf("the new pod's traffic is not in ztunnel's metrics under its own principal (%s)", intruderPrincipal)
	}

	// L4 policy: DENY from this namespace blocks, deleting it restores.
	kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-own-namespace, namespace: %[1]s}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["%[1]s"]}}]
`, ns), "apply", "-f", "-")
	poll(t, 20*time.Second, func() error {
		if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 0 {
			return fmt.Errorf("with DENY: %d of 5 answered", r.OK)
		}
		return nil
	})
	kubectl(t, "", "-n", ns, "delete", "authorizationpolicy", "deny-own-namespace")
	poll(t, 20*time.Second, func() error {
		if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 5 {
			return fmt.Errorf("after deleting the DENY: %d of 5 answered", r.OK)
		}
		return nil
	})

	// ALLOW for one principal admits only it: the second enrolled client,
	// with another service account, is refused.
	kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/%[1]s/sa/default"]}}]
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error {
		if r := meshechoClientIn(t, ns, "intruder", 5, "http://echo:8080/"); r.OK != 0 {
			return fmt.Errorf("intruder (not allowed): %d of 5 answered", r.OK)
		}
		if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 5 {
			return fmt.Errorf("client (allowed): %d of 5 answered", r.OK)
		}
		return nil
	})
	kubectl(t, "", "-n", ns, "delete", "authorizationpolicy", "allow-client")

	// STRICT refuses plaintext: a client outside the mesh reaches an
	// enrolled pod only while the namespace is PERMISSIVE.
	outside := namespace(t, "zt-outside")
	kubectl(t, manifest(t, "echo.yaml", outside), "apply", "-f", "-")
	kubectl(t, "", "-n", outside, "rollout", "status", "deployment/client", "--timeout=120s")
	echoFQDN := "http://echo." + ns + ".svc.cluster.local:8080/"
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, outside, 5, echoFQDN); r.OK != 5 {
			return fmt.Errorf("plaintext from outside, PERMISSIVE: %d of 5 answered", r.OK)
		}
		return nil
	})
	kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: %s}
spec:
  mtls: {mode: STRICT}
`, ns), "apply", "-f", "-")
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, outside, 5, echoFQDN); r.OK != 0 {
			return fmt.Errorf("plaintext from outside, STRICT: %d of 5 answered", r.OK)
		}
		if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 5 {
			return fmt.Errorf("mesh client, STRICT: %d of 5 answered", r.OK)
		}
		return nil
	})
	kubectl(t, "", "-n", ns, "delete", "peerauthentication", "strict")

	// With istiod-lite stopped, ztunnel keeps its config and certificates:
	// new connections between known workloads still work.
	kubectl(t, "", "-n", "istio-system", "scale", "deployment/istiod", "--replicas=0")
	kubectl(t, "", "-n", "istio-system", "wait", "--for=delete", "pod", "-l", "app=istiod", "--timeout=60s")
	if r := meshechoClient(t, ns, 10, "http://echo:8080/"); r.OK != 10 {
		t.Errorf("with istiod-lite stopped: %d of 10 answered", r.OK)
	}
	kubectl(t, "", "-n", "istio-system", "scale", "deployment/istiod", "--replicas=2")
	kubectl(t, "", "-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=120s")

	// Without ztunnel on the node, enrolled pods fail closed: nothing gets
	// through in plaintext. When it is back, traffic resumes over mTLS.
	kubectl(t, "", "-n", "istio-system", "patch", "daemonset/ztunnel", "--type=merge", "-p", `{"spec":{"template":{"spec":{"nodeSelector":{"ambient-lite.test/no-such-node":"x"}}}}}`)
	kubectl(t, "", "-n", "istio-system", "wait", "--for=delete", "pod", "-l", "app=ztunnel", "--timeout=60s")
	cap = sniff(t, podIPs()...)
	if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 0 {
		t.Errorf("with ztunnel gone: %d of 5 answered — enrolled traffic must fail closed", r.OK)
	}
	if _, problems := tlsOnly(cap.stop(), 15008, []byte("GET /")); len(problems) > 0 {
		t.Errorf("with ztunnel gone, between the pods on the wire: %q", problems)
	}
	kubectl(t, "", "-n", "istio-system", "patch", "daemonset/ztunnel", "--type=json", "-p", `[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]`)
	kubectl(t, "", "-n", "istio-system", "rollout", "status", "daemonset/ztunnel", "--timeout=120s")
	before = mtls()
	poll(t, 30*time.Second, func() error {
		if r := meshechoClient(t, ns, 5, "http://echo:8080/"); r.OK != 5 {
			return fmt.Errorf("after ztunnel came back: %d of 5 answered", r.OK)
		}
		return nil
	})
	if after := mtls(); after-before < 5 {
		t.Errorf("after ztunnel came back, mTLS connections counted %v → %v", before, after)
	}

	// Leaving the mesh: plain traffic again, not counted by ztunnel.
	kubectl(t, "", "label", "namespace", ns, "istio.io/dataplane-mode-")
	poll(t, 30*time.Second, func() error {
		got := kubectl(t, "", "-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.metadata.annotations.ambient\.istio\.io/redirection}{end}`)
		if got != "" {
			return fmt.Errorf("redirection annotations still there: %q", got)
		}
		return nil
	})
	before = mtls()
	cap = sniff(t, podIPs()...)
	if r := meshechoClient(t, ns, 10, "http://echo:8080/"); r.OK != 10 {
		t.Fatalf("after leaving the mesh: %+v", r)
	}
	if after := mtls(); after != before {
		t.Errorf("ztunnel still carried traffic after the label was removed: %v → %v", before, after)
	}
	// The same capture now sees the plaintext requests: the check above
	// would have caught them.
	if _, problems := tlsOnly(cap.stop(), 15008, []byte("GET /")); len(problems) == 0 {
		t.Errorf("packet capture after leaving the mesh saw no plaintext: the capture itself is not working")
	}
}

// meshechoClient runs the test app's client in the namespace's client pod.
func meshechoClient(t *testing.T, ns string, n int, url string) clientResult {
	t.Helper()
	return meshechoClientIn(t, ns, "client", n, url)
}

// meshechoClientIn runs the test app's client in a Deployment's pod.
func meshechoClientIn(t *testing.T, ns, deploy string, n int, url string) clientResult {
	t.Helper()
	out, err := kube.Kubectl(t.Context(), nil, "-n", ns, "exec", "deploy/"+deploy, "--",
		"meshecho", "client", "-n", fmt.Sprint(n), "-c", "2", "--keepalive=false", "--timeout=3s", "-o", "json", url)
	var r clientResult
	if i := strings.Index(out, "{"); i >= 0 {
		// The summary is the first JSON object; kubectl may repeat output.
		_ = json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.Requests == 0 {
		t.Logf("meshecho client in %s/%s: %v\n%s", ns, deploy, err, out)
	}
	return r
}
