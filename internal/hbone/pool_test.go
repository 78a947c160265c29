package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestPoolStreamsPerConnection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		streams   int
		wantConns int64
	}{
		{"one stream", 1, 1},
		{"exactly full", 100, 1},
		{"150 streams need two connections", 150, 2},
		{"201 streams need three", 201, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			streams := make([]*Stream, tc.streams)
			var wg sync.WaitGroup
			errs := make(chan error, tc.streams)
			for i := range streams {
				wg.Go(func() {
					st, err := f.dialer.DialContext(context.Background(), f.target())
					if err != nil {
						errs <- err
						return
					}
					streams[i] = st
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("DialContext: %v", err)
			}
			// Every stream is live: each echoes on its own.
			for i, st := range streams {
				msg := []byte{byte(i), byte(i >> 8)}
				st.Write(msg)
				buf := make([]byte, 2)
				if _, err := io.ReadFull(st, buf); err != nil || buf[0] != msg[0] || buf[1] != msg[1] {
					t.Fatalf("stream %d: echo %v %v", i, buf, err)
				}
			}
			if got := f.ln.accepted.Load(); got != tc.wantConns {
				t.Errorf("server accepted %d connections, want %d", got, tc.wantConns)
			}
			if got := f.dialer.poolSize(poolKey{src: f.target().Source, dst: f.target().Destination, addr: f.addr}); int64(got) != tc.wantConns {
				t.Errorf("pool holds %d connections, want %d", got, tc.wantConns)
			}
			for _, st := range streams {
				st.Close()
			}
		})
	}
}

// A server advertising fewer streams than the dialer's cap wins: streams
// beyond it go to another connection (from SETTINGS, or after a
// REFUSED_STREAM the dialer retries), never fail.
func TestServerStreamLimit(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.srv.MaxConcurrentStreams = 2 })
	var streams []*Stream
	for range 5 {
		streams = append(streams, f.dial(t))
	}
	for _, st := range streams {
		st.Close()
	}
	if got := f.ln.accepted.Load(); got != 3 {
		t.Errorf("accepted %d connections for 5 streams at 2 per connection, want 3", got)
	}
}

func TestPoolSingleFlightDial(t *testing.T) {
	f := newFixture(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			<-start
			st, err := f.dialer.DialContext(context.Background(), f.target())
			if err != nil {
				errs <- err
				return
			}
			st.Close()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("DialContext: %v", err)
	}
	if got := f.ln.accepted.Load(); got != 1 {
		t.Errorf("20 concurrent first dials made %d TLS connections, want 1", got)
	}
}

// Tunnels of different source identities never share a connection: each
// connection authenticates one workload.
func TestPoolKeys(t *testing.T) {
	f := newFixture(t)
	certs := map[string]*tls.Certificate{}
	for _, id := range []string{clientID, "spiffe://cluster.local/ns/client/sa/other"} {
		certs[id] = f.ca.issue(t, id)
	}
	var presented sync.Map
	f.srv.Authorize = func(ctx context.Context, req *Request) error {
		presented.Store(req.Peer.String(), true)
		return nil
	}
	f.dialer.Certificate = func(ctx context.Context, src Identity) (*tls.Certificate, error) {
		return certs[src.String()], nil
	}
	for id := range certs {
		for range 2 {
			tgt := f.target()
			tgt.Source = mustIdentity(t, id)
			st, err := f.dialer.DialContext(context.Background(), tgt)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
		}
		if _, ok := presented.Load(id); !ok {
			t.Errorf("server never saw identity %s", id)
		}
	}
	if got := f.ln.accepted.Load(); got != 2 {
		t.Errorf("accepted %d connections for 2 source identities, want 2", got)
	}
}

func TestPoolIdleExpiry(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.dialer.IdleTimeout = 50 * time.Millisecond })
	st := f.dial(t)
	// A connection with a stream never expires, however long it is quiet.
	time.Sleep(150 * time.Millisecond)
	if got := f.ln.open.Load(); got != 1 {
		t.Fatalf("%d server connections open while a stream is live, want 1", got)
	}
	st.Close()
	waitFor(t, "the idle connection to close", func() bool { return f.ln.open.Load() == 0 })
	key := poolKey{src: f.target().Source, dst: f.target().Destination, addr: f.addr}
	if got := f.dialer.poolSize(key); got != 0 {
		t.Errorf("pool holds %d connections after idle expiry, want 0", got)
	}
	f.dial(t).Close()
	if got := f.ln.accepted.Load(); got != 2 {
		t.Errorf("accepted %d connections, want a second one after expiry", got)
	}
}

// The server going idle first sends GOAWAY; the client must not use that
// connection again, and new tunnels get a new one.
func TestServerIdleGoAway(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.srv.IdleTimeout = 50 * time.Millisecond })
	f.dial(t).Close()
	waitFor(t, "the server to close its idle connection", func() bool { return f.ln.open.Load() == 0 })
	key := poolKey{src: f.target().Source, dst: f.target().Destination, addr: f.addr}
	waitFor(t, "the pool to drop the connection", func() bool { return f.dialer.poolSize(key) == 0 })
	f.dial(t).Close()
	if got := f.ln.accepted.Load(); got != 2 {
		t.Errorf("accepted %d connections, want 2", got)
	}
}

func TestKeepAliveKeepsQuietConnection(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.dialer.KeepAlive = 20 * time.Millisecond
		f.dialer.KeepAliveTimeout = 200 * time.Millisecond
		f.srv.KeepAlive = 20 * time.Millisecond
		f.srv.KeepAliveTimeout = 200 * time.Millisecond
	})
	st := f.dial(t)
	defer st.Close()
	time.Sleep(300 * time.Millisecond) // several ping rounds, each answered
	io.WriteString(st, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatalf("stream died on a quiet but healthy connection: %v", err)
	}
}

func TestDialerClose(t *testing.T) {
	f := newFixture(t)
	st := f.dial(t)
	f.dialer.Close()
	if _, err := st.Read(make([]byte, 1)); err == nil {
		t.Error("Read on a stream of a closed Dialer succeeded")
	}
	st.Close()
	if _, err := f.dialer.DialContext(context.Background(), f.target()); err == nil {
		t.Error("DialContext after Close succeeded")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Streams closed with unread data must give their bytes back to the
// connection window, or a pooled connection slowly starves.
func TestUnreadDataReturnsConnectionWindow(t *testing.T) {
	const chunk = 60 << 10
	f := newFixture(t, func(f *fixture) {
		f.upstream = startUpstream(t, func(c *net.TCPConn) {
			c.Write(make([]byte, chunk))
			io.Copy(io.Discard, c)
		})
		f.dialer.StreamWindow, f.dialer.ConnWindow = 64<<10, 128<<10
	})
	for i := range 10 {
		st := f.dial(t)
		buf := make([]byte, 1)
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(st, buf); err != nil {
			t.Fatalf("tunnel %d: %v (connection window exhausted?)", i, err)
		}
		// Let the rest arrive, then close without reading it.
		time.Sleep(20 * time.Millisecond)
		st.Close()
	}
	if got := f.ln.accepted.Load(); got != 1 {
		t.Errorf("accepted %d connections, want all tunnels on one", got)
	}
}

// Many tunnels echo large payloads at once over one connection whose window
// is smaller than their sum: flow control must share it without stalling.
func TestConcurrentEchoSharesConnectionWindow(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.dialer.StreamWindow, f.dialer.ConnWindow = 64<<10, 256<<10
		f.srv.StreamWindow, f.srv.ConnWindow = 64<<10, 256<<10
	})
	const streams, size = 40, 512 << 10
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			st, err := f.dialer.DialContext(context.Background(), f.target())
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(20 * time.Second))
			payload := bytes.Repeat([]byte{byte(i)}, size)
			go func() {
				st.Write(payload)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, payload) {
				errs <- fmt.Errorf("stream %d: echo of %d bytes differs (%d back)", i, size, len(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.ln.accepted.Load(); got != 1 {
		t.Errorf("accepted %d connections, want 1", got)
	}
}

// A next hop that stops answering (a frozen network path) is detected by
// the keepalive PING and its tunnels fail instead of hanging.
func TestKeepAliveDetectsDeadPeer(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.dialer.KeepAlive = 50 * time.Millisecond
		f.dialer.KeepAliveTimeout = 100 * time.Millisecond
	})
	proxy := startFreezableProxy(t, f.addr)
	tgt := f.target()
	tgt.Address = proxy.addr
	st, err := f.dialer.DialContext(context.Background(), tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	proxy.freeze()
	done := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		var ce *ConnError
		if !errors.As(err, &ce) || !Retryable(err) {
			t.Errorf("Read error %v, want a retryable *ConnError", err)
		}
		t.Logf("tunnel failed with: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("a tunnel over a dead path still hangs after 5s")
	}
}

type freezableProxy struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func (p *freezableProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// startFreezableProxy forwards TCP to target until frozen; then it holds the
// connections open and moves no more bytes, like a dead network path.
func startFreezableProxy(t *testing.T, target string) *freezableProxy {
	p := &freezableProxy{frozen: make(chan struct{})}
	p.addr = startUpstream(t, func(c *net.TCPConn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				select {
				case <-p.frozen:
					return
				default:
				}
				if n > 0 {
					dst.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}
		var wg sync.WaitGroup
		wg.Go(func() { pipe(up, c) })
		wg.Go(func() { pipe(c, up) })
		<-p.frozen
		// Stay silent until the test ends (startUpstream closes c).
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		up.Close()
		wg.Wait()
	})
	return p
}
