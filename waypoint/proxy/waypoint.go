package proxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/ztunnel/state"
)

// Limits of the HTTP data path. Every field has the documented default when
// zero; README.md lists them.
type Limits struct {
	// MaxRequestBody is the largest request body accepted: a larger
	// Content-Length is answered 413 at once, a streamed body that grows past
	// it is cut and answered 413 (or reset if the response has started).
	// Default DefaultMaxRequestBody; negative means no limit.
	MaxRequestBody int64
	// RetryBuffer is how much of a request body is kept so that a failed
	// attempt can be retried (and mirrors get a copy). A body that grows
	// past it is still forwarded, once, and not mirrored. Default
	// DefaultRetryBuffer.
	RetryBuffer int
	// MaxHeaderBytes bounds the request line and headers (HTTP/1.1) or the
	// header list (HTTP/2): more is answered 431. Default
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// DetectTimeout is how long the waypoint waits for a client's first
	// bytes on a port whose protocol is not declared before it passes the
	// connection through as TCP (server-first protocols send nothing).
	// Default DefaultDetectTimeout.
	DetectTimeout time.Duration
	// ReadHeaderTimeout bounds the wait for a request's headers; IdleTimeout
	// closes a tunnel's HTTP connection without requests for that long.
	// Defaults DefaultReadHeaderTimeout and DefaultIdleTimeout.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// MirrorTimeout bounds a mirrored request; MaxMirrors bounds the mirrored
	// requests in flight (more are dropped and counted). Defaults
	// DefaultMirrorTimeout and DefaultMaxMirrors.
	MirrorTimeout time.Duration
	MaxMirrors    int
}

// Defaults of Limits.
const (
	DefaultMaxRequestBody    = 1 << 30
	DefaultRetryBuffer       = 64 << 10
	DefaultMaxHeaderBytes    = 60 << 10
	DefaultDetectTimeout     = 100 * time.Millisecond
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout       = time.Hour
	DefaultMirrorTimeout     = 10 * time.Second
	DefaultMaxMirrors        = 256
)

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if l.MaxRequestBody == 0 {
		l.MaxRequestBody = DefaultMaxRequestBody
	}
	if l.RetryBuffer == 0 {
		l.RetryBuffer = DefaultRetryBuffer
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxMirrors == 0 {
		l.MaxMirrors = DefaultMaxMirrors
	}
	def(&l.DetectTimeout, DefaultDetectTimeout)
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	def(&l.MirrorTimeout, DefaultMirrorTimeout)
	return l
}

// dataPlaneConfig is what the data path needs; serve builds it from
// Options, tests directly.
type dataPlaneConfig struct {
	Identity hbone.Identity // the waypoint's own
	// Dialer opens HBONE tunnels to backends with Identity's certificate.
	Dialer *hbone.Dialer
	// Store resolves services and workloads (from istio.workload.Address);
	// Routes holds the route table (from ServiceRoutes).
	Store   *state.Store
	Routes  *routeTable
	Network string // Istio network of this waypoint; "" is the default
	Limits  Limits
	// AllowLoopback lets plain-TCP upstreams (pass-through, workloads out
	// of the mesh) be this pod's loopback: tests and local runs only.
	AllowLoopback bool
	Metrics       *metrics
	Log           *slog.Logger // events
	AccessLog     *slog.Logger // one line per request and per tunnel
	// Authorize is the hook for L7 AuthorizationPolicy: called for every
	// request before routing; an error answers 403 (gRPC PERMISSION_DENIED)
	// and is logged. Nil allows every request.
	Authorize func(ctx context.Context, r *http.Request, c *caller) error
	// StartSpan is the hook for span export: called for every request once
	// its traceparent is settled; the returned function is called with the
	// final status when the request ends. Nil: no spans (traceparent is
	// still propagated).
	StartSpan func(r *http.Request, traceparent string) (end func(status int))
}

// caller is what the waypoint knows about who sent a request and what it
// addressed: what an L7 policy decides on, besides the request itself.
type caller struct {
	// Identity is the verified SPIFFE identity of the HBONE client (the
	// client workload's, as its ztunnel presents it).
	Identity hbone.Identity
	// Workload is the client's workload, from its address; nil if unknown.
	Workload *state.Workload
	// Addr is the original client (the tunnel's forwarded for=); zero if
	// the client's ztunnel did not say.
	Addr netip.AddrPort
	// Destination is what the client addressed: the tunnel's :authority
	// (a service VIP:port, or a workload IP:port).
	Destination netip.AddrPort
	// Service is the Service addressed (by its VIP); nil if none.
	Service *state.Service
}

// dataPlane serves what arrives in HBONE tunnels: HTTP (routed, forwarded
// over HBONE to backends) or TCP (passed through to an endpoint).
type dataPlane struct {
	cfg       dataPlaneConfig
	lim       Limits
	m         *metrics
	log       *slog.Logger
	accessLog *slog.Logger

	// active counts admitted tunnels not yet reported closed (the drain
	// waits for them).
	active atomic.Int64
	// stats holds the byte counts of admitted tunnels, for OnTunnelClose
	// (*hbone.Request → *tunnelStats).
	stats sync.Map

	httpSrv         *http.Server // serves HTTP found inside tunnels
	httpLn          *tunnelListener
	served          chan struct{}
	proxy           *httputil.ReverseProxy
	h1, h2          *http.Transport // upstream: HTTP/1.1, and HTTP/2 prior knowledge
	rng             sync.Pool       // *rand.Rand for backend picks and mirror sampling
	mirrors         sync.WaitGroup
	mirrorsInFlight atomic.Int64

	shutOnce sync.Once
	shutCtx  context.Context // cancelled by close: ends a graceful shutdown
	stopShut context.CancelFunc
	bg       sync.WaitGroup
}

// newDataPlane starts the in-tunnel HTTP server; close stops it.
func newDataPlane(cfg dataPlaneConfig) (*dataPlane, error) {
	if cfg.Dialer == nil || cfg.Store == nil || cfg.Routes == nil || cfg.Metrics == nil {
		return nil, errors.New("waypoint data plane: Dialer, Store, Routes and Metrics are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = cfg.Log
	}
	dp := &dataPlane{
		cfg: cfg, lim: cfg.Limits.withDefaults(), m: cfg.Metrics, log: cfg.Log, accessLog: cfg.AccessLog,
		httpLn: newTunnelListener(), served: make(chan struct{}),
	}
	dp.shutCtx, dp.stopShut = context.WithCancel(context.Background())
	dp.rng.New = func() any { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }
	dp.h1, dp.h2 = dp.newTransports()
	dp.proxy = dp.newReverseProxy()

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	dp.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(dp.serveHTTP),
		Protocols:         &protos,
		ReadHeaderTimeout: dp.lim.ReadHeaderTimeout,
		IdleTimeout:       dp.lim.IdleTimeout,
		MaxHeaderBytes:    dp.lim.MaxHeaderBytes,
		ConnContext:       withTunnel,
		ErrorLog:          slog.NewLogLogger(dp.log.Handler(), slog.LevelDebug),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250},
	}
	go func() {
		defer close(dp.served)
		if err := dp.httpSrv.Serve(dp.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			dp.log.Error("in-tunnel HTTP server failed", "err", err)
		}
	}()
	return dp, nil
}

// shutdown starts a graceful stop of the HTTP inside tunnels and returns:
// idle HTTP/1.1 connections close, HTTP/2 ones get GOAWAY, busy ones close
// after their current request. close cuts what is left.
func (dp *dataPlane) shutdown() {
	dp.shutOnce.Do(func() {
		dp.bg.Go(func() { dp.httpSrv.Shutdown(dp.shutCtx) })
	})
}

// close stops the HTTP server, waits for mirrors in flight (bounded by
// MirrorTimeout) and closes idle upstream connections. The HBONE dialer is
// the caller's.
func (dp *dataPlane) close() {
	dp.stopShut()
	dp.httpSrv.Close()
	dp.bg.Wait()
	<-dp.served
	dp.mirrors.Wait()
	dp.h1.CloseIdleConnections()
	dp.h2.CloseIdleConnections()
}

// rand returns a random source for one request; put it back with putRand.
func (dp *dataPlane) rand() *rand.Rand     { return dp.rng.Get().(*rand.Rand) }
func (dp *dataPlane) putRand(r *rand.Rand) { dp.rng.Put(r) }

// tunnelListener is the in-tunnel HTTP server's listener: Accept returns
// the tunnels handed over by push.
type tunnelListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newTunnelListener() *tunnelListener {
	return &tunnelListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *tunnelListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tunnelListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *tunnelListener) Addr() net.Addr { return tunnelAddr{} }

// push hands c to the server; false once the listener is closed.
func (l *tunnelListener) push(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-ctx.Done():
		return false
	}
}

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "hbone" }
func (tunnelAddr) String() string  { return "hbone" }
