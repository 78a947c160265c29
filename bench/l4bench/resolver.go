package l4bench

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/proxy"
)

// The ztunnel role's static way of deciding where a connection goes and
// who may connect (proxy.Resolver); l7bench's xDS-fed one is in package
// l7bench.

// staticResolver is the whole mesh of the benchmark: the client pod's
// outbound traffic to the peer goes over HBONE to the peer's 15008 (which
// must present peerID); inbound, only allow is let in and plaintext is
// refused.
type staticResolver struct {
	self, peerID, allow hbone.Identity
	peer                netip.Addr
}

func (r staticResolver) Outbound(_ context.Context, _ proxy.Pod, dst netip.AddrPort) (proxy.Upstream, error) {
	if dst.Addr() != r.peer {
		return proxy.Upstream{}, fmt.Errorf("no route to %s", dst)
	}
	return proxy.Upstream{
		NextHop:  netip.AddrPortFrom(r.peer, capture.DefaultHBONEPort),
		Identity: r.peerID,
		Workload: proxy.WorkloadInfo{Name: r.peerID.ServiceAccount, Namespace: r.peerID.Namespace, Identity: r.peerID},
	}, nil
}

func (r staticResolver) Inbound(_ context.Context, c proxy.InboundConn) (proxy.Decision, error) {
	switch {
	case c.Plaintext:
		return proxy.Decision{Policy: "STRICT mTLS"}, nil
	case c.SourceIdentity != r.allow:
		return proxy.Decision{Policy: "l4bench allow-client"}, nil
	}
	return proxy.Decision{Allow: true, Policy: "l4bench allow-client",
		Source: proxy.WorkloadInfo{Name: r.allow.ServiceAccount, Namespace: r.allow.Namespace, Identity: r.allow}}, nil
}
