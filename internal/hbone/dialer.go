package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Dialer opens HBONE tunnels. Connections are pooled per (source identity,
// destination identity, next hop); each carries at most MaxStreamsPerConn
// tunnels, concurrent dials to one key share one new connection, and a
// connection without tunnels for IdleTimeout is closed. Certificate and Roots
// are required; every other field has a documented default. The zero value
// plus those two is ready to use; fields must not change after the first
// DialContext. Close releases everything.
type Dialer struct {
	// Certificate returns the client certificate (leaf first, chain to the
	// mesh roots) for the workload identity src. Called once per new
	// connection, so rotated certificates are picked up by new connections.
	// Required.
	Certificate func(ctx context.Context, src Identity) (*tls.Certificate, error)

	// Roots are the mesh trust roots the server's chain is verified against.
	// Required.
	Roots *x509.CertPool

	// Dial opens the TCP connection to the next hop. Default: a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// ConnectTimeout bounds TCP connect plus TLS handshake of a new
	// connection. Default 10s.
	ConnectTimeout time.Duration

	// MaxStreamsPerConn caps the tunnels one connection carries (lowered
	// further if the server advertises less). Default 100.
	MaxStreamsPerConn int

	// IdleTimeout closes a pooled connection without tunnels for that long.
	// Default 5m (the server's default is longer, so the client, which
	// knows when it will reuse a connection, closes first); negative means never.
	IdleTimeout time.Duration

	// KeepAlive is how long a connection may be silent before the dialer
	// sends a PING; KeepAliveTimeout how long it waits for the ack before
	// closing the connection and failing its tunnels. Defaults 30s and 15s;
	// negative KeepAlive disables pings.
	KeepAlive, KeepAliveTimeout time.Duration

	// StreamWindow and ConnWindow are the HTTP/2 receive windows per stream
	// and per connection. Defaults 4 MiB and 16 MiB.
	StreamWindow, ConnWindow int32

	// Logger receives connection events. Default: discard.
	Logger *slog.Logger

	initOnce sync.Once
	initErr  error
	cfg      connConfig
	ctx      context.Context // cancelled by Close; parent of shared dials
	cancel   context.CancelFunc

	mu     sync.Mutex
	pools  map[poolKey]*pool
	live   map[*h2conn]struct{} // every connection not yet exited, pooled or draining
	closed bool
	wg     sync.WaitGroup // shared dials and live connections
}

// Target is one tunnel to open.
type Target struct {
	// Address is the next hop, normally <destination pod ip>:15008, or a
	// waypoint's.
	Address string
	// Authority is the final destination ip:port, sent as :authority (the
	// service VIP:port when going through a waypoint).
	Authority string
	// Source is the workload identity the tunnel is opened for; it selects
	// the client certificate.
	Source Identity
	// Destination is the identity the next hop's certificate must carry.
	Destination Identity
	// ClientAddr is the original client, sent as forwarded: for="…" when valid.
	ClientAddr netip.AddrPort
	// Baggage is passed on as the baggage header when non-empty.
	Baggage string
	// Traceparent is passed on; a new W3C traceparent is generated when it
	// is empty or malformed.
	Traceparent string
}

func (t *Target) validate() error {
	switch {
	case t.Address == "":
		return errors.New("hbone: Target.Address (next hop ip:port) is required")
	case t.Authority == "":
		return errors.New("hbone: Target.Authority (destination ip:port) is required")
	case t.Source.IsZero():
		return errors.New("hbone: Target.Source identity is required: it selects the client certificate")
	case t.Destination.IsZero():
		return errors.New("hbone: Target.Destination identity is required: the server's certificate is checked against it")
	}
	return nil
}

func (t *Target) fields() []hpack.HeaderField {
	f := make([]hpack.HeaderField, 2, 5)
	f[0] = hpack.HeaderField{Name: ":method", Value: http.MethodConnect}
	f[1] = hpack.HeaderField{Name: ":authority", Value: t.Authority}
	if t.ClientAddr.IsValid() {
		f = append(f, hpack.HeaderField{Name: headerForwarded, Value: formatForwarded(t.ClientAddr)})
	}
	if t.Baggage != "" {
		f = append(f, hpack.HeaderField{Name: headerBaggage, Value: t.Baggage})
	}
	tp := t.Traceparent
	if !validTraceparent(tp) {
		tp = newTraceparent()
	}
	return append(f, hpack.HeaderField{Name: headerTraceparent, Value: tp})
}

var errDialerClosed = errors.New("hbone: dialer closed")

// Validate reports a configuration DialContext would refuse.
func (d *Dialer) Validate() error {
	switch {
	case d.Certificate == nil:
		return errors.New("hbone: Dialer.Certificate is required: it provides each workload's client certificate")
	case d.Roots == nil:
		return errors.New("hbone: Dialer.Roots is required: servers are verified against the mesh roots")
	case d.MaxStreamsPerConn < 0:
		return errors.New("hbone: Dialer.MaxStreamsPerConn must not be negative")
	}
	return validateWindows(d.StreamWindow, d.ConnWindow)
}

func (d *Dialer) init() error {
	d.initOnce.Do(func() {
		d.initErr = d.Validate()
		logger := d.Logger
		if logger == nil {
			logger = slog.New(slog.DiscardHandler)
		}
		d.cfg = connConfig{
			maxStreams:       orDefault(d.MaxStreamsPerConn, defaultMaxStreams),
			streamWindow:     orDefault(d.StreamWindow, defaultStreamWindow),
			connWindow:       orDefault(d.ConnWindow, defaultConnWindow),
			keepAlive:        orDefault(d.KeepAlive, defaultKeepAlive),
			keepAliveTimeout: orDefault(d.KeepAliveTimeout, defaultKeepAliveTimeout),
			idleTimeout:      orDefault(d.IdleTimeout, 5*time.Minute),
			logger:           logger,
		}
		d.ctx, d.cancel = context.WithCancel(context.Background())
		d.pools = make(map[poolKey]*pool)
		d.live = make(map[*h2conn]struct{})
	})
	return d.initErr
}

// DialContext opens a tunnel to t and returns it once the server answered
// 200, that is once the server has connected to the destination. ctx bounds
// the setup only, not the returned Stream. Errors: *StatusError for a non-200
// answer, *IdentityError when the next hop is not t.Destination, *ConnError
// when the next hop could not be reached or the connection failed; see
// Retryable.
func (d *Dialer) DialContext(ctx context.Context, t Target) (*Stream, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	if err := d.init(); err != nil {
		return nil, err
	}
	key := poolKey{src: t.Source, dst: t.Destination, addr: t.Address}
	fields := t.fields()
	for attempt := 0; ; attempt++ {
		c, err := d.acquire(ctx, key)
		if err != nil {
			return nil, err
		}
		st, err := d.roundTrip(ctx, c, &t, fields)
		if errors.Is(err, errStreamRefused) {
			// Not processed by the server (GOAWAY or REFUSED_STREAM): safe
			// to try again on another connection, a couple of times.
			if attempt < 2 {
				continue
			}
			err = &ConnError{Op: "connection", Address: t.Address, Err: err}
		}
		return st, err
	}
}

// roundTrip opens a stream on c (where a slot is reserved) and waits for the
// response.
func (d *Dialer) roundTrip(ctx context.Context, c *h2conn, t *Target, fields []hpack.HeaderField) (*Stream, error) {
	st, err := c.openStream(fields)
	if err != nil {
		return nil, err
	}
	st.peer = c.peer
	st.local = c.nc.LocalAddr()
	st.remote = authorityAddr(t.Authority)
	select {
	case <-st.respDone:
	case <-ctx.Done():
		st.Close()
		return nil, ctx.Err()
	}
	c.mu.Lock()
	status, rerr := st.status, st.reset
	c.mu.Unlock()
	switch {
	case status == http.StatusOK:
		return st, nil
	case status != 0:
		st.Close()
		return nil, &StatusError{Code: status, Authority: t.Authority}
	default:
		st.Close()
		return nil, rerr
	}
}

// authorityAddr returns the authority as a net.Addr for RemoteAddr.
func authorityAddr(a string) net.Addr {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return hostPortAddr(a)
}

type hostPortAddr string

func (a hostPortAddr) Network() string { return "tcp" }
func (a hostPortAddr) String() string  { return string(a) }

// newConn dials, handshakes and starts a connection for key.
func (d *Dialer) newConn(ctx context.Context, key poolKey) (*h2conn, error) {
	ctx, cancel := context.WithTimeout(ctx, orDefault(d.ConnectTimeout, 10*time.Second))
	defer cancel()
	cert, err := d.Certificate(ctx, key.src)
	if err != nil {
		return nil, fmt.Errorf("hbone: certificate for %s: %w", key.src, err)
	}
	if cert == nil {
		return nil, fmt.Errorf("hbone: no certificate for %s", key.src)
	}
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", key.addr)
	if err != nil {
		return nil, &ConnError{Op: "dial", Address: key.addr, Err: err}
	}
	var idErr *IdentityError
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{http2.NextProtoTLS},
		// Always present cert, whatever CAs the server says it accepts.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		// SPIFFE certificates carry no DNS name, so the standard hostname
		// check cannot apply: VerifyConnection verifies the chain against
		// Roots and the URI SAN against the expected identity instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := verifyChain(cs.PeerCertificates, d.Roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if got != key.dst {
				idErr = &IdentityError{Address: key.addr, Want: key.dst, Got: got.String()}
				return idErr
			}
			return nil
		},
	}
	wire := newWireConn(nc)
	tc := tls.Client(wire, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		if idErr != nil {
			return nil, idErr
		}
		return nil, &ConnError{Op: "handshake", Address: key.addr, Err: err}
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		tc.Close()
		return nil, &ConnError{Op: "handshake", Address: key.addr, Err: fmt.Errorf("server negotiated ALPN %q, want h2", p)}
	}
	c := newH2Conn(tc, wire, true, d.cfg, key.dst)
	c.onGone = func(c *h2conn) { d.remove(key, c) }
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		tc.Close()
		return nil, errDialerClosed
	}
	d.live[c] = struct{}{}
	d.wg.Add(1)
	d.mu.Unlock()
	c.onExit = func() {
		d.mu.Lock()
		delete(d.live, c)
		d.mu.Unlock()
		d.wg.Done()
	}
	if err := c.start(); err != nil {
		return nil, &ConnError{Op: "handshake", Address: key.addr, Err: err}
	}
	return c, nil
}

// Close closes every pooled connection, failing their tunnels, and waits for
// their goroutines. Later DialContext calls fail.
func (d *Dialer) Close() error {
	d.init()
	d.mu.Lock()
	d.closed = true
	var conns []*h2conn
	for c := range d.live {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	d.cancel()
	for _, c := range conns {
		c.shutdown(errDialerClosed)
	}
	d.wg.Wait()
	return nil
}
