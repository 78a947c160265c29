package state

import (
	"fmt"
	"net/netip"
	"testing"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// benchMesh is 1,000 workloads on 10 nodes behind 200 services in 10
// namespaces (5 endpoints each, 80 → 8080), and 50 policies: per namespace one
// NAMESPACE ALLOW and three WORKLOAD_SELECTOR ones (a DENY, two ALLOWs),
// five GLOBAL DENYs, and a converted STRICT policy named by the workloads
// of five namespaces.
func benchMesh(tb testing.TB) (*Store, []netip.Addr, []netip.Addr) {
	tb.Helper()
	var addrs []*workloadapi.Address
	var pols []*security.Authorization
	var vips, podIPs []netip.Addr
	for n := range 10 {
		ns := fmt.Sprintf("ns-%d", n)
		pols = append(pols,
			policy(ns, "allow-ns", security.Scope_NAMESPACE, security.Action_ALLOW, group(clause(&security.Match{Namespaces: []*security.StringMatch{exact(ns), exact("frontend")}}))),
			policy(ns, "deny-debug", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, group(
				clause(&security.Match{DestinationPorts: []uint32{9999}}),
				clause(&security.Match{NotNamespaces: []*security.StringMatch{exact("ops")}}))),
			policy(ns, "allow-sa", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, group(
				clause(&security.Match{Principals: []*security.StringMatch{prefix("cluster.local/ns/" + ns + "/sa/")}}),
				clause(&security.Match{DestinationPorts: []uint32{8080, 8443}}))),
			policy(ns, "allow-subnet", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, group(
				clause(&security.Match{SourceIps: []*security.Address{cidr("10.250.0.0/16"), cidr("fd00:250::/64")}}))),
		)
		named := []string{ns + "/deny-debug", ns + "/allow-sa", ns + "/allow-subnet"}
		if n < 5 {
			pols = append(pols, policy(ns, "converted_strict", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
				group(clause(&security.Match{NotPrincipals: []*security.StringMatch{presence()}}))))
			named = append(named, ns+"/converted_strict")
		}
		for sv := range 20 {
			name := fmt.Sprintf("svc-%d", sv)
			vip := fmt.Sprintf("10.96.%d.%d", n, sv+1)
			addrs = append(addrs, sAddr(service(ns, name, vip, 80, 8080)))
			vips = append(vips, addr(vip))
			for e := range 5 {
				ip := fmt.Sprintf("10.%d.%d.%d", 100+n, sv, e+1)
				addrs = append(addrs, wAddr(pod(ns, fmt.Sprintf("%s-%d", name, e), ip, inService(ns, name, 80, 8080), policies(named...), onNode(fmt.Sprintf("node-%d", sv%10)))))
				podIPs = append(podIPs, addr(ip))
			}
		}
	}
	for g := range 5 {
		pols = append(pols, policy("istio-system", fmt.Sprintf("deny-%d", g), security.Scope_GLOBAL, security.Action_DENY,
			group(clause(&security.Match{Namespaces: []*security.StringMatch{exact(fmt.Sprintf("evil-%d", g))}}))))
	}
	s := storeWith(tb, Config{}, addrs, pols...)
	if len(s.Snapshot().Workloads) != 1000 || len(s.Snapshot().Services) != 200 || len(s.Snapshot().Policies) != 50 {
		tb.Fatal("bench mesh is not 1000/200/50")
	}
	return s, vips, podIPs
}

// BenchmarkBaselineMapLookup is the floor the lookups compare against: one
// map lookup by (network, IP).
func BenchmarkBaselineMapLookup(b *testing.B) {
	s, vips, _ := benchMesh(b)
	m := s.cur.Load().byVIP
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if m[NetworkAddress{"", vips[i%len(vips)]}] == nil {
			b.Fatal("miss")
		}
	}
}

func BenchmarkDestinationFor(b *testing.B) {
	s, vips, podIPs := benchMesh(b)
	src := s.Workload(uid("ns-0", "svc-0-0"))
	for _, bc := range []struct {
		name string
		ips  []netip.Addr
		port uint16
	}{
		{"service-vip", vips, 80},
		{"workload-ip", podIPs, 8080},
		{"passthrough", []netip.Addr{addr("93.184.216.34")}, 443},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := s.DestinationFor("", bc.ips[i%len(bc.ips)], bc.port, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("service-vip-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := s.DestinationFor("", vips[i%len(vips)], 80, src); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkAuthorize(b *testing.B) {
	s, _, podIPs := benchMesh(b)
	for _, bc := range []struct {
		name    string
		conn    func(dst netip.Addr) ConnInfo
		allowed bool
	}{
		// Every DENY evaluated, then the namespace ALLOW matches.
		{"allowed", func(dst netip.Addr) ConnInfo {
			return ConnInfo{SourceIdentity: id("frontend", "ui"), Source: ap("10.200.0.1:40000"), Destination: netip.AddrPortFrom(dst, 8080)}
		}, true},
		// Every policy evaluated, none allows.
		{"not-allowed", func(dst netip.Addr) ConnInfo {
			return ConnInfo{SourceIdentity: id("guest", "x"), Source: ap("10.200.0.1:40000"), Destination: netip.AddrPortFrom(dst, 8080)}
		}, false},
		{"denied-global", func(dst netip.Addr) ConnInfo {
			return ConnInfo{SourceIdentity: id("evil-4", "x"), Source: ap("10.200.0.1:40000"), Destination: netip.AddrPortFrom(dst, 8080)}
		}, false},
	} {
		conns := make([]ConnInfo, len(podIPs))
		for i, ip := range podIPs {
			conns[i] = bc.conn(ip)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if ok, _ := s.Authorize(conns[i%len(conns)]); ok != bc.allowed {
					b.Fatalf("allowed = %v", ok)
				}
			}
		})
	}
	conns := make([]ConnInfo, len(podIPs))
	for i, ip := range podIPs {
		conns[i] = ConnInfo{SourceIdentity: id("frontend", "ui"), Source: ap("10.200.0.1:40000"), Destination: netip.AddrPortFrom(ip, 8080)}
	}
	b.Run("allowed-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if ok, _ := s.Authorize(conns[i%len(conns)]); !ok {
					b.Error("denied")
					return
				}
			}
		})
	})
}

// BenchmarkApply is the writer's cost: one response changing one workload,
// or one policy, in the 1,000/200/50 mesh (copy-on-write of the indexes).
func BenchmarkApply(b *testing.B) {
	s, _, _ := benchMesh(b)
	b.Run("one-workload", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			w := pod("ns-3", "svc-7-2", "10.103.7.3", inService("ns-3", "svc-7", 80, 8080), capacity(uint32(i%3+1)), onNode("node-7"))
			if err := s.ApplyAddresses(typedAddrs(wAddr(w)), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-policy", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p := policy("ns-3", "allow-ns", security.Scope_NAMESPACE, security.Action_ALLOW,
				group(clause(&security.Match{DestinationPorts: []uint32{uint32(i%100 + 1)}})))
			if err := s.ApplyAuthorizations(typedPols(p), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
