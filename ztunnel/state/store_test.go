package state

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/internal/xdsclient"
)

func endpointNames(s *Store, key string) []string {
	var out []string
	for _, ep := range s.Endpoints(key) {
		out = append(out, ep.Workload.Name)
	}
	return out
}

func TestRemovalUpdatesIndexes(t *testing.T) {
	s := storeWith(t, Config{}, []*workloadapi.Address{
		sAddr(service("shop", "web", "10.96.0.1", 80, 8080)),
		wAddr(pod("shop", "web-0", "10.244.0.1", inService("shop", "web", 80, 8080))),
		wAddr(pod("shop", "web-1", "10.244.0.2", inService("shop", "web", 80, 8080))),
	})
	key := svcKey("shop", "web")
	if diff := cmp.Diff([]string{"web-0", "web-1"}, endpointNames(s, key)); diff != "" {
		t.Fatalf("endpoints (-want +got)\n%s", diff)
	}
	before := s.Snapshot()

	if err := s.ApplyAddresses(nil, []string{uid("shop", "web-0")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"web-1"}, endpointNames(s, key)); diff != "" {
		t.Errorf("endpoints after removal (-want +got)\n%s", diff)
	}
	if w := s.WorkloadByAddress("", addr("10.244.0.1")); w != nil {
		t.Errorf("removed workload still found by address: %v", w)
	}
	if ws := s.WorkloadsOnNode("node-a"); len(ws) != 1 {
		t.Errorf("node index holds %d workloads, want 1", len(ws))
	}
	for range 50 {
		d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil)
		if err != nil || d.Workload.Name != "web-1" {
			t.Fatalf("DestinationFor after removal = %v, %v; want web-1", d.Workload, err)
		}
	}
	// An earlier snapshot is not changed by later updates.
	if got := len(before.Services[0].Endpoints); got != 2 {
		t.Errorf("earlier snapshot changed: %d endpoints", got)
	}

	// A workload leaving a service (its services map changes) leaves its
	// endpoints; the service going away leaves the endpoints staged.
	moved := pod("shop", "web-1", "10.244.0.2")
	if err := s.ApplyAddresses(typedAddrs(wAddr(moved)), []string{key}); err != nil {
		t.Fatal(err)
	}
	if got := s.Endpoints(key); len(got) != 0 {
		t.Errorf("endpoints = %v, want none", got)
	}
	if s.Service(key) != nil || s.ServiceByVIP("", addr("10.96.0.1"), "") != nil {
		t.Error("removed service still found")
	}
	if d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil); err != nil || d.Kind != Passthrough {
		t.Errorf("removed VIP = %v, %v; want passthrough", d, err)
	}
}

// Workloads may arrive before their service (ztunnel stages them).
func TestWorkloadsBeforeService(t *testing.T) {
	s := storeWith(t, Config{}, []*workloadapi.Address{
		wAddr(pod("shop", "web-0", "10.244.0.1", inService("shop", "web", 80, 8080))),
	})
	if d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil); err != nil || d.Kind != Passthrough {
		t.Fatalf("no service yet: %+v, %v; want passthrough", d, err)
	}
	if err := s.ApplyAddresses(typedAddrs(sAddr(service("shop", "web", "10.96.0.1", 80, 8080))), nil); err != nil {
		t.Fatal(err)
	}
	d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil)
	if err != nil || d.Authority != ap("10.244.0.1:8080") {
		t.Fatalf("DestinationFor = %+v, %v; want web-0:8080", d, err)
	}
	// Updating the service keeps its endpoints.
	if err := s.ApplyAddresses(typedAddrs(sAddr(service("shop", "web", "10.96.0.2", 80, 9090))), nil); err != nil {
		t.Fatal(err)
	}
	if s.ServiceByVIP("", addr("10.96.0.1"), "") != nil {
		t.Error("old VIP still indexed")
	}
	d, err = s.DestinationFor("", addr("10.96.0.2"), 80, nil)
	if err != nil || d.Authority != ap("10.244.0.1:8080") {
		t.Fatalf("DestinationFor(new vip) = %+v, %v; want the endpoint's own mapping 8080", d, err)
	}
}

// Through the real xdsclient handler: a resource that cannot be read is
// rejected by name, keeps its previous content, and the rest applies.
func TestInvalidResourceRejectedByName(t *testing.T) {
	s := New(Config{})
	h := s.AddressHandler()
	good := pod("shop", "a", "10.244.0.1")
	if err := h([]xdsclient.Resource{mustAny(t, good.Uid, wAddr(good))}, nil); err != nil {
		t.Fatal(err)
	}

	badIP := pod("shop", "a", "10.244.0.9")
	badIP.Addresses = [][]byte{{10, 0, 0}} // 3 bytes
	legacy := pod("shop", "legacy", "10.244.0.3")
	legacy.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS
	badWaypoint := service("shop", "wp", "10.96.0.3", 80, 80)
	badWaypoint.Waypoint = &workloadapi.GatewayAddress{HboneMtlsPort: 15008} // no destination
	badLB := service("shop", "lb", "10.96.0.4", 80, 80)
	badLB.LoadBalancing = &workloadapi.LoadBalancing{RoutingPreference: []workloadapi.LoadBalancing_Scope{workloadapi.LoadBalancing_UNSPECIFIED_SCOPE}}
	badKey := pod("shop", "badkey", "10.244.0.5")
	badKey.Services = map[string]*workloadapi.PortList{"no-slash": {}}
	next := pod("shop", "b", "10.244.0.2")
	resources := []xdsclient.Resource{
		mustAny(t, badIP.Uid, wAddr(badIP)),
		mustAny(t, legacy.Uid, wAddr(legacy)),
		mustAny(t, "shop/wp.shop.svc.cluster.local", sAddr(badWaypoint)),
		mustAny(t, "shop/lb.shop.svc.cluster.local", sAddr(badLB)),
		mustAny(t, badKey.Uid, wAddr(badKey)),
		mustAny(t, "wrong-name", wAddr(pod("shop", "c", "10.244.0.4"))),
		mustAny(t, "empty", &workloadapi.Address{}),
		{Name: "undecodable", Any: mustAnyPol(t, &security.Authorization{Name: "x"}).Any},
		mustAny(t, next.Uid, wAddr(next)),
	}
	err := h(resources, []string{"never-seen"})
	var rs xdsclient.Rejections
	if !errors.As(err, &rs) {
		t.Fatalf("err = %v, want Rejections", err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	want := []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/badkey", "Kubernetes//Pod/shop/legacy",
		"empty", "shop/lb.shop.svc.cluster.local", "shop/wp.shop.svc.cluster.local", "undecodable", "wrong-name"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("rejected (-want +got)\n%s\n%v", diff, err)
	}
	if s.Workload(next.Uid) == nil {
		t.Error("valid resource of the same response not applied")
	}
	if w := s.Workload(good.Uid); w == nil || w.Addresses[0] != addr("10.244.0.1") {
		t.Errorf("rejected update replaced the previous content: %v", w)
	}
	if s.Workload(uid("shop", "c")) != nil {
		t.Error("resource whose name is not its uid applied")
	}

	// Authorizations: an unknown action is rejected by name, the rest applies.
	ph := s.AuthorizationHandler()
	bad := policy("shop", "bad", security.Scope_NAMESPACE, security.Action(7))
	ok := policy("shop", "ok", security.Scope_NAMESPACE, security.Action_DENY)
	err = ph([]xdsclient.Resource{mustAnyPol(t, bad), mustAnyPol(t, ok)}, nil)
	if !errors.As(err, &rs) || len(rs) != 1 || rs[0].Name != "shop/bad" || !strings.Contains(err.Error(), "unknown action") {
		t.Errorf("err = %v, want shop/bad rejected for its action", err)
	}
	if s.Policy("shop/ok") == nil || s.Policy("shop/bad") != nil {
		t.Error("want shop/ok applied and shop/bad not")
	}
}

func TestPolicyIndexes(t *testing.T) {
	s := storeWith(t, Config{}, nil,
		policy("istio-system", "global", security.Scope_GLOBAL, security.Action_DENY),
		policy("shop", "ns", security.Scope_NAMESPACE, security.Action_ALLOW),
		policy("shop", "sel", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW),
	)
	keys := func(ps []*Policy) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Key())
		}
		return out
	}
	if diff := cmp.Diff([]string{"istio-system/global"}, keys(s.GlobalPolicies())); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"shop/ns"}, keys(s.NamespacePolicies("shop"))); diff != "" {
		t.Error(diff)
	}
	w := &Workload{Namespace: "shop", AuthorizationPolicies: []string{"shop/sel", "shop/missing"}}
	if diff := cmp.Diff([]string{"shop/ns", "istio-system/global", "shop/sel"}, keys(s.PoliciesFor(w))); diff != "" {
		t.Errorf("PoliciesFor (-want +got)\n%s", diff)
	}
	// A scope change moves the policy (ztunnel's rbac_change_scope).
	if err := s.ApplyAuthorizations(typedPols(policy("shop", "ns", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW)), nil); err != nil {
		t.Fatal(err)
	}
	if got := s.NamespacePolicies("shop"); len(got) != 0 {
		t.Errorf("namespace index after scope change: %v", keys(got))
	}
	if err := s.ApplyAuthorizations(nil, []string{"istio-system/global", "nope"}); err != nil {
		t.Fatal(err)
	}
	if len(s.GlobalPolicies()) != 0 || s.Policy("istio-system/global") != nil {
		t.Error("removed policy still held")
	}
}

func TestChanged(t *testing.T) {
	s := New(Config{})
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any change")
	default:
	}
	if err := s.ApplyAuthorizations(nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("not closed after a response")
	}
	if s.Changed() == ch {
		t.Error("Changed returned the closed channel again")
	}
}
