package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server terminates HBONE: it accepts mutual-TLS HTTP/2 connections, answers
// each CONNECT stream, dials the requested destination and relays bytes.
// Every field is optional except TLS; nil hooks mean the documented default.
// A Server must not be changed once serving.
type Server struct {
	// TLS holds the server's certificate (Certificates or GetCertificate) and
	// the mesh trust roots in ClientCAs (or a GetConfigForClient returning a
	// config that has them). The server forces TLS 1.3, ALPN h2, and a
	// verified client certificate whose SPIFFE ID is in TrustDomain.
	// Required.
	TLS *tls.Config

	// TrustDomain is the trust domain client identities must belong to.
	// Default "cluster.local".
	TrustDomain string

	// Dial connects to the destination of an admitted tunnel.
	// Default: a net.Dialer. It is bounded by ConnectTimeout and by the
	// stream's life: a client that resets the stream cancels the dial.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// ConnectTimeout bounds Dial. Default 10s.
	ConnectTimeout time.Duration

	// CheckAuthority vets the :authority (already known to be an ip:port),
	// e.g. that it names a workload behind this listener. An error answers
	// 400. Default: any ip:port is accepted.
	CheckAuthority func(authority string) error

	// Authorize decides whether the request may proceed (L4 policy). An
	// error answers 401. Default: allow.
	Authorize func(ctx context.Context, req *Request) error

	// Handle, if set, replaces Dial and the relay: the server answers 200
	// and calls Handle with the tunnel (a waypoint parsing HTTP inside it).
	// The stream is closed when Handle returns; ctx is cancelled once the
	// stream has ended both ways, is reset, or its connection closes.
	Handle func(ctx context.Context, req *Request, tunnel *Stream)

	// OnTunnelClose, if set, is called once for every request, after the
	// response and the relay (if any) are over: with the status sent, the
	// bytes relayed and why it ended. For metrics and access logs.
	OnTunnelClose func(TunnelResult)

	// Logger receives connection and tunnel events. Default: discard.
	Logger *slog.Logger

	// MaxConcurrentStreams is advertised to clients; streams beyond it are
	// refused (REFUSED_STREAM, which clients retry elsewhere). Default 100.
	MaxConcurrentStreams int

	// StreamWindow and ConnWindow are the HTTP/2 receive windows per stream
	// and per connection. Defaults 4 MiB and 16 MiB.
	StreamWindow, ConnWindow int32

	// HandshakeTimeout bounds the TLS handshake and the client preface.
	// Default 10s.
	HandshakeTimeout time.Duration

	// IdleTimeout closes (with GOAWAY) a connection without streams for
	// that long. Default 10m; negative means never.
	IdleTimeout time.Duration

	// KeepAlive is how long a connection may be silent before the server
	// sends a PING; KeepAliveTimeout how long it waits for the ack before
	// closing the connection. Defaults 30s and 15s; negative KeepAlive
	// disables pings.
	KeepAlive, KeepAliveTimeout time.Duration

	initOnce sync.Once
	initErr  error
	tlsConf  *tls.Config
	cfg      connConfig
	logger   *slog.Logger
}

// Request is what the server knows about a CONNECT when it decides on it.
type Request struct {
	Authority   string         // :authority as sent, the destination ip:port
	Destination netip.AddrPort // Authority parsed
	Peer        Identity       // verified identity of the client (ztunnel or waypoint)
	RemoteAddr  net.Addr       // TCP source of the HBONE connection
	Forwarded   string         // forwarded header as sent
	ClientAddr  netip.AddrPort // for= of Forwarded: the original client; zero if absent
	Baggage     string         // baggage header as sent
	Traceparent string         // traceparent as sent if valid, else a new one
}

// TunnelResult describes a finished request, for OnTunnelClose.
type TunnelResult struct {
	Request  *Request
	Status   int           // status sent: 200, 400, 401 or 503; 0 if the stream died first
	Received int64         // bytes client → destination
	Sent     int64         // bytes destination → client
	Duration time.Duration // from HEADERS to the end of the relay
	Err      error         // why the request failed or the relay ended abnormally; nil if clean
}

// Validate reports a configuration Serve would refuse.
func (s *Server) Validate() error {
	switch {
	case s.TLS == nil:
		return errors.New("hbone: Server.TLS is required: it holds the server certificate and the mesh roots (ClientCAs)")
	case s.TLS.ClientCAs == nil && s.TLS.GetConfigForClient == nil:
		return errors.New("hbone: Server.TLS.ClientCAs is required: clients are verified against the mesh roots")
	case s.TLS.Certificates == nil && s.TLS.GetCertificate == nil && s.TLS.GetConfigForClient == nil:
		return errors.New("hbone: Server.TLS has no certificate (Certificates or GetCertificate)")
	case s.MaxConcurrentStreams < 0:
		return errors.New("hbone: Server.MaxConcurrentStreams must not be negative")
	}
	return validateWindows(s.StreamWindow, s.ConnWindow)
}

// validateWindows checks HTTP/2 receive windows (0 means the default).
func validateWindows(stream, conn int32) error {
	if stream < 0 {
		return fmt.Errorf("hbone: StreamWindow %d must not be negative", stream)
	}
	if conn != 0 && conn < initialWindowSize {
		return fmt.Errorf("hbone: ConnWindow %d is below HTTP/2's initial %d, which cannot shrink", conn, initialWindowSize)
	}
	return nil
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		if s.initErr = s.Validate(); s.initErr != nil {
			return
		}
		td := s.TrustDomain
		if td == "" {
			td = "cluster.local"
		}
		s.tlsConf = s.serverTLS(s.TLS, td)
		s.logger = s.Logger
		if s.logger == nil {
			s.logger = slog.New(slog.DiscardHandler)
		}
		s.cfg = connConfig{
			maxStreams:       orDefault(s.MaxConcurrentStreams, defaultMaxStreams),
			streamWindow:     orDefault(s.StreamWindow, defaultStreamWindow),
			connWindow:       orDefault(s.ConnWindow, defaultConnWindow),
			keepAlive:        orDefault(s.KeepAlive, defaultKeepAlive),
			keepAliveTimeout: orDefault(s.KeepAliveTimeout, defaultKeepAliveTimeout),
			idleTimeout:      orDefault(s.IdleTimeout, 10*time.Minute),
			logger:           s.logger,
		}
	})
	return s.initErr
}

func orDefault[T int | int32 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// serverTLS returns base with HBONE's requirements applied, including to
// what its GetConfigForClient returns.
func (s *Server) serverTLS(base *tls.Config, td string) *tls.Config {
	conf := base.Clone()
	conf.MinVersion = tls.VersionTLS13
	conf.NextProtos = []string{http2.NextProtoTLS}
	conf.ClientAuth = tls.RequireAndVerifyClientCert
	userVerify := base.VerifyConnection
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(&cs)
		if err != nil {
			return err
		}
		if id.TrustDomain != td {
			return fmt.Errorf("hbone: client identity %s is not in trust domain %q", id, td)
		}
		if userVerify != nil {
			return userVerify(cs)
		}
		return nil
	}
	if get := base.GetConfigForClient; get != nil {
		conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hello)
			if err != nil || c == nil {
				return c, err
			}
			if c.ClientCAs == nil {
				// Without roots crypto/tls would verify clients against the
				// system's public CAs.
				return nil, errors.New("hbone: config from GetConfigForClient has no ClientCAs")
			}
			inner := c.Clone()
			inner.GetConfigForClient = nil
			return s.serverTLS(inner, td), nil
		}
	}
	return conf
}

// Serve accepts connections on ln (a plain TCP listener: TLS is done here)
// and serves each until ctx is done. Then it closes ln and every connection,
// waits for their tunnels to end, and returns nil. Other accept errors are
// returned after the same clean-up.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.init(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger.Warn("hbone: accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		wg.Go(func() {
			if err := s.ServeConn(ctx, nc); err != nil {
				s.logger.Debug("hbone: connection ended", "peer", nc.RemoteAddr(), "err", err)
			}
		})
	}
}

// ServeConn serves one accepted TCP connection: TLS handshake, HTTP/2, and
// its tunnels. It returns when the connection is closed and every tunnel on
// it has ended; cancelling ctx closes it.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	if err := s.init(); err != nil {
		nc.Close()
		return err
	}
	wire := newWireConn(nc)
	tc := tls.Server(wire, s.tlsConf)
	hctx, cancel := context.WithTimeout(ctx, orDefault(s.HandshakeTimeout, 10*time.Second))
	err := tc.HandshakeContext(hctx)
	if err == nil {
		err = readPreface(hctx, tc)
	}
	cancel()
	if err != nil {
		tc.Close()
		s.logger.Info("hbone: rejected connection", "peer", nc.RemoteAddr(), "err", err)
		return fmt.Errorf("hbone: handshake with %s: %w", nc.RemoteAddr(), err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != http2.NextProtoTLS {
		tc.Close()
		return fmt.Errorf("hbone: %s did not negotiate ALPN h2", nc.RemoteAddr())
	}
	peer, _ := PeerIdentity(&cs) // verified in VerifyConnection

	c := newH2Conn(tc, wire, false, s.cfg, peer)
	connCtx, cancelConn := context.WithCancel(ctx)
	defer cancelConn()
	var handlers sync.WaitGroup
	c.newStream = func(st *Stream, f *http2.MetaHeadersFrame) {
		req := &Request{Peer: peer, RemoteAddr: nc.RemoteAddr()}
		perr := parseRequest(f, req)
		st.peer = peer
		st.remote = nc.RemoteAddr()
		st.local = net.TCPAddrFromAddrPort(req.Destination)
		sctx, scancel := context.WithCancel(connCtx)
		st.cancel = scancel
		handlers.Go(func() {
			defer scancel()
			s.serveStream(sctx, st, req, perr)
		})
	}
	if err := c.start(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.shutdown(ctx.Err()) })
	defer stop()
	<-c.exited
	handlers.Wait()
	return nil
}

// readPreface reads the HTTP/2 client preface.
func readPreface(ctx context.Context, tc *tls.Conn) error {
	if dl, ok := ctx.Deadline(); ok {
		tc.SetReadDeadline(dl)
		defer tc.SetReadDeadline(time.Time{})
	}
	var buf [len(clientPreface)]byte
	if _, err := io.ReadFull(tc, buf[:]); err != nil {
		return fmt.Errorf("reading HTTP/2 preface: %w", err)
	}
	if string(buf[:]) != clientPreface {
		return errors.New("not an HTTP/2 client preface")
	}
	return nil
}

// serveStream answers one CONNECT: validate, authorize, dial, then 200 and
// relay. The status is written only once the outcome of the dial is known.
func (s *Server) serveStream(ctx context.Context, st *Stream, req *Request, perr error) {
	start := time.Now()
	res := TunnelResult{Request: req}
	defer func() {
		st.Close()
		res.Duration = time.Since(start)
		if s.OnTunnelClose != nil {
			s.OnTunnelClose(res)
		}
	}()
	refuse := func(status int, err error) {
		res.Status, res.Err = status, err
		if werr := st.respond(status, true); werr != nil {
			res.Status = 0
		}
		s.logger.Info("hbone: tunnel refused", "status", status, "err", err,
			"peer", req.Peer.String(), "authority", req.Authority, "traceparent", req.Traceparent)
	}
	if perr == nil && s.CheckAuthority != nil {
		if err := s.CheckAuthority(req.Authority); err != nil {
			perr = fmt.Errorf("%w: %w", errBadRequest, err)
		}
	}
	if perr != nil {
		refuse(http.StatusBadRequest, perr)
		return
	}
	if s.Authorize != nil {
		if err := s.Authorize(ctx, req); err != nil {
			refuse(http.StatusUnauthorized, err)
			return
		}
	}
	if s.Handle != nil {
		if err := st.respond(http.StatusOK, false); err != nil {
			res.Err = err
			return
		}
		res.Status = http.StatusOK
		s.Handle(ctx, req, st)
		return
	}

	dial := s.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, orDefault(s.ConnectTimeout, 10*time.Second))
	up, err := dial(dctx, "tcp", req.Authority)
	cancel()
	if err != nil {
		if ctx.Err() != nil { // the client went away while we dialled
			res.Err = err
			return
		}
		refuse(http.StatusServiceUnavailable, fmt.Errorf("dial %s: %w", req.Authority, err))
		return
	}
	if err := st.respond(http.StatusOK, false); err != nil {
		up.Close()
		res.Err = err
		return
	}
	res.Status = http.StatusOK
	res.Received, res.Sent, res.Err = Relay(st, up)
	s.logger.Debug("hbone: tunnel closed", "peer", req.Peer.String(), "authority", req.Authority,
		"received", res.Received, "sent", res.Sent, "err", res.Err)
}

// respond writes the response HEADERS; end also ends the stream.
func (st *Stream) respond(status int, end bool) error {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	c := st.c
	c.lockWriter()
	c.mu.Lock()
	if err := st.writeErrLocked(); err != nil {
		c.mu.Unlock()
		c.abortWriter()
		return err
	}
	if end {
		st.sentEnd = true
		st.maybeDoneLocked()
	}
	st.up = status == http.StatusOK
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	fields := []hpack.HeaderField{{Name: ":status", Value: statusText(status)}}
	if err := c.writeHeadersLocked(st.id, end, fields, maxFrame); err != nil {
		c.abortWriter()
		c.close(fmt.Errorf("write: %w", err))
		return err
	}
	c.unlockWriter()
	return nil
}

func statusText(code int) string {
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusBadRequest:
		return "400"
	case http.StatusUnauthorized:
		return "401"
	case http.StatusServiceUnavailable:
		return "503"
	}
	return fmt.Sprint(code)
}
