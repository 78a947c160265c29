package xds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of Config.
const (
	DefaultDebounce    = 100 * time.Millisecond
	DefaultDebounceMax = time.Second
)

// Proxy is an authenticated caller of the config server.
type Proxy struct {
	// Identity is the caller's SPIFFE identity
	// (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
	Identity string
	// Node is the Kubernetes node the caller runs on, or "" when unknown.
	Node string
}

// Authenticator tells who opened a stream. In istiod-lite it reviews the
// service-account token in the "authorization: Bearer" metadata.
type Authenticator interface {
	// Authenticate returns the caller of ctx's stream, or an error if it
	// could not be authenticated; the stream is then refused with
	// codes.Unauthenticated.
	Authenticate(ctx context.Context) (Proxy, error)
}

// Config wires a Server. Store and Authenticator are required.
type Config struct {
	// Store holds the resources served.
	Store *Store
	// Authenticator is asked about every stream when it opens.
	Authenticator Authenticator
	// Debounce is the quiet period a stream waits after a store change
	// before pushing, so that a burst of changes goes out as one response.
	// Default: DefaultDebounce (100 ms).
	Debounce time.Duration
	// DebounceMax bounds the wait: a push goes out at most this long after
	// the first change of a burst even if changes keep coming. It must not
	// be less than Debounce. Default: DefaultDebounceMax (1 s).
	DebounceMax time.Duration
	// Logger gets stream open/close (Info), NACKs (Warn) and pushes
	// (Debug). Default: discard.
	Logger *slog.Logger
	// Registerer gets the metrics listed in README.md. Default: not
	// registered (they still count).
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.DebounceMax == 0 {
		c.DebounceMax = max(DefaultDebounceMax, c.Debounce)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports what is wrong with c after defaults are applied.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("xds: Config.Store is required"))
	}
	if c.Authenticator == nil {
		errs = append(errs, errors.New("xds: Config.Authenticator is required"))
	}
	if c.Debounce < 0 {
		errs = append(errs, fmt.Errorf("xds: Config.Debounce %v is negative", c.Debounce))
	}
	if c.DebounceMax < c.Debounce {
		errs = append(errs, fmt.Errorf("xds: Config.DebounceMax %v is less than Debounce %v", c.DebounceMax, c.Debounce))
	}
	return errors.Join(errs...)
}

// Server implements envoy.service.discovery.v3.AggregatedDiscoveryService
// with the incremental (delta) protocol only.
type Server struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer

	cfg     Config
	log     *slog.Logger
	metrics *metrics
	nextID  atomic.Uint64

	mu      sync.Mutex
	streams map[uint64]*stream
}

// NewServer checks cfg and returns a Server. Register it on a grpc.Server
// with Register; stopping the grpc.Server ends every stream.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, metrics: m, streams: map[uint64]*stream{}}, nil
}

// Register adds the aggregated discovery service to gs.
func (s *Server) Register(gs *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, s)
}

// StreamAggregatedResources is the state-of-the-world protocol, which
// Ambient Lite does not serve: ztunnel speaks only delta.
func (s *Server) StreamAggregatedResources(discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "state-of-the-world ADS is not served; use DeltaAggregatedResources")
}

// DeltaAggregatedResources serves one delta ADS stream until the client
// closes it, it fails, or the server stops.
func (s *Server) DeltaAggregatedResources(gs discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	ctx := gs.Context()
	proxy, err := s.cfg.Authenticator.Authenticate(ctx)
	if err != nil {
		s.log.Warn("xds stream refused", "error", err)
		return status.Errorf(codes.Unauthenticated, "xds: authentication failed: %v", err)
	}
	st := newStream(s, s.nextID.Add(1), proxy, gs)
	s.mu.Lock()
	s.streams[st.id] = st
	s.mu.Unlock()
	s.metrics.connected.Inc()
	s.log.Info("xds stream opened", "stream", st.id, "identity", proxy.Identity, "node", proxy.Node)
	defer func() {
		s.mu.Lock()
		delete(s.streams, st.id)
		s.mu.Unlock()
		s.metrics.connected.Dec()
		s.log.Info("xds stream closed", "stream", st.id, "node_id", st.currentNodeID(), "identity", proxy.Identity)
	}()
	return st.run(ctx)
}

// StreamStatus describes one open stream, for proxy-status.
type StreamStatus struct {
	ID uint64
	// NodeID is the node.id of the stream's first request that carried
	// one (ztunnel: "ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local").
	NodeID      string
	Proxy       Proxy
	ConnectedAt time.Time
	// Types has one entry per subscribed type, sorted by TypeURL.
	Types []TypeStatus
}

// TypeStatus is what a stream knows about one resource type.
type TypeStatus struct {
	TypeURL string
	// Wildcard is true when the client subscribed to every resource.
	Wildcard bool
	// Subscribed counts names subscribed explicitly.
	Subscribed int
	// Acked counts resources whose current version the client has ACKed.
	Acked int
	// LastAck is when the client last ACKed a response of this type.
	LastAck time.Time
	// LastNack is the error_detail message of the last NACK, cleared by
	// the next ACK; LastNackAt is when it came. NACKs counts them all.
	LastNack   string
	LastNackAt time.Time
	NACKs      int
	// InFlight is the nonce of the response awaiting an ACK, or "".
	InFlight string
	// Waiting is true when a push is ready but held until InFlight is
	// answered.
	Waiting bool
}

// Streams returns a snapshot of every open, authenticated stream, sorted
// by ID.
func (s *Server) Streams() []StreamStatus {
	s.mu.Lock()
	list := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		list = append(list, st)
	}
	s.mu.Unlock()
	out := make([]StreamStatus, 0, len(list))
	for _, st := range list {
		out = append(out, st.status())
	}
	slices.SortFunc(out, func(a, b StreamStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
