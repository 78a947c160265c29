package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	clientID = "spiffe://cluster.local/ns/client/sa/sleep"
	serverID = "spiffe://cluster.local/ns/server/sa/ztunnel"
)

func mustIdentity(t testing.TB, s string) Identity {
	t.Helper()
	id, err := ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fixture is an HBONE server on loopback in front of an upstream, and a
// Dialer for it, with real TLS from an in-memory CA.
type fixture struct {
	t        testing.TB
	ca       *testCA
	srv      *Server
	ln       *countingListener
	addr     string // HBONE listener
	upstream string // the destination behind it
	dialer   *Dialer
}

type fixtureOpt func(*fixture)

// newFixture starts an upstream (echo unless an option replaced it), the
// server and a dialer. Options run before anything starts. Cleanup closes
// all and checks that no goroutine outlives them.
func newFixture(t testing.TB, opts ...fixtureOpt) *fixture {
	t.Helper()
	if _, ok := t.(*testing.T); ok {
		checkNoLeaks(t)
	}
	ca := newTestCA(t, "mesh")
	f := &fixture{t: t, ca: ca}
	serverCert := ca.issue(t, serverID)
	f.srv = &Server{
		TLS: &tls.Config{Certificates: []tls.Certificate{*serverCert}, ClientCAs: ca.pool},
	}
	clientCert := ca.issue(t, clientID)
	f.dialer = &Dialer{
		Certificate: func(context.Context, Identity) (*tls.Certificate, error) { return clientCert, nil },
		Roots:       ca.pool,
	}
	f.upstream = startUpstream(t, echo)
	for _, o := range opts {
		o(f)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = &countingListener{Listener: ln}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ctx, f.ln) }()
	t.Cleanup(func() {
		f.dialer.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// target returns a Target for the fixture's upstream.
func (f *fixture) target() Target {
	return Target{
		Address:     f.addr,
		Authority:   f.upstream,
		Source:      mustIdentity(f.t, clientID),
		Destination: mustIdentity(f.t, serverID),
	}
}

func (f *fixture) dial(t testing.TB) *Stream {
	t.Helper()
	st, err := f.dialer.DialContext(context.Background(), f.target())
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	return st
}

// checkNoLeaks fails the test if goroutines started during it are still
// running shortly after its cleanups (registered later, so run earlier).
func checkNoLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d running, %d before the test\n%s", runtime.NumGoroutine(), before, buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// countingListener counts accepted connections (one per TLS handshake
// attempt) and those still open.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
	open     atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	l.open.Add(1)
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// startUpstream runs handle for every connection to a new loopback listener
// until the test ends.
func startUpstream(t testing.TB, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies everything back, then half-closes.
func echo(c *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			c.CloseWrite()
			return
		}
	}
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawRequest sends one HEADERS frame with fields on a fresh HBONE connection,
// speaking HTTP/2 by hand so it can send what the Dialer never would, and
// returns the response :status.
func rawRequest(t *testing.T, f *fixture, fields []hpack.HeaderField, endStream bool) string {
	t.Helper()
	cert := f.ca.issue(t, clientID)
	tc, err := tls.Dial("tcp", f.addr, &tls.Config{
		Certificates:       []tls.Certificate{*cert},
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // this test is not about the server's identity
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range fields {
		enc.WriteField(hf)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		t.Fatal(err)
	}
	for {
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading response: %v", err)
		}
		switch fm := fm.(type) {
		case *http2.MetaHeadersFrame:
			if fm.StreamID == 1 {
				return fm.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", fm.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY: %v", fm.ErrCode)
		}
	}
}

// readAllString reads r to EOF.
func readAllString(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func isStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
