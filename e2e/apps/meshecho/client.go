package meshecho

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults of ClientConfig fields left zero.
const (
	DefaultCount   = 1
	DefaultMethod  = "GET"
	DefaultMessage = "hello"
	DefaultTimeout = 5 * time.Second
)

// ClientConfig configures RunClient. Only URL is required.
type ClientConfig struct {
	// URL is the target: http://host:port/path (HTTP/1.1),
	// h2c://host:port/path (HTTP/2 with prior knowledge over cleartext),
	// grpc://host:port (meshecho.Echo/Echo) or tcp://host:port (banner and
	// echo).
	URL string
	// Count is the number of requests. Default: 1.
	Count int
	// Concurrency is how many requests are in flight at once, at most
	// Count. Default: 1.
	Concurrency int
	// QPS limits the rate at which requests start; 0 means as fast as
	// possible. Default: 0.
	QPS float64
	// Headers are "Name: value" request headers (HTTP) or metadata (gRPC);
	// "Host" sets the Host header or the gRPC authority. Default: none.
	Headers []string
	// Method is the HTTP method. Default: GET.
	Method string
	// Body is the HTTP request body. Default: empty.
	Body string
	// Message is the gRPC message field and the TCP payload. Default: "hello".
	Message string
	// Timeout bounds each request. Default: 5s.
	Timeout time.Duration
	// DisableKeepAlive makes every http, h2c and grpc request use a new
	// connection. tcp requests always do. Default: connections are reused.
	DisableKeepAlive bool
	// Dial opens connections. Default: a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Validate reports the first invalid field.
func (c ClientConfig) Validate() error {
	if _, _, err := parseTarget(c.URL); err != nil {
		return err
	}
	if c.Count < 0 {
		return fmt.Errorf("count %d: must not be negative", c.Count)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("concurrency %d: must not be negative", c.Concurrency)
	}
	if c.QPS < 0 {
		return fmt.Errorf("qps %v: must not be negative", c.QPS)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %v: must not be negative", c.Timeout)
	}
	if _, err := parseHeaders(c.Headers); err != nil {
		return err
	}
	return nil
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	c.Concurrency = min(c.Concurrency, c.Count)
	if c.Method == "" {
		c.Method = DefaultMethod
	}
	if c.Message == "" {
		c.Message = DefaultMessage
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	return c
}

// parseTarget splits a client URL into its scheme and a URL for the
// transport.
func parseTarget(raw string) (scheme string, u *url.URL, err error) {
	if raw == "" {
		return "", nil, errors.New("missing URL: want http://, h2c://, grpc:// or tcp://host:port")
	}
	u, err = url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("bad URL: %w", err)
	}
	switch u.Scheme {
	case "http", "h2c", "grpc", "tcp":
	default:
		return "", nil, fmt.Errorf("URL %q: unsupported scheme %q, want http, h2c, grpc or tcp", raw, u.Scheme)
	}
	if u.Host == "" || u.Port() == "" {
		return "", nil, fmt.Errorf("URL %q: want host:port after %s://", raw, u.Scheme)
	}
	return u.Scheme, u, nil
}

// parseHeaders turns "Name: value" strings into pairs.
func parseHeaders(hs []string) ([][2]string, error) {
	var out [][2]string
	for _, h := range hs {
		name, value, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("header %q: want \"Name: value\"", h)
		}
		out = append(out, [2]string{name, strings.TrimSpace(value)})
	}
	return out, nil
}

// result is the outcome of one request.
type result struct {
	status    int // HTTP status or gRPC code, if hasStatus
	hasStatus bool
	version   string
	hostname  string
	body      string
	err       error // transport failure (or a non-OK gRPC code, a bad echo)
}

// caller makes requests of one kind.
type caller interface {
	call(ctx context.Context) result
	close()
}

func newCaller(cfg ClientConfig) (caller, error) {
	scheme, u, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	headers, err := parseHeaders(cfg.Headers)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "http", "h2c":
		return newHTTPCaller(cfg, u, headers, scheme == "h2c"), nil
	case "grpc":
		return newGRPCCaller(cfg, u, headers)
	default:
		return &tcpCaller{addr: u.Host, message: cfg.Message, dial: cfg.Dial}, nil
	}
}

// RunClient makes cfg.Count requests to cfg.URL and counts the replies. It
// returns an error only for an invalid config or when ctx ends first (with
// the report of what completed); failed requests are counted in the report,
// see Report.Check.
func RunClient(ctx context.Context, cfg ClientConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid client config: %w", err)
	}
	cfg = cfg.withDefaults()
	c, err := newCaller(cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()

	rep := newReport()
	var mu sync.Mutex
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for range jobs {
				rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				res := c.call(rctx)
				cancel()
				mu.Lock()
				rep.add(res)
				mu.Unlock()
			}
		})
	}

	var tick <-chan time.Time
	if cfg.QPS > 0 {
		t := time.NewTicker(max(time.Duration(float64(time.Second)/cfg.QPS), 1))
		defer t.Stop()
		tick = t.C
	}
dispatch:
	for i := range cfg.Count {
		if ctx.Err() != nil {
			break
		}
		if tick != nil && i > 0 {
			select {
			case <-tick:
			case <-ctx.Done():
				break dispatch
			}
		}
		select {
		case jobs <- struct{}{}:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("stopped after %d of %d requests: %w", rep.Requests, cfg.Count, context.Cause(ctx))
	}
	return rep, nil
}
