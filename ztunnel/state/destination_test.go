package state

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/istio/pkg/workloadapi"
)

// meshAddresses is a namespace "shop" with services with and without
// waypoints, named target ports, unhealthy and plaintext endpoints.
func meshAddresses() []*workloadapi.Address {
	named := service("shop", "named", "10.96.0.60", 80, 0)
	pass := service("shop", "pass", "10.96.0.83", 80, 80)
	pass.LoadBalancing = &workloadapi.LoadBalancing{Mode: workloadapi.LoadBalancing_PASSTHROUGH}
	allowAll := service("shop", "allowall", "10.96.0.84", 80, 80)
	allowAll.LoadBalancing = &workloadapi.LoadBalancing{HealthPolicy: workloadapi.LoadBalancing_ALLOW_ALL}
	cart := service("shop", "cart", "10.96.0.70", 80, 8080)
	cart.Waypoint = gwIP("10.96.0.100")
	cartH := service("shop", "cart-h", "10.96.0.71", 80, 8080)
	cartH.Waypoint = gwHost("shop", "waypoint")
	lost := service("shop", "lost", "10.96.0.82", 80, 80)
	lost.Waypoint = gwIP("10.96.9.9")
	hostNet := pod("shop", "hostnet", "10.0.0.5")
	hostNet.NetworkMode = workloadapi.NetworkMode_HOST_NETWORK
	hostNet.TunnelProtocol = workloadapi.TunnelProtocol_NONE

	return []*workloadapi.Address{
		sAddr(service("shop", "reviews", "10.96.0.40", 9080, 9080)),
		wAddr(pod("shop", "reviews-0", "10.244.0.40", inService("shop", "reviews", 9080, 9080))),
		wAddr(pod("shop", "reviews-1", "10.244.0.41", inService("shop", "reviews", 9080, 9080), unhealthy)),
		sAddr(service("shop", "legacy", "10.96.0.50", 80, 8080)),
		wAddr(pod("shop", "legacy-0", "10.244.0.50", inService("shop", "legacy", 80, 8080), plainTCP)),
		sAddr(named),
		wAddr(pod("shop", "np-0", "10.244.0.60", inService("shop", "named", 80, 8081))),
		wAddr(pod("shop", "np-1", "10.244.0.61", inService("shop", "named"))), // lacks the named port
		sAddr(cart), sAddr(cartH), sAddr(lost), sAddr(pass), sAddr(allowAll),
		wAddr(pod("shop", "dn-0", "10.244.0.84", inService("shop", "allowall", 80, 80), inService("shop", "down", 80, 80), unhealthy)),
		sAddr(service("shop", "down", "10.96.0.81", 80, 80)),
		sAddr(service("shop", "empty", "10.96.0.80", 80, 80)),
		sAddr(service("shop", "waypoint", "10.96.0.100", 15008, 15008)),
		wAddr(pod("shop", "waypoint-0", "10.244.0.100", inService("shop", "waypoint", 15008, 15008), plainTCP)),
		wAddr(pod("shop", "db-0", "10.244.0.90", workloadWaypoint(gwIP("10.96.0.100")))),
		wAddr(pod("shop", "client", "10.244.0.10")),
		wAddr(hostNet),
	}
}

// dest is a Destination reduced to comparable strings.
type dest struct {
	Kind, Protocol, Address, Authority, Workload, Service, Identity string
}

func summarize(d Destination) dest {
	out := dest{Kind: d.Kind.String(), Address: d.Address.String()}
	if d.Kind != Passthrough {
		out.Protocol = d.Protocol.String()
	}
	if d.Authority.IsValid() {
		out.Authority = d.Authority.String()
	}
	if d.Workload != nil {
		out.Workload = d.Workload.Name
	}
	if d.Service != nil {
		out.Service = d.Service.Name + "." + d.Service.Namespace
	}
	out.Identity = d.Identity.String()
	return out
}

func TestDestinationFor(t *testing.T) {
	s := storeWith(t, Config{}, meshAddresses())
	client := s.Workload(uid("shop", "client"))
	waypoint := s.Workload(uid("shop", "waypoint-0"))
	tests := []struct {
		name    string
		dialed  string
		src     *Workload
		want    dest
		wantErr error
	}{
		{
			name:   "vip to healthy hbone endpoint at target port",
			dialed: "10.96.0.40:9080", src: client,
			want: dest{"direct", "HBONE", "10.244.0.40:15008", "10.244.0.40:9080", "reviews-0", "reviews.shop", "spiffe://cluster.local/ns/shop/sa/reviews-0"},
		},
		{
			name:   "vip to plaintext endpoint maps port 80 to 8080",
			dialed: "10.96.0.50:80", src: client,
			want: dest{"direct", "TCP", "10.244.0.50:8080", "", "legacy-0", "legacy.shop", "spiffe://cluster.local/ns/shop/sa/legacy-0"},
		},
		{
			name:   "named target port: the endpoint's mapping, endpoints without it skipped",
			dialed: "10.96.0.60:80", src: client,
			want: dest{"direct", "HBONE", "10.244.0.60:15008", "10.244.0.60:8081", "np-0", "named.shop", "spiffe://cluster.local/ns/shop/sa/np-0"},
		},
		{
			name:   "vip with waypoint by address goes to the waypoint with authority vip:port",
			dialed: "10.96.0.70:80", src: client,
			want: dest{"waypoint", "HBONE", "10.244.0.100:15008", "10.96.0.70:80", "waypoint-0", "cart.shop", "spiffe://cluster.local/ns/shop/sa/waypoint-0"},
		},
		{
			name:   "vip with waypoint by hostname",
			dialed: "10.96.0.71:80", src: client,
			want: dest{"waypoint", "HBONE", "10.244.0.100:15008", "10.96.0.71:80", "waypoint-0", "cart-h.shop", "spiffe://cluster.local/ns/shop/sa/waypoint-0"},
		},
		{
			name:   "service waypoint applies to a port the service lacks too",
			dialed: "10.96.0.70:9999", src: client,
			want: dest{"waypoint", "HBONE", "10.244.0.100:15008", "10.96.0.70:9999", "waypoint-0", "cart.shop", "spiffe://cluster.local/ns/shop/sa/waypoint-0"},
		},
		{name: "service without endpoints", dialed: "10.96.0.80:80", src: client, wantErr: ErrNoHealthyEndpoint},
		{name: "service with only unhealthy endpoints", dialed: "10.96.0.81:80", src: client, wantErr: ErrNoHealthyEndpoint},
		{name: "port not on the service", dialed: "10.96.0.40:81", src: client, wantErr: ErrNoHealthyEndpoint},
		{name: "unknown waypoint", dialed: "10.96.0.82:80", src: client, wantErr: ErrUnknownWaypoint},
		{
			name:   "health policy ALLOW_ALL uses unhealthy endpoints",
			dialed: "10.96.0.84:80", src: client,
			want: dest{"direct", "HBONE", "10.244.0.84:15008", "10.244.0.84:80", "dn-0", "allowall.shop", "spiffe://cluster.local/ns/shop/sa/dn-0"},
		},
		{name: "passthrough service", dialed: "10.96.0.83:80", src: client, want: dest{Kind: "passthrough", Address: "10.96.0.83:80"}},
		{name: "unknown ip is passthrough", dialed: "93.184.216.34:443", src: client, want: dest{Kind: "passthrough", Address: "93.184.216.34:443"}},
		{name: "host-network workload ip is passthrough", dialed: "10.0.0.5:22", src: client, want: dest{Kind: "passthrough", Address: "10.0.0.5:22"}},
		{
			name:   "workload ip",
			dialed: "10.244.0.40:9080", src: client,
			want: dest{"direct", "HBONE", "10.244.0.40:15008", "10.244.0.40:9080", "reviews-0", "", "spiffe://cluster.local/ns/shop/sa/reviews-0"},
		},
		{
			name:   "workload ip of a non-mesh pod: plain TCP to the port dialed",
			dialed: "10.244.0.50:8080", src: client,
			want: dest{"direct", "TCP", "10.244.0.50:8080", "", "legacy-0", "", "spiffe://cluster.local/ns/shop/sa/legacy-0"},
		},
		{
			name:   "workload ip with a workload waypoint",
			dialed: "10.244.0.90:5432", src: client,
			want: dest{"waypoint", "HBONE", "10.244.0.100:15008", "10.244.0.90:5432", "waypoint-0", "", "spiffe://cluster.local/ns/shop/sa/waypoint-0"},
		},
		{
			name:   "workload waypoint itself goes direct",
			dialed: "10.244.0.90:5432", src: waypoint,
			want: dest{"direct", "HBONE", "10.244.0.90:15008", "10.244.0.90:5432", "db-0", "", "spiffe://cluster.local/ns/shop/sa/db-0"},
		},
		{
			name:   "workload waypoint with an unknown source",
			dialed: "10.244.0.90:5432",
			want:   dest{"waypoint", "HBONE", "10.244.0.100:15008", "10.244.0.90:5432", "waypoint-0", "", "spiffe://cluster.local/ns/shop/sa/waypoint-0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dialed := ap(tc.dialed)
			got, err := s.DestinationFor("", dialed.Addr(), dialed.Port(), tc.src)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				var de *DestinationError
				if !errors.As(err, &de) || de.Dialed != dialed {
					t.Errorf("err = %#v, want a *DestinationError for %s", err, dialed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(got)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestDestinationSharedVIP(t *testing.T) {
	a := service("a", "shared", "10.96.1.1", 80, 80)
	b := service("b", "shared", "10.96.1.1", 80, 80)
	a.Canonical, b.Canonical = false, true
	c := service("c", "shared", "10.96.1.1", 80, 80)
	c.Canonical = false
	c.Visibility = workloadapi.Service_NAMESPACE
	s := storeWith(t, Config{}, []*workloadapi.Address{sAddr(a), sAddr(b), sAddr(c)})
	for _, tc := range []struct{ ns, want string }{
		{"a", "a"}, // the client's namespace first
		{"b", "b"},
		{"c", "c"},
		{"other", "b"}, // then the canonical one; c is only visible to c
		{"", "b"},
	} {
		if got := s.ServiceByVIP("", addr("10.96.1.1"), tc.ns); got == nil || got.Namespace != tc.want {
			t.Errorf("client in %q: got %v, want the service of %q", tc.ns, got, tc.want)
		}
	}
}

// Unhealthy and zero-capacity endpoints are never picked; the others all
// are, at random.
func TestDestinationPicksHealthyEndpoints(t *testing.T) {
	s := storeWith(t, Config{}, []*workloadapi.Address{
		sAddr(service("shop", "web", "10.96.0.1", 80, 8080)),
		wAddr(pod("shop", "web-0", "10.244.0.1", inService("shop", "web", 80, 8080))),
		wAddr(pod("shop", "web-1", "10.244.0.2", inService("shop", "web", 80, 8080))),
		wAddr(pod("shop", "web-2", "10.244.0.3", inService("shop", "web", 80, 8080), unhealthy)),
		wAddr(pod("shop", "web-3", "10.244.0.4", inService("shop", "web", 80, 8080), capacity(0))),
		wAddr(pod("other", "web-4", "10.244.0.5", inService("shop", "web", 80, 8080), func(w *workloadapi.Workload) { w.Network = "remote" })),
	})
	seen := map[string]int{}
	for range 400 {
		d, err := s.DestinationFor("", addr("10.96.0.1"), 80, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.Authority.Port() != 8080 {
			t.Fatalf("authority %s, want target port 8080", d.Authority)
		}
		seen[d.Workload.Name]++
	}
	if len(seen) != 2 || seen["web-0"] == 0 || seen["web-1"] == 0 {
		t.Errorf("picked %v, want web-0 and web-1 only", seen)
	}
}

func TestDestinationIPFamily(t *testing.T) {
	dual := pod("shop", "dual-0", "10.244.0.7", inService("shop", "dual", 80, 80))
	dual.Addresses = append(dual.Addresses, ipBytes("fd00::7"))
	v6svc := service("shop", "dual", "fd00:96::1", 80, 80)
	v6svc.Addresses = append(v6svc.Addresses, &workloadapi.NetworkAddress{Address: ipBytes("10.96.0.7")})
	s := storeWith(t, Config{}, []*workloadapi.Address{sAddr(v6svc), wAddr(dual)})
	for dialed, want := range map[string]string{
		"[fd00:96::1]:80": "[fd00::7]:80",
		"10.96.0.7:80":    "10.244.0.7:80",
		"[fd00::7]:80":    "[fd00::7]:80",
		"10.244.0.7:80":   "10.244.0.7:80",
	} {
		a := ap(dialed)
		d, err := s.DestinationFor("", a.Addr(), a.Port(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Authority.String(); got != want {
			t.Errorf("dial %s: authority %s, want %s", dialed, got, want)
		}
	}
}

func TestSourceWorkload(t *testing.T) {
	// Two workloads with one IP (a pod on another node reusing an address
	// during churn): the local one wins.
	s := storeWith(t, Config{Node: "node-b"}, []*workloadapi.Address{
		wAddr(pod("shop", "old", "10.244.0.1", onNode("node-a"))),
		wAddr(pod("shop", "new", "10.244.0.1", onNode("node-b"))),
	})
	if w := s.SourceWorkload(addr("10.244.0.1")); w == nil || w.Name != "new" {
		t.Errorf("SourceWorkload = %v, want new (on node-b)", w)
	}
	// IPv4-mapped addresses, as a dual-stack socket reports them.
	if w := s.SourceWorkload(addr("::ffff:10.244.0.1")); w == nil {
		t.Error("SourceWorkload(::ffff:10.244.0.1) = nil")
	}
	if w := s.SourceWorkload(addr("10.244.0.2")); w != nil {
		t.Errorf("SourceWorkload(unknown) = %v", w)
	}
	if got := len(s.WorkloadsOnNode("node-a")); got != 1 {
		t.Errorf("WorkloadsOnNode(node-a) has %d, want 1", got)
	}
}

func TestIdentity(t *testing.T) {
	w := &workloadapi.Workload{Namespace: "shop"}
	if got := WorkloadIdentity(w).String(); got != "spiffe://cluster.local/ns/shop/sa/default" {
		t.Errorf("defaults: %s", got)
	}
	w.TrustDomain, w.ServiceAccount = "example.org", "cart"
	if got := WorkloadIdentity(w).String(); got != "spiffe://example.org/ns/shop/sa/cart" {
		t.Errorf("identity: %s", got)
	}
	s := storeWith(t, Config{}, []*workloadapi.Address{wAddr(pod("shop", "cart-0", "10.0.0.1"))})
	if got := s.Workload(uid("shop", "cart-0")).Identity().String(); got != "spiffe://cluster.local/ns/shop/sa/cart-0" {
		t.Errorf("Workload.Identity: %s", got)
	}
}

// A service address sent with a prefix length is a CIDR VIP: any address in
// it resolves to the service, the longest prefix first.
func TestDestinationCIDRVIP(t *testing.T) {
	wide := service("shop", "wide", "", 80, 80)
	wide.Addresses = []*workloadapi.NetworkAddress{{Address: ipBytes("240.240.0.0"), Length: proto32(16)}}
	narrow := service("shop", "narrow", "", 80, 80)
	narrow.Addresses = []*workloadapi.NetworkAddress{{Address: ipBytes("240.240.1.0"), Length: proto32(24)}}
	exact := service("shop", "exact", "", 80, 80)
	exact.Addresses = []*workloadapi.NetworkAddress{{Address: ipBytes("240.240.1.1"), Length: proto32(32)}}
	s := storeWith(t, Config{}, []*workloadapi.Address{sAddr(wide), sAddr(narrow), sAddr(exact)})
	for ip, want := range map[string]string{"240.240.9.9": "wide", "240.240.1.9": "narrow", "240.240.1.1": "exact"} {
		if got := s.ServiceByVIP("", addr(ip), ""); got == nil || got.Name != want {
			t.Errorf("%s: %v, want %s", ip, got, want)
		}
	}
	if got := s.ServiceByVIP("", addr("240.241.0.1"), ""); got != nil {
		t.Errorf("outside every CIDR: %v", got.Name)
	}
	if err := s.ApplyAddresses(nil, []string{svcKey("shop", "narrow")}); err != nil {
		t.Fatal(err)
	}
	if got := s.ServiceByVIP("", addr("240.240.1.9"), ""); got == nil || got.Name != "wide" {
		t.Errorf("after removing narrow: %v, want wide", got)
	}
}

func proto32(v uint32) *uint32 { return &v }

// TestWaypointDestination: a waypoint resolves the services and workloads
// it fronts to their endpoints, never to a waypoint (itself).
func TestWaypointDestination(t *testing.T) {
	s := storeWith(t, Config{}, meshAddresses())
	for _, c := range []struct {
		name     string
		dialed   string
		clientNS string
		want     dest
		wantErr  error
	}{
		{
			name: "vip of a service with a waypoint: its endpoints, not the waypoint (cart has none)", dialed: "10.96.0.70:80",
			wantErr: ErrNoHealthyEndpoint,
		},
		{
			name: "vip without waypoint", dialed: "10.96.0.40:9080", clientNS: "shop",
			want: dest{"direct", "HBONE", "10.244.0.40:15008", "10.244.0.40:9080", "reviews-0", "reviews.shop", "spiffe://cluster.local/ns/shop/sa/reviews-0"},
		},
		{
			name:   "workload ip with a workload waypoint goes to the workload",
			dialed: "10.244.0.90:5432",
			want:   dest{"direct", "HBONE", "10.244.0.90:15008", "10.244.0.90:5432", "db-0", "", "spiffe://cluster.local/ns/shop/sa/db-0"},
		},
		{name: "passthrough service", dialed: "10.96.0.83:80", want: dest{Kind: "passthrough", Address: "10.96.0.83:80", Service: "pass.shop"}},
		{name: "unknown ip", dialed: "93.184.216.34:443", want: dest{Kind: "passthrough", Address: "93.184.216.34:443"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := ap(c.dialed)
			d, err := s.WaypointDestination("", a.Addr(), a.Port(), c.clientNS)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, summarize(d)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	d, err := s.ServiceDestination("", svcKey("shop", "reviews"), 9080)
	if err != nil {
		t.Fatal(err)
	}
	want := dest{"direct", "HBONE", "10.244.0.40:15008", "10.244.0.40:9080", "reviews-0", "reviews.shop", "spiffe://cluster.local/ns/shop/sa/reviews-0"}
	if diff := cmp.Diff(want, summarize(d)); diff != "" {
		t.Errorf("ServiceDestination (-want +got):\n%s", diff)
	}
	if _, err := s.ServiceDestination("", svcKey("shop", "nope"), 80); !errors.Is(err, ErrNoHealthyEndpoint) {
		t.Errorf("unknown service: %v, want ErrNoHealthyEndpoint", err)
	}
}
