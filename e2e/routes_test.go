//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/metadata"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// TestRouteStatusAndTables: istiod-lite writes HTTPRoute status for Service
// parents with Gateway API's reasons, keeps serving the last good table when
// a route turns bad, and serves compiled route tables over delta ADS to a
// waypoint that subscribes to its Service by name.
func TestRouteStatusAndTables(t *testing.T) {
	installMesh(t)
	ctx := t.Context()
	cs := clientset(t)
	ns := namespace(t, "routes")
	kubectl(t, manifest(t, "echo.yaml", ns), "apply", "-f", "-")
	kubectl(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: %[1]s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs:
    - {name: echo, port: 8080, weight: 90}
    - {name: echo, port: 8080, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-backend, namespace: %[1]s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 9090}]
  rules:
  - backendRefs: [{name: nowhere, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-parent, namespace: %[1]s}
spec:
  parentRefs: [{group: "", kind: Service, name: nope}]
  rules:
  - backendRefs: [{name: echo, port: 8080}]
`, ns), "apply", "-f", "-")

	cond := func(route, typ string) string {
		return kubectl(t, "", "-n", ns, "get", "httproute", route, "-o",
			fmt.Sprintf(`jsonpath={.status.parents[?(@.controllerName=="istio.io/gateway-controller")].conditions[?(@.type==%q)].status}/{.status.parents[?(@.controllerName=="istio.io/gateway-controller")].conditions[?(@.type==%q)].reason}`, typ, typ))
	}
	waitCond := func(route, typ, want string) {
		t.Helper()
		poll(t, 20*time.Second, func() error {
			if got := cond(route, typ); got != want {
				return fmt.Errorf("httproute %s %s = %q, want %q", route, typ, got, want)
			}
			return nil
		})
	}
	waitCond("split", "Accepted", "True/Accepted")
	waitCond("split", "ResolvedRefs", "True/ResolvedRefs")
	waitCond("missing-backend", "Accepted", "True/Accepted")
	waitCond("missing-backend", "ResolvedRefs", "False/BackendNotFound")
	waitCond("missing-parent", "Accepted", "False/NoMatchingParent")
	gen := kubectl(t, "", "-n", ns, "get", "httproute", "split", "-o", "jsonpath={.metadata.generation}/{.status.parents[0].conditions[0].observedGeneration}")
	if a, b, _ := strings.Cut(gen, "/"); a != b {
		t.Errorf("observedGeneration: %s", gen)
	}

	// A waypoint of this namespace subscribes to the echo Service's table.
	roots := rootPool(t, cs, ns)
	conn := dialIstiod(t, cs, roots)
	wp := runPod(t, cs, ns, "waypoint", "fake-waypoint")
	token := boundToken(t, cs, wp, "istio-ca")
	sctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+token)), time.Minute)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	name := routeapi.ResourceName(ns, "echo."+ns+".svc.cluster.local")
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: routeapi.TypeURL, ResourceNamesSubscribe: []string{name}}); err != nil {
		t.Fatal(err)
	}
	recvTable := func() *routeapi.ServiceRoutes {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
			t.Fatal(err)
		}
		if len(resp.Resources) != 1 || resp.Resources[0].Name != name {
			t.Fatalf("response has %d resources (%v removed), want %s", len(resp.Resources), resp.RemovedResources, name)
		}
		tbl := &routeapi.ServiceRoutes{}
		if err := resp.Resources[0].Resource.UnmarshalTo(tbl); err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	tbl := recvTable()
	ports := map[uint32]int{}
	for _, p := range tbl.GetPorts() {
		ports[p.GetPort()] = len(p.GetProducer().GetRules())
	}
	if ports[8080] != 1 || ports[9090] != 1 {
		t.Fatalf("table ports → producer rules: %v, want 8080 and 9090 with one rule each", ports)
	}

	// A route change reaches the subscriber; a broken rule in the same
	// change is dropped, the rest applies, and status reports it.
	start := time.Now()
	kubectl(t, "", "-n", ns, "patch", "httproute", "split", "--type=json", "-p",
		`[{"op":"add","path":"/spec/rules/-","value":{"matches":[{"path":{"type":"PathPrefix","value":"/v2"}}],"backendRefs":[{"name":"echo","port":8080}]}},`+
			`{"op":"add","path":"/spec/rules/-","value":{"matches":[{"path":{"type":"RegularExpression","value":"/(unclosed"}}],"backendRefs":[{"name":"echo","port":8080}]}}]`)
	tbl = recvTable()
	t.Logf("route change → table pushed in %v (kubectl included)", time.Since(start).Round(time.Millisecond))
	waitCond("split", "PartiallyInvalid", "True/UnsupportedValue")
	waitCond("split", "Accepted", "True/Accepted")
	for _, p := range tbl.GetPorts() {
		if p.GetPort() == 8080 && len(p.GetProducer().GetRules()) != 2 {
			t.Errorf("port 8080 has %d rules after a good and a bad rule were added, want the two good ones", len(p.GetProducer().GetRules()))
		}
	}
}
