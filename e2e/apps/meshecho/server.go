package meshecho

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// Defaults of ServerConfig fields left zero.
const (
	DefaultVersion         = "v1"
	DefaultFailCode        = http.StatusServiceUnavailable
	DefaultUpstreamTimeout = 2 * time.Second
	DefaultShutdownGrace   = 5 * time.Second
)

// ServerConfig configures a Server. The zero value works: a server that
// answers as version "v1" under the host name, calls no upstreams and
// injects no failures.
type ServerConfig struct {
	// Name is reported as Hostname (the pod name). Default: os.Hostname().
	Name string
	// Namespace is reported as Namespace. Default: empty.
	Namespace string
	// Version is reported as ServiceVersion (the pod's version label).
	// Default: DefaultVersion ("v1").
	Version string
	// Calls are upstream URLs (http:// or https://) fetched with GET, in
	// order, for every HTTP echo request; their replies are appended to the
	// body. Default: none.
	Calls []string
	// FailRate is the fraction, 0 to 1, of HTTP and gRPC echo requests
	// answered with FailCode (HTTP) or codes.Unavailable (gRPC) before any
	// other processing. /healthz is never failed. Default: 0.
	FailRate float64
	// FailCode is the HTTP status of injected failures, 200 to 599.
	// Default: DefaultFailCode (503).
	FailCode int
	// UpstreamTimeout bounds each upstream call. Default:
	// DefaultUpstreamTimeout (2s).
	UpstreamTimeout time.Duration
	// UpstreamClient makes the upstream calls. Default: a client with its
	// own transport and no redirect limit changes.
	UpstreamClient *http.Client
	// ShutdownGrace is how long Serve lets in-flight requests and TCP echo
	// sessions finish after its context is cancelled before closing them.
	// Default: DefaultShutdownGrace (5s).
	ShutdownGrace time.Duration
	// Logger receives one Debug line per request and Info lines for the
	// lifecycle. Default: discard.
	Logger *slog.Logger
}

// Validate reports the first invalid field.
func (c ServerConfig) Validate() error {
	if math.IsNaN(c.FailRate) || c.FailRate < 0 || c.FailRate > 1 {
		return fmt.Errorf("fail rate %v: want a fraction from 0 to 1", c.FailRate)
	}
	if c.FailCode != 0 && (c.FailCode < 200 || c.FailCode > 599) {
		return fmt.Errorf("fail code %d: want an HTTP status from 200 to 599", c.FailCode)
	}
	for _, raw := range c.Calls {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("upstream call: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("upstream call %q: want an http:// or https:// URL with a host", raw)
		}
	}
	if c.UpstreamTimeout < 0 {
		return fmt.Errorf("upstream timeout %v: must not be negative", c.UpstreamTimeout)
	}
	if c.ShutdownGrace < 0 {
		return fmt.Errorf("shutdown grace %v: must not be negative", c.ShutdownGrace)
	}
	return nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.FailCode == 0 {
		c.FailCode = DefaultFailCode
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.UpstreamClient == nil {
		c.UpstreamClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Calls = append([]string(nil), c.Calls...)
	return c
}

// Server answers echo requests over HTTP (HTTP/1.1 and h2c on one port),
// gRPC and TCP. Create it with NewServer and run it with Serve.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
}

// NewServer validates cfg and returns a Server using it, with defaults
// filled in.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid server config: %w", err)
	}
	cfg = cfg.withDefaults()
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Config returns the configuration in use, defaults filled in.
func (s *Server) Config() ServerConfig { return s.cfg }

// injectFailure reports whether this request is one of the FailRate fraction
// to fail.
func (s *Server) injectFailure() bool {
	return s.cfg.FailRate > 0 && rand.Float64() < s.cfg.FailRate
}

// ListenConfig holds the addresses ("host:port") to listen on; an empty
// address disables that protocol. Port 0 picks a free port.
type ListenConfig struct {
	HTTP string
	GRPC string
	TCP  string
}

// Listeners are the sockets a Server serves on; a nil listener disables that
// protocol. Tests and the e2e harness can create them on 127.0.0.1:0 and
// read the chosen ports with Addr.
type Listeners struct {
	HTTP net.Listener
	GRPC net.Listener
	TCP  net.Listener
}

// Listen opens a TCP listener for every non-empty address in c. On error,
// the listeners already opened are closed.
func (c ListenConfig) Listen(ctx context.Context) (Listeners, error) {
	var ls Listeners
	var lc net.ListenConfig
	for _, x := range []struct {
		name string
		addr string
		ln   *net.Listener
	}{
		{"http", c.HTTP, &ls.HTTP},
		{"grpc", c.GRPC, &ls.GRPC},
		{"tcp", c.TCP, &ls.TCP},
	} {
		if x.addr == "" {
			continue
		}
		ln, err := lc.Listen(ctx, "tcp", x.addr)
		if err != nil {
			ls.Close()
			return Listeners{}, fmt.Errorf("listen %s: %w", x.name, err)
		}
		*x.ln = ln
	}
	if ls.HTTP == nil && ls.GRPC == nil && ls.TCP == nil {
		return Listeners{}, errors.New("nothing to listen on: every address is empty")
	}
	return ls, nil
}

// Close closes the non-nil listeners.
func (ls Listeners) Close() error {
	var errs []error
	for _, ln := range []net.Listener{ls.HTTP, ls.GRPC, ls.TCP} {
		if ln != nil {
			errs = append(errs, ln.Close())
		}
	}
	return errors.Join(errs...)
}

// component is one protocol server inside Serve.
type component struct {
	name string
	addr net.Addr
	// serve blocks until the component stops; it returns nil after stop.
	serve func() error
	// stop stops accepting, lets work finish until ctx is done, then forces.
	stop func(ctx context.Context)
}

// Serve serves on the non-nil listeners until ctx is cancelled or one of
// them fails, then shuts down gracefully (ShutdownGrace) and returns. It
// returns nil after a cancellation and the failure otherwise. Serve takes
// ownership of the listeners and closes them.
func (s *Server) Serve(ctx context.Context, ls Listeners) error {
	var comps []component
	if ls.HTTP != nil {
		comps = append(comps, s.httpComponent(ls.HTTP))
	}
	if ls.GRPC != nil {
		c, err := s.grpcComponent(ls.GRPC)
		if err != nil {
			ls.Close()
			return err
		}
		comps = append(comps, c)
	}
	if ls.TCP != nil {
		comps = append(comps, s.tcpComponent(ls.TCP))
	}
	if len(comps) == 0 {
		return errors.New("serve: no listeners")
	}

	errc := make(chan error, len(comps))
	for _, c := range comps {
		s.log.Info("listening", "protocol", c.name, "address", c.addr.String())
		go func() {
			err := c.serve()
			if err == nil {
				err = errors.New("stopped unexpectedly")
			}
			errc <- fmt.Errorf("%s server: %w", c.name, err)
		}()
	}

	var failure error
	pending := len(comps)
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "grace", s.cfg.ShutdownGrace)
	case failure = <-errc:
		pending--
		s.log.Error("server failed, shutting down", "error", failure)
	}

	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range comps {
		wg.Go(func() { c.stop(stopCtx) })
	}
	wg.Wait()
	for range pending {
		<-errc
	}
	return failure
}
