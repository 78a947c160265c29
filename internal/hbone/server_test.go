package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/http2/hpack"
)

func TestEchoWithHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"small", 11},
		{"one frame", 16 << 10},
		{"beyond the stream window", 9 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			st := f.dial(t)
			defer st.Close()
			payload := make([]byte, tc.size)
			rand.Read(payload)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(st)
				got <- b
			}()
			if _, err := st.Write(payload); err != nil {
				t.Fatalf("Write: %v", err)
			}
			// The upstream echoes until it reads EOF, then half-closes: the
			// echo ends with EOF only if our CloseWrite reached it.
			if err := st.CloseWrite(); err != nil {
				t.Fatalf("CloseWrite: %v", err)
			}
			select {
			case b := <-got:
				if !bytes.Equal(b, payload) {
					t.Errorf("echo: got %d bytes, want the %d sent", len(b), len(payload))
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no EOF from the echo: half-close did not cross the tunnel")
			}
		})
	}
}

// The destination half-closes first (a banner, then EOF) while the client is
// still sending: END_STREAM must travel server→client without ending the
// client→server direction.
func TestServerHalfCloseFirst(t *testing.T) {
	received := make(chan string, 1)
	f := newFixture(t, func(f *fixture) {
		f.upstream = startUpstream(t, func(c *net.TCPConn) {
			io.WriteString(c, "banner")
			c.CloseWrite()
			b, _ := io.ReadAll(c)
			received <- string(b)
		})
	})
	st := f.dial(t)
	defer st.Close()
	if got := readAllString(t, st); got != "banner" {
		t.Errorf("read %q, want banner", got)
	}
	if _, err := io.WriteString(st, "still talking"); err != nil {
		t.Fatalf("Write after the peer's half-close: %v", err)
	}
	st.CloseWrite()
	if got := <-received; got != "still talking" {
		t.Errorf("upstream received %q, want %q", got, "still talking")
	}
}

// The status is sent only once the upstream dial has an outcome: a client
// that got 200 knows the destination accepted, one that got 503 knows it did
// not.
func TestStatusAfterDial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		refuse     bool
		wantStatus int
	}{
		{"200 after the dial succeeded", false, 200},
		{"503 after the dial failed", true, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dialing := make(chan struct{})
			release := make(chan struct{})
			var dialDone atomic.Bool
			f := newFixture(t, func(f *fixture) {
				dead := refusedAddr(t)
				f.srv.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					close(dialing)
					<-release
					if tc.refuse {
						addr = dead
					}
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					dialDone.Store(true)
					return c, err
				}
			})
			type result struct {
				st  *Stream
				err error
			}
			res := make(chan result, 1)
			go func() {
				st, err := f.dialer.DialContext(context.Background(), f.target())
				res <- result{st, err}
			}()
			<-dialing
			select {
			case r := <-res:
				t.Fatalf("DialContext returned (%v) while the server was still dialling", r.err)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			r := <-res
			if !dialDone.Load() {
				t.Error("the answer arrived before the server's dial finished")
			}
			if tc.wantStatus == 200 {
				if r.err != nil {
					t.Fatalf("DialContext: %v", r.err)
				}
				r.st.Close()
				return
			}
			if !isStatus(r.err, tc.wantStatus) {
				t.Fatalf("DialContext error %v, want status %d", r.err, tc.wantStatus)
			}
			if !Retryable(r.err) {
				t.Errorf("Retryable(%v) = false, want true", r.err)
			}
		})
	}
}

func TestUpstreamRefused(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.upstream = refusedAddr(t) })
	_, err := f.dialer.DialContext(context.Background(), f.target())
	if !isStatus(err, 503) {
		t.Fatalf("DialContext error %v, want 503", err)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.srv.CheckAuthority = func(a string) error {
			if strings.HasPrefix(a, "10.9.9.9:") {
				return errors.New("not a workload of this node")
			}
			return nil
		}
	})
	hf := func(kv ...string) []hpack.HeaderField {
		var out []hpack.HeaderField
		for i := 0; i < len(kv); i += 2 {
			out = append(out, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		fields    []hpack.HeaderField
		endStream bool
		want      string
	}{
		{"GET", hf(":method", "GET", ":scheme", "https", ":authority", f.upstream, ":path", "/"), true, "400"},
		{"POST", hf(":method", "POST", ":scheme", "https", ":authority", f.upstream, ":path", "/"), false, "400"},
		{"missing authority", hf(":method", "CONNECT"), false, "400"},
		{"hostname authority", hf(":method", "CONNECT", ":authority", "example.com:80"), false, "400"},
		{"authority without port", hf(":method", "CONNECT", ":authority", "10.0.0.1"), false, "400"},
		{"port zero", hf(":method", "CONNECT", ":authority", "10.0.0.1:0"), false, "400"},
		{"extended CONNECT", hf(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", f.upstream), false, "400"},
		{"rejected by CheckAuthority", hf(":method", "CONNECT", ":authority", "10.9.9.9:80"), false, "400"},
		{"valid", hf(":method", "CONNECT", ":authority", f.upstream), false, "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawRequest(t, f, tc.fields, tc.endStream); got != tc.want {
				t.Errorf(":status %s, want %s", got, tc.want)
			}
		})
	}
	// Through the Dialer the 400 is a non-retryable StatusError.
	tgt := f.target()
	tgt.Authority = "10.9.9.9:80"
	_, err := f.dialer.DialContext(context.Background(), tgt)
	if !isStatus(err, 400) || Retryable(err) {
		t.Errorf("DialContext error %v (retryable %v), want non-retryable 400", err, Retryable(err))
	}
}

func TestAuthorizeDenied(t *testing.T) {
	var dialled atomic.Bool
	f := newFixture(t, func(f *fixture) {
		f.srv.Authorize = func(ctx context.Context, req *Request) error {
			return errors.New("denied by policy ns/server/deny-all")
		}
		f.srv.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled.Store(true)
			return nil, errors.New("must not dial")
		}
	})
	_, err := f.dialer.DialContext(context.Background(), f.target())
	if !isStatus(err, 401) {
		t.Fatalf("DialContext error %v, want 401", err)
	}
	if Retryable(err) {
		t.Error("a policy deny must not be retryable")
	}
	if dialled.Load() {
		t.Error("the server dialled the destination of a denied request")
	}
}

func TestRequestReachesAuthorize(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name   string
		modify func(*Target)
		want   func(f *fixture) Request
	}{
		{
			name: "all headers",
			modify: func(t *Target) {
				t.ClientAddr = netip.MustParseAddrPort("10.1.2.3:45678")
				t.Baggage = "k1=v1,k2=v2"
				t.Traceparent = tp
			},
			want: func(f *fixture) Request {
				return Request{
					Authority:   f.upstream,
					Destination: netip.MustParseAddrPort(f.upstream),
					Peer:        mustIdentity(t, clientID),
					Forwarded:   `for="10.1.2.3:45678"`,
					ClientAddr:  netip.MustParseAddrPort("10.1.2.3:45678"),
					Baggage:     "k1=v1,k2=v2",
					Traceparent: tp,
				}
			},
		},
		{
			name: "IPv6 client is quoted with brackets",
			modify: func(t *Target) {
				t.ClientAddr = netip.MustParseAddrPort("[fd00::1]:80")
				t.Traceparent = tp
			},
			want: func(f *fixture) Request {
				return Request{
					Authority:   f.upstream,
					Destination: netip.MustParseAddrPort(f.upstream),
					Peer:        mustIdentity(t, clientID),
					Forwarded:   `for="[fd00::1]:80"`,
					ClientAddr:  netip.MustParseAddrPort("[fd00::1]:80"),
					Traceparent: tp,
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan Request, 1)
			f := newFixture(t, func(f *fixture) {
				f.srv.Authorize = func(ctx context.Context, req *Request) error {
					got <- *req
					return nil
				}
			})
			tgt := f.target()
			tc.modify(&tgt)
			st, err := f.dialer.DialContext(context.Background(), tgt)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			req := <-got
			if diff := cmp.Diff(tc.want(f), req, cmpopts.IgnoreFields(Request{}, "RemoteAddr"), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Request (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("traceparent generated when absent", func(t *testing.T) {
		got := make(chan Request, 1)
		f := newFixture(t, func(f *fixture) {
			f.srv.Authorize = func(ctx context.Context, req *Request) error {
				got <- *req
				return nil
			}
		})
		st := f.dial(t)
		st.Close()
		if req := <-got; !validTraceparent(req.Traceparent) {
			t.Errorf("traceparent %q is not a valid W3C traceparent", req.Traceparent)
		}
	})
}

func TestTLSRefusals(t *testing.T) {
	other := newTestCA(t, "other mesh")
	for _, tc := range []struct {
		name    string
		connect func(t *testing.T, f *fixture) error
	}{
		{"client without certificate", func(t *testing.T, f *fixture) error {
			return tlsExchange(f.addr, &tls.Config{NextProtos: []string{"h2"}, InsecureSkipVerify: true})
		}},
		{"client certificate from another trust domain", func(t *testing.T, f *fixture) error {
			cert := f.ca.issue(t, "spiffe://evil.local/ns/client/sa/sleep")
			f.dialer.Certificate = func(context.Context, Identity) (*tls.Certificate, error) { return cert, nil }
			_, err := f.dialer.DialContext(context.Background(), f.target())
			return err
		}},
		{"client certificate from another CA", func(t *testing.T, f *fixture) error {
			cert := other.issue(t, clientID)
			f.dialer.Certificate = func(context.Context, Identity) (*tls.Certificate, error) { return cert, nil }
			_, err := f.dialer.DialContext(context.Background(), f.target())
			return err
		}},
		{"client certificate without SPIFFE ID", func(t *testing.T, f *fixture) error {
			cert := f.ca.issue(t, "https://example.com/")
			f.dialer.Certificate = func(context.Context, Identity) (*tls.Certificate, error) { return cert, nil }
			_, err := f.dialer.DialContext(context.Background(), f.target())
			return err
		}},
		{"plaintext HTTP/1.1 CONNECT", func(t *testing.T, f *fixture) error {
			return plaintextExchange(f.addr, "CONNECT "+f.upstream+" HTTP/1.1\r\nHost: "+f.upstream+"\r\n\r\n")
		}},
		{"plaintext HTTP/2 preface", func(t *testing.T, f *fixture) error {
			return plaintextExchange(f.addr, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var authorized atomic.Bool
			f := newFixture(t, func(f *fixture) {
				f.srv.Authorize = func(context.Context, *Request) error { authorized.Store(true); return nil }
			})
			err := tc.connect(t, f)
			if err == nil {
				t.Fatal("connection accepted, want refused")
			}
			var se *StatusError
			if errors.As(err, &se) {
				t.Errorf("got HTTP status %d, want refusal at TLS", se.Code)
			}
			if authorized.Load() {
				t.Error("a request reached Authorize")
			}
			t.Logf("refused: %v", err)
		})
	}
}

// tlsExchange handshakes and reads: in TLS 1.3 the server's verdict on the
// client certificate arrives after the client's handshake completes.
func tlsExchange(addr string, conf *tls.Config) error {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// plaintextExchange sends msg unencrypted and reports an error if the
// server closed the connection without answering in HTTP.
func plaintextExchange(addr, msg string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, msg)
	b, _ := io.ReadAll(c)
	if bytes.Contains(b, []byte("HTTP/")) || bytes.Contains(b, []byte("200")) {
		return nil
	}
	return errors.New("connection closed without an answer")
}

func TestServerIdentityMismatch(t *testing.T) {
	f := newFixture(t)
	tgt := f.target()
	tgt.Destination = mustIdentity(t, "spiffe://cluster.local/ns/server/sa/somebody-else")
	_, err := f.dialer.DialContext(context.Background(), tgt)
	var ie *IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("DialContext error %v, want *IdentityError", err)
	}
	if ie.Got != serverID || ie.Want != tgt.Destination {
		t.Errorf("IdentityError got %q want %v", ie.Got, ie.Want)
	}
	for _, s := range []string{serverID, "somebody-else"} {
		if !contains(err, s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if Retryable(err) {
		t.Error("an identity mismatch must not be retryable")
	}
}

func TestReadDeadline(t *testing.T) {
	f := newFixture(t)
	st := f.dial(t)
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := st.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read error %v, want deadline exceeded", err)
	}
	// Clearing the deadline makes the stream usable again.
	st.SetReadDeadline(time.Time{})
	io.WriteString(st, "x")
	buf := make([]byte, 1)
	if _, err := io.ReadFull(st, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read after clearing the deadline: %q %v", buf, err)
	}
}

func TestHandle(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.srv.Handle = func(ctx context.Context, req *Request, tun *Stream) {
			io.WriteString(tun, "hello "+req.Peer.ServiceAccount)
			tun.CloseWrite()
			io.Copy(io.Discard, tun)
		}
	})
	st := f.dial(t)
	defer st.Close()
	st.CloseWrite()
	if got := readAllString(t, st); got != "hello sleep" {
		t.Errorf("read %q", got)
	}
}

func TestOnTunnelClose(t *testing.T) {
	var mu sync.Mutex
	var results []TunnelResult
	f := newFixture(t, func(f *fixture) {
		f.srv.OnTunnelClose = func(r TunnelResult) {
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		}
	})
	st := f.dial(t)
	io.WriteString(st, "12345")
	st.CloseWrite()
	readAllString(t, st)
	st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 1 {
		t.Fatalf("%d results, want 1", len(results))
	}
	r := results[0]
	if r.Status != 200 || r.Received != 5 || r.Sent != 5 || r.Err != nil {
		t.Errorf("result status=%d received=%d sent=%d err=%v, want 200 5 5 nil", r.Status, r.Received, r.Sent, r.Err)
	}
}

// A client that gives up while the server is still dialling resets the
// stream, and the reset cancels the server's dial.
func TestClientCancelStopsServerDial(t *testing.T) {
	dialCancelled := make(chan struct{})
	f := newFixture(t, func(f *fixture) {
		f.srv.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-ctx.Done()
			close(dialCancelled)
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := f.dialer.DialContext(ctx, f.target())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DialContext error %v, want deadline exceeded", err)
	}
	select {
	case <-dialCancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's dial was not cancelled by the client's reset")
	}
	// The connection is still good for the next tunnel.
	f.srv.Dial = nil
}
