package state

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/xdsclient"
)

// Builders of real workloadapi / security messages, in the form istiod
// sends them.

func ipBytes(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func uid(ns, name string) string { return "Kubernetes//Pod/" + ns + "/" + name }

func host(ns, name string) string { return name + "." + ns + ".svc.cluster.local" }

func svcKey(ns, name string) string { return ns + "/" + host(ns, name) }

// pod is a HEALTHY HBONE pod workload with one IP, service account = name.
func pod(ns, name, ip string, opts ...func(*workloadapi.Workload)) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid:            uid(ns, name),
		Name:           name,
		Namespace:      ns,
		Addresses:      [][]byte{ipBytes(ip)},
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		ServiceAccount: name,
		Node:           "node-a",
		WorkloadType:   workloadapi.WorkloadType_POD,
		ClusterId:      "Kubernetes",
	}
	for _, o := range opts {
		o(w)
	}
	return w
}

// inService makes the workload an endpoint of service ns/name with port
// mappings (service port, target port)...
func inService(ns, name string, ports ...uint32) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) {
		if w.Services == nil {
			w.Services = map[string]*workloadapi.PortList{}
		}
		pl := &workloadapi.PortList{}
		for i := 0; i+1 < len(ports); i += 2 {
			pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
		}
		w.Services[svcKey(ns, name)] = pl
	}
}

func unhealthy(w *workloadapi.Workload) { w.Status = workloadapi.WorkloadStatus_UNHEALTHY }

func plainTCP(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }

func onNode(n string) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) { w.Node = n }
}

func capacity(c uint32) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) { w.Capacity = wrapperspb.UInt32(c) }
}

func policies(names ...string) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) { w.AuthorizationPolicies = names }
}

func workloadWaypoint(g *workloadapi.GatewayAddress) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) { w.Waypoint = g }
}

// service is a canonical ClusterIP service with ports (service port,
// target port)...
func service(ns, name, vip string, ports ...uint32) *workloadapi.Service {
	s := &workloadapi.Service{
		Name:      name,
		Namespace: ns,
		Hostname:  host(ns, name),
		Canonical: true,
	}
	if vip != "" {
		s.Addresses = []*workloadapi.NetworkAddress{{Address: ipBytes(vip)}}
	}
	for i := 0; i+1 < len(ports); i += 2 {
		s.Ports = append(s.Ports, &workloadapi.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
	}
	return s
}

// gwIP is a waypoint addressed by IP (how Istio sends a waypoint from the
// Gateway's status address or its Service's cluster IP).
func gwIP(ip string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ipBytes(ip)}},
		HboneMtlsPort: 15008,
	}
}

// gwHost is a waypoint addressed by its service's hostname.
func gwHost(ns, name string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: ns, Hostname: host(ns, name)}},
		HboneMtlsPort: 15008,
	}
}

func wAddr(w *workloadapi.Workload) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
}

func sAddr(s *workloadapi.Service) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
}

// addrName is the resource name Istio gives an Address.
func addrName(a *workloadapi.Address) string {
	if w := a.GetWorkload(); w != nil {
		return w.GetUid()
	}
	s := a.GetService()
	return s.GetNamespace() + "/" + s.GetHostname()
}

func typedAddrs(as ...*workloadapi.Address) []xdsclient.TypedResource[*workloadapi.Address] {
	var out []xdsclient.TypedResource[*workloadapi.Address]
	for _, a := range as {
		out = append(out, xdsclient.TypedResource[*workloadapi.Address]{Name: addrName(a), Version: "1", Message: a})
	}
	return out
}

func typedPols(ps ...*security.Authorization) []xdsclient.TypedResource[*security.Authorization] {
	var out []xdsclient.TypedResource[*security.Authorization]
	for _, p := range ps {
		out = append(out, xdsclient.TypedResource[*security.Authorization]{Name: p.GetNamespace() + "/" + p.GetName(), Version: "1", Message: p})
	}
	return out
}

// mustAny wraps an Address as the xDS client hands it to a handler.
func mustAny(t testing.TB, name string, a *workloadapi.Address) xdsclient.Resource {
	t.Helper()
	x, err := anypb.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return xdsclient.Resource{Name: name, Version: "1", Any: x}
}

func mustAnyPol(t testing.TB, p *security.Authorization) xdsclient.Resource {
	t.Helper()
	x, err := anypb.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return xdsclient.Resource{Name: p.GetNamespace() + "/" + p.GetName(), Version: "1", Any: x}
}

// storeWith returns a store holding the addresses and policies.
func storeWith(t testing.TB, cfg Config, as []*workloadapi.Address, ps ...*security.Authorization) *Store {
	t.Helper()
	s := New(cfg)
	if err := s.ApplyAddresses(typedAddrs(as...), nil); err != nil {
		t.Fatalf("ApplyAddresses: %v", err)
	}
	if err := s.ApplyAuthorizations(typedPols(ps...), nil); err != nil {
		t.Fatalf("ApplyAuthorizations: %v", err)
	}
	return s
}

// Policy builders.

func policy(ns, name string, scope security.Scope, action security.Action, groups ...*security.Group) *security.Authorization {
	return &security.Authorization{Name: name, Namespace: ns, Scope: scope, Action: action, Groups: groups}
}

// group ANDs clauses; each clause ORs its matches.
func group(clauses ...*security.Rules) *security.Group { return &security.Group{Rules: clauses} }

func clause(ms ...*security.Match) *security.Rules { return &security.Rules{Matches: ms} }

func exact(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: s}}
}

func suffix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: s}}
}

func presence() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

func cidr(s string) *security.Address {
	p := netip.MustParsePrefix(s)
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

func id(ns, sa string) hbone.Identity {
	return hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
}
