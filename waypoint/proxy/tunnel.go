package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/routeapi"
)

// Tunnel modes, in the "tunnel closed" log line.
const (
	modeTCP  = "tcp"  // passed through to an endpoint
	modeHTTP = "http" // served as HTTP, each request routed
)

// tunnelStats are the byte counts and outcome of one tunnel, read by
// tunnelClosed after the handler returned.
type tunnelStats struct {
	mode           string
	upstream       string // tcp: the endpoint dialled
	received, sent atomic.Int64
	err            error
	requests       atomic.Int64 // http: requests served
}

// admitTunnel is hbone.Server.Authorize: every tunnel that passed the
// authority check is admitted (L4 policy is the destination ztunnel's) and
// counted as open from here, before its 200 is sent, until tunnelClosed
// reports it: the drain cannot miss a tunnel whose handler has not started.
func (dp *dataPlane) admitTunnel(_ context.Context, req *hbone.Request) error {
	dp.active.Add(1)
	dp.stats.Store(req, &tunnelStats{})
	return nil
}

// handleTunnel is hbone.Server.Handle: the 200 has been sent; decide what
// the tunnel carries and serve it. Ports with routes say their protocol;
// others are detected from the client's first bytes.
func (dp *dataPlane) handleTunnel(ctx context.Context, req *hbone.Request, st *hbone.Stream) {
	stats := &tunnelStats{}
	if v, ok := dp.stats.Load(req); ok {
		stats = v.(*tunnelStats)
	}
	defer func() {
		if p := recover(); p != nil {
			dp.m.panics.Inc()
			stats.err = fmt.Errorf("internal error: %v", p)
			dp.log.Error("tunnel handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()),
				"dst", req.Authority, "peer", req.Peer.String())
		}
	}()

	tc := &tunnelConn{st: st, r: st, stats: stats, req: req, closed: make(chan struct{})}
	port := dp.cfg.Routes.lookup(req.Destination)
	proto := routeapi.Protocol_PROTOCOL_UNSPECIFIED
	if port != nil {
		proto = port.Protocol
	}
	switch proto {
	case routeapi.Protocol_PROTOCOL_TCP:
	case routeapi.Protocol_PROTOCOL_HTTP, routeapi.Protocol_PROTOCOL_HTTP2, routeapi.Protocol_PROTOCOL_GRPC:
		dp.serveTunnelHTTP(ctx, tc)
		return
	default:
		br := bufio.NewReaderSize(st, 4096)
		tc.r = br
		if isHTTP(st, br, dp.lim.DetectTimeout) {
			dp.serveTunnelHTTP(ctx, tc)
			return
		}
	}
	dp.passThrough(ctx, tc)
}

// serveTunnelHTTP hands the tunnel to the in-tunnel HTTP server (HTTP/1.1,
// or HTTP/2 when it opens with the prior-knowledge preface) and waits until
// that connection ends. A stream reset by the client closes it.
func (dp *dataPlane) serveTunnelHTTP(ctx context.Context, tc *tunnelConn) {
	tc.stats.mode = modeHTTP
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	defer stop()
	if !dp.httpLn.push(ctx, tc) {
		tc.Close()
		return
	}
	<-tc.closed
}

// http2Preface is the client connection preface of HTTP/2.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// isHTTP reads the first bytes of the tunnel into br (they stay buffered
// for whoever reads br next) and reports whether they start an HTTP/1.x
// request line (an upper-case method token and a space) or the HTTP/2
// preface. Anything else, EOF, or nothing within timeout is not HTTP.
func isHTTP(st *hbone.Stream, br *bufio.Reader, timeout time.Duration) bool {
	st.SetReadDeadline(time.Now().Add(timeout))
	defer st.SetReadDeadline(time.Time{})
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			_ = err // EOF, timeout or reset: not HTTP (passed through as is)
			return false
		}
		switch looksHTTP(b) {
		case verdictHTTP:
			return true
		case verdictOther:
			return false
		}
	}
}

type verdict uint8

const (
	verdictMore verdict = iota
	verdictHTTP
	verdictOther
)

// looksHTTP judges the first bytes of a connection.
func looksHTTP(b []byte) verdict {
	// The HTTP/2 preface starts with "PRI ", which the method rule below
	// already accepts; the server tells the two apart.
	const maxMethod = 20
	for i, c := range b {
		switch {
		case c == ' ' && i > 0:
			return verdictHTTP
		case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
			if i >= maxMethod {
				return verdictOther
			}
		default:
			return verdictOther
		}
	}
	return verdictMore
}

// tunnelConn is one tunnel as a net.Conn for the HTTP server or the relay:
// it counts bytes, replays what detection read, and reports the original
// client (from the CONNECT's forwarded header) as its remote address.
type tunnelConn struct {
	st    *hbone.Stream
	r     io.Reader // st, or a bufio.Reader over it
	stats *tunnelStats
	req   *hbone.Request

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.stats.received.Add(int64(n))
	return n, err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	n, err := c.st.Write(p)
	c.stats.sent.Add(int64(n))
	return n, err
}

// CloseWrite ends our direction (END_STREAM): the relay passes half-closes
// on, and net/http uses it before closing a connection it rejected.
func (c *tunnelConn) CloseWrite() error { return c.st.CloseWrite() }

func (c *tunnelConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.st.Close()
	})
	return nil
}

func (c *tunnelConn) LocalAddr() net.Addr { return c.st.LocalAddr() }

// RemoteAddr is the original client (forwarded for=) when the client's
// ztunnel said, else the HBONE peer.
func (c *tunnelConn) RemoteAddr() net.Addr {
	if c.req.ClientAddr.IsValid() {
		return net.TCPAddrFromAddrPort(c.req.ClientAddr)
	}
	return c.st.RemoteAddr()
}

func (c *tunnelConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// checkAuthority is hbone.Server.CheckAuthority: a tunnel may go to any
// unicast ip:port, except this pod's own loopback unless allowed (the
// waypoint's admin ports live there).
func checkAuthority(allowLoopback bool) func(string) error {
	return func(authority string) error {
		ap, err := netip.ParseAddrPort(authority)
		if err != nil {
			return err
		}
		return checkDestination(ap, allowLoopback)
	}
}

// checkDestination refuses addresses no tunnel or plain-TCP upstream may
// go to.
func checkDestination(ap netip.AddrPort, allowLoopback bool) error {
	ip := ap.Addr().Unmap()
	switch {
	case ap.Port() == 0:
		return fmt.Errorf("destination %s: port 0", ap)
	case ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("destination %s is not a unicast address", ap)
	case ip.IsLoopback() && !allowLoopback:
		return fmt.Errorf("destination %s is the waypoint's own loopback", ap)
	}
	return nil
}

// tunnelClosed is hbone.Server.OnTunnelClose: the CONNECT counter and one
// "tunnel closed" line per tunnel, refused ones included.
func (dp *dataPlane) tunnelClosed(r hbone.TunnelResult) {
	dp.m.requests.WithLabelValues(strconv.Itoa(r.Status)).Inc()
	req := r.Request
	received, sent, err := r.Received, r.Sent, r.Err
	var stats *tunnelStats
	if v, ok := dp.stats.LoadAndDelete(req); ok { // admitted: counted in active
		dp.active.Add(-1)
		stats = v.(*tunnelStats)
		received, sent = stats.received.Load(), stats.sent.Load()
		if err == nil {
			err = stats.err
		}
	}
	attrs := []slog.Attr{
		slog.String("peer", req.Peer.String()),
		slog.String("dst", req.Authority),
		slog.Int("status", r.Status),
		slog.Int64("received", received),
		slog.Int64("sent", sent),
		slog.Float64("durationMs", float64(r.Duration.Microseconds())/1000),
	}
	if stats != nil && stats.mode != "" {
		attrs = append(attrs, slog.String("mode", stats.mode))
		if stats.upstream != "" {
			attrs = append(attrs, slog.String("upstream", stats.upstream))
		}
		if stats.mode == modeHTTP {
			attrs = append(attrs, slog.Int64("requests", stats.requests.Load()))
		}
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
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	dp.accessLog.LogAttrs(context.Background(), slog.LevelInfo, "tunnel closed", attrs...)
}
