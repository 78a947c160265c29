package proxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// passThroughDialTimeout bounds reaching the endpoint of a TCP tunnel.
const passThroughDialTimeout = 10 * time.Second

// passThrough relays a tunnel that is not HTTP (or whose port is declared
// TCP) to an endpoint of its destination: over HBONE with the waypoint's
// identity when the endpoint is in the mesh, plain TCP otherwise. The 200
// has already been sent (hbone.Server.Handle), so a failed dial shows as
// the tunnel closing.
func (dp *dataPlane) passThrough(ctx context.Context, tc *tunnelConn) {
	tc.stats.mode = modeTCP
	req := tc.req
	d, err := dp.cfg.Store.WaypointDestination(dp.cfg.Network, req.Destination.Addr(), req.Destination.Port(), req.Peer.Namespace)
	if err != nil {
		tc.stats.err = fmt.Errorf("no endpoint: %w", err)
		dp.m.tcpFailed.Inc()
		return
	}
	dctx, cancel := context.WithTimeout(ctx, passThroughDialTimeout)
	up, err := dp.dialEndpoint(dctx, d, hbone.Target{ClientAddr: req.ClientAddr, Baggage: req.Baggage, Traceparent: req.Traceparent})
	cancel()
	tc.stats.upstream = d.Address.String()
	if err != nil {
		tc.stats.err = fmt.Errorf("connect to %s: %w", d.Address, err)
		dp.m.tcpFailed.Inc()
		return
	}
	uc := &upstreamConn{Conn: up, m: dp.m}
	dp.m.opened.Inc()
	_, _, tc.stats.err = hbone.Relay(tc, uc)
}

// dialEndpoint connects to a resolved destination: HBONE to its ztunnel
// (authority = the endpoint's ip:port, the waypoint's own identity, the
// endpoint's identity checked) when it is in the mesh, plain TCP to it
// otherwise. tmpl carries the per-tunnel CONNECT headers (forwarded,
// baggage, traceparent), zero for shared HTTP connections.
func (dp *dataPlane) dialEndpoint(ctx context.Context, d state.Destination, tmpl hbone.Target) (net.Conn, error) {
	if d.Protocol == state.HBONE && d.Kind != state.Passthrough {
		t := tmpl
		t.Address = d.Address.String()
		t.Authority = d.Authority.String()
		t.Source = dp.cfg.Identity
		t.Destination = d.Identity
		st, err := dp.cfg.Dialer.DialContext(ctx, t)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	if err := checkDestination(d.Address, dp.cfg.AllowLoopback); err != nil {
		return nil, err
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.Address.String())
}

// upstreamConn counts the bytes of a passed-through connection as they flow,
// and its close, in the istio_tcp_* metrics.
type upstreamConn struct {
	net.Conn
	m         *metrics
	closeOnce sync.Once
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.m.sent.Add(float64(n))
	}
	return n, err
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.m.received.Add(float64(n))
	}
	return n, err
}

// CloseWrite passes a half-close on, so hbone.Relay can forward the client's
// END_STREAM.
func (c *upstreamConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *upstreamConn) Close() error {
	c.closeOnce.Do(func() { c.m.closed.Inc() })
	return c.Conn.Close()
}
