package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// Upstream connection pools: HTTP/1.1 keep-alive connections and HTTP/2
// connections, each one HBONE tunnel, pooled per endpoint (the transport's
// key is the endpoint's ip:port, which every request's URL names). The
// endpoint is chosen per request, so requests are balanced across
// endpoints, not connections.
const (
	upstreamIdleTimeout      = 90 * time.Second
	upstreamMaxIdlePerHost   = 64
	upstreamHTTP2MaxStreams  = 100 // per connection; more open another connection
	upstreamResponseHeaderKB = 60  // response header limit, as for requests
)

// target is where a request is forwarded before an endpoint is picked: a
// route backend (a service by name and port) or, without routes, the
// destination of the tunnel itself (a service VIP or workload IP and port).
type target struct {
	key  string         // "<ns>/<hostname>" of a route backend; "" for addr
	addr netip.AddrPort // the tunnel's destination when key is ""
	port uint16
	// h2 says to speak HTTP/2 with prior knowledge (declared HTTP2/GRPC,
	// or a request that arrived over HTTP/2 without a declared protocol).
	h2 bool
}

// backendTarget is the target of a route Destination for request r.
func backendTarget(d *routeapi.Destination, r *http.Request) target {
	return target{
		key:  routeapi.ResourceName(d.GetNamespace(), d.GetHostname()),
		port: uint16(d.GetPort()),
		h2:   speaksH2(d.GetProtocol(), r),
	}
}

// speaksH2 is how to talk to a destination of protocol p about r (see
// routeapi.Destination.protocol): HTTP/2 for HTTP2 and GRPC, else the
// protocol of the request (gRPC always needs HTTP/2).
func speaksH2(p routeapi.Protocol, r *http.Request) bool {
	switch p {
	case routeapi.Protocol_PROTOCOL_HTTP2, routeapi.Protocol_PROTOCOL_GRPC:
		return true
	}
	return r.ProtoMajor == 2 || isGRPC(r)
}

// resolve picks an endpoint for t, per request.
func (dp *dataPlane) resolve(t target, clientNS string) (state.Destination, error) {
	if t.key != "" {
		return dp.cfg.Store.ServiceDestination(dp.cfg.Network, t.key, t.port)
	}
	return dp.cfg.Store.WaypointDestination(dp.cfg.Network, t.addr.Addr(), t.addr.Port(), clientNS)
}

// hostOf is the host:port an attempt's URL names for the endpoint d: the
// transports pool connections by it, and dialUpstream finds d from it.
func hostOf(d state.Destination) string {
	if d.Protocol == state.HBONE && d.Kind != state.Passthrough {
		return d.Authority.String()
	}
	return d.Address.String()
}

// dialKey carries the endpoint of an attempt to the transport's dial.
type dialKey struct{}

// newTransports returns the HTTP/1.1 and the HTTP/2 (prior knowledge)
// upstream transports. Both dial through dialUpstream.
func (dp *dataPlane) newTransports() (h1, h2 *http.Transport) {
	base := func() *http.Transport {
		return &http.Transport{
			DialContext:            dp.dialUpstream,
			DisableCompression:     true, // a proxy passes Accept-Encoding as the client sent it
			MaxIdleConnsPerHost:    upstreamMaxIdlePerHost,
			IdleConnTimeout:        upstreamIdleTimeout,
			MaxResponseHeaderBytes: upstreamResponseHeaderKB << 10,
			HTTP2:                  &http.HTTP2Config{MaxConcurrentStreams: upstreamHTTP2MaxStreams},
		}
	}
	h1, h2 = base(), base()
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetUnencryptedHTTP2(true)
	return h1, h2
}

// dialUpstream is the transports' DialContext: the endpoint an attempt
// picked travels in the context; a connection is made to it as
// dialEndpoint says (HBONE with the waypoint's identity, or plain TCP).
func (dp *dataPlane) dialUpstream(ctx context.Context, _, addr string) (net.Conn, error) {
	d, ok := ctx.Value(dialKey{}).(*state.Destination)
	if !ok || hostOf(*d) != addr {
		return nil, &upstreamError{status: http.StatusServiceUnavailable, flag: flagUpstreamConnect,
			err: fmt.Errorf("no endpoint for %s in the request context", addr)}
	}
	c, err := dp.dialEndpoint(ctx, *d, hbone.Target{})
	if err != nil {
		return nil, &upstreamError{status: http.StatusServiceUnavailable, flag: flagUpstreamConnect,
			retryable: hbone.Retryable(err) || isNetError(err), err: fmt.Errorf("connect to %s: %w", d.Address, err)}
	}
	return c, nil
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && !errors.Is(err, context.Canceled)
}

// Response flags (label response_flags, access log), Envoy's names.
const (
	flagNone            = "-"
	flagNoRoute         = "NR"  // no rule matched: 404
	flagNoHealthy       = "UH"  // no endpoint: 503
	flagUpstreamConnect = "UF"  // could not connect: 503
	flagUpstreamReset   = "UC"  // the connection ended before a response: 503
	flagTimeout         = "UT"  // request or backend-request timeout: 504
	flagRetryLimit      = "URX" // retries exhausted on retryable responses
	flagDownstream      = "DC"  // the client went away
	flagInvalidBackend  = "NC"  // the rule's backend is invalid: 500
	flagTooLarge        = "RTL" // request body over the limit: 413 (ours)
	flagDenied          = "UAEX"
	flagInternal        = "INT" // the waypoint failed (a recovered panic): 500 (ours)
)

// upstreamError is a failed attempt, with how to answer it.
type upstreamError struct {
	status    int    // 503, 504, ...
	flag      string // response flag
	retryable bool   // another attempt (endpoint) may succeed
	err       error
}

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }
