package controlplane

import (
	"context"
	"log/slog"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/istiod-lite/kube"
	"github.com/ambientlite/mesh/istiod-lite/model"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// TestWaypointPolicyServed runs an AuthorizationPolicy with targetRefs
// through the informers, the pipeline and the config server to a delta ADS
// subscriber of WaypointPolicy resources, and withdraws it when the policy
// is deleted. ztunnel's Authorization type gets nothing from it.
func TestWaypointPolicyServed(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	api := startFakeAPI(ctx, t,
		[]k8sruntime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{model.LabelDataplaneMode: "ambient"}}}},
		[]*gatewayv1.Gateway{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "waypoint"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: model.WaypointGatewayClass, Listeners: []gatewayv1.Listener{
				{Name: "mesh", Port: 15008, Protocol: "HBONE"},
			}},
		}},
		nil)
	store := xds.NewStore(nil)
	reg := prometheus.NewRegistry()
	pl, err := newPipeline(api.cache, store, model.Config{}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.sync(); err != nil {
		t.Fatal(err)
	}
	go pl.run(ctx)
	stream := serveXDS(ctx, t, store)

	// A wildcard subscription is answered at once, empty.
	for _, typ := range []string{routeapi.PolicyTypeURL, xds.AuthorizationType} {
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
		r := recvType(t, stream, typ)
		if len(r.Resources)+len(r.RemovedResources) != 0 {
			t.Fatalf("first %s response: %d resources, %v removed; want none", typ, len(r.Resources), r.RemovedResources)
		}
		ack(t, stream, r)
	}

	policies := api.dynamic.Resource(kube.AuthorizationPolicyResource).Namespace("shop")
	ap := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1",
		"kind":       "AuthorizationPolicy",
		"metadata":   map[string]any{"namespace": "shop", "name": "deny-admin"},
		"spec": map[string]any{
			"targetRefs": []any{
				map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"},
				map[string]any{"group": "", "kind": "Service", "name": "missing"},
			},
			"action": "DENY",
			"rules":  []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"paths": []any{"/admin*"}}}}}},
		},
	}}
	if _, err := policies.Create(ctx, ap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := recvType(t, stream, routeapi.PolicyTypeURL)
	if len(r.Resources) != 1 || r.Resources[0].Name != "shop/deny-admin" {
		t.Fatalf("pushed %v, want shop/deny-admin", resourceNames(r))
	}
	got := &routeapi.WaypointPolicy{}
	if err := r.Resources[0].Resource.UnmarshalTo(got); err != nil {
		t.Fatal(err)
	}
	want := &routeapi.WaypointPolicy{
		Name: "deny-admin", Namespace: "shop", Action: routeapi.PolicyAction_POLICY_ACTION_DENY,
		Targets: []*routeapi.PolicyTarget{
			{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: "shop", Name: "waypoint"}}},
			{Kind: &routeapi.PolicyTarget_ServiceHostname{ServiceHostname: "missing.shop.svc.cluster.local"}},
		},
		Rules: []*routeapi.PolicyRule{{To: []*routeapi.PolicyOperation{{Paths: []string{"/admin*"}}}}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("served policy (-want +got):\n%s", diff)
	}
	// The missing Service is a problem, counted like every other.
	if n := gaugeValue(t, reg, "istiod_lite_config_problems"); n != 1 {
		t.Errorf("istiod_lite_config_problems = %v, want 1 (the missing Service)", n)
	}
	ack(t, stream, r)

	if err := policies.Delete(ctx, "deny-admin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r = recvType(t, stream, routeapi.PolicyTypeURL)
	if len(r.Resources) != 0 || len(r.RemovedResources) != 1 || r.RemovedResources[0] != "shop/deny-admin" {
		t.Fatalf("after delete: pushed %v, removed %v; want shop/deny-admin removed", resourceNames(r), r.RemovedResources)
	}
	if n := gaugeValue(t, reg, "istiod_lite_config_problems"); n != 0 {
		t.Errorf("istiod_lite_config_problems = %v after delete, want 0", n)
	}
	ack(t, stream, r)
}

// recvType receives the next response and fails unless it is of type typ:
// nothing else may change in these tests.
func recvType(t *testing.T, stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, typ string) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.TypeUrl != typ {
		t.Fatalf("got a %s response (%v, removed %v), want %s", r.TypeUrl, resourceNames(r), r.RemovedResources, typ)
	}
	return r
}

func resourceNames(r *discovery.DeltaDiscoveryResponse) []string {
	var names []string
	for _, x := range r.Resources {
		names = append(names, x.Name)
	}
	return names
}

// gaugeValue reads an unlabelled gauge from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
