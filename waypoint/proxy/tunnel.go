package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ambientlite/mesh/internal/hbone"
)

// upstreams dials the destinations of admitted tunnels (plain TCP: L4
// pass-through), counts the connections open, and feeds the TCP metrics.
type upstreams struct {
	m      *metrics
	dialer net.Dialer
	active atomic.Int64
}

// dial is hbone.Server.Dial.
func (u *upstreams) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := u.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	u.active.Add(1)
	u.m.opened.Inc()
	return &upstreamConn{Conn: c, u: u}, nil
}

// upstreamConn counts bytes as they pass and the connection's close.
type upstreamConn struct {
	net.Conn
	u         *upstreams
	closeOnce sync.Once
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.u.m.sent.Add(float64(n))
	}
	return n, err
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.u.m.received.Add(float64(n))
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
	c.closeOnce.Do(func() {
		c.u.active.Add(-1)
		c.u.m.closed.Inc()
	})
	return c.Conn.Close()
}

// checkAuthority is hbone.Server.CheckAuthority: a tunnel may go to any
// unicast ip:port, except this pod's own loopback unless allowed (the
// waypoint's admin ports live there). Which destinations a waypoint serves
// comes with the route configuration; until then this is all it checks.
func checkAuthority(allowLoopback bool) func(string) error {
	return func(authority string) error {
		ap, err := netip.ParseAddrPort(authority)
		if err != nil {
			return err
		}
		ip := ap.Addr().Unmap()
		switch {
		case ap.Port() == 0:
			return fmt.Errorf("destination %s: port 0", authority)
		case ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("destination %s is not a unicast address", authority)
		case ip.IsLoopback() && !allowLoopback:
			return fmt.Errorf("destination %s is the waypoint's own loopback", authority)
		}
		return nil
	}
}

// tunnelClosed is hbone.Server.OnTunnelClose: the request counter and one
// access-log line per tunnel.
func tunnelClosed(m *metrics, log *slog.Logger) func(hbone.TunnelResult) {
	return func(r hbone.TunnelResult) {
		m.requests.WithLabelValues(strconv.Itoa(r.Status)).Inc()
		req := r.Request
		attrs := []slog.Attr{
			slog.String("peer", req.Peer.String()),
			slog.String("dst", req.Authority),
			slog.Int("status", r.Status),
			slog.Int64("received", r.Received),
			slog.Int64("sent", r.Sent),
			slog.Float64("durationMs", float64(r.Duration.Microseconds())/1000),
		}
		if req.ClientAddr.IsValid() {
			attrs = append(attrs, slog.String("src", req.ClientAddr.String()))
		}
		if req.RemoteAddr != nil {
			attrs = append(attrs, slog.String("peerAddr", req.RemoteAddr.String()))
		}
		if req.Traceparent != "" {
			attrs = append(attrs, slog.String("traceparent", req.Traceparent))
		}
		if r.Err != nil {
			attrs = append(attrs, slog.String("err", r.Err.Error()))
		}
		log.LogAttrs(context.Background(), slog.LevelInfo, "tunnel closed", attrs...)
	}
}
