package l7bench

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/ztunnel/proxy"
)

// TestZtunnelConfigFromXDS: the ztunnels' resolver takes the translated mesh
// from the bench's control plane over delta ADS with TLS and a token, as in
// the run, and resolves as the topology needs: the reviews VIP to the
// waypoint (the VIP as authority), v1's address to v1's pod, an address
// outside the mesh to plain TCP; inbound, the waypoint is let in and named.
func TestZtunnelConfigFromXDS(t *testing.T) {
	res, err := compileMesh()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := startControlPlane(context.Background(), t.TempDir(), res)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.close()
	client := proxy.Pod{Name: "client-0", IPs: []netip.Addr{clientIP}}
	cfg := l4bench.XDSConfig{Address: cp.hostAddr, ServerName: caServerName, RootCertFile: cp.files.Root,
		TokenFile: cp.files.ZtunnelToken, Node: "client", Pods: []proxy.Pod{client}, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := newMeshResolver(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
		want proxy.Upstream
	}{
		{"reviews VIP", netip.AddrPortFrom(reviewsVIP, portService),
			proxy.Upstream{NextHop: netip.AddrPortFrom(waypointIP, portHBONE), Authority: netip.AddrPortFrom(reviewsVIP, portService).String(), Identity: waypointID}},
		{"v1's pod", netip.AddrPortFrom(v1IP, portApp),
			proxy.Upstream{NextHop: netip.AddrPortFrom(v1IP, portHBONE), Authority: netip.AddrPortFrom(v1IP, portApp).String(), Identity: reviewsID}},
		{"outside the mesh", netip.MustParseAddrPort("192.0.2.1:80"), proxy.Upstream{Passthrough: true}},
	} {
		up, err := r.Outbound(ctx, client, tc.dst)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if up.Passthrough != tc.want.Passthrough || up.NextHop != tc.want.NextHop || up.Authority != tc.want.Authority || up.Identity != tc.want.Identity {
			t.Errorf("%s: %+v, want %+v", tc.name, up, tc.want)
		}
	}
	d, err := r.Inbound(ctx, proxy.InboundConn{SourceIdentity: waypointID,
		Source: netip.AddrPortFrom(waypointIP, 40000), Destination: netip.AddrPortFrom(v1IP, portApp)})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || d.Source.Name != "waypoint-0" {
		t.Errorf("inbound from the waypoint: %+v, want allowed and named waypoint-0", d)
	}

	// A token the control plane does not know: no configuration, and the
	// error says why.
	bad := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(bad, []byte("nobody"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TokenFile = bad
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := newMeshResolver(short, cfg); err == nil || !strings.Contains(err.Error(), "no workload") {
		t.Errorf("unknown token: %v, want no configuration", err)
	}
}
