package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"istio.io/istio/pkg/config/protocol"
	istiohbone "istio.io/istio/pkg/hbone"
	"istio.io/istio/pkg/test/echo/common"
	"istio.io/istio/pkg/test/echo/proto"
	"istio.io/istio/pkg/test/echo/server/endpoint"
	"istio.io/istio/pkg/test/echo/server/forwarder"
)

// Wire interop with Istio's own Go HBONE code (istio.io/istio/pkg/hbone, and
// the echo client built on it), in both roles, over loopback with mutual TLS
// 1.3 and SPIFFE certificates from the in-memory CA.
//
// Differences from our implementation that these tests observe (Istio at the
// version in go.mod):
//   - Istio's server flushes 200 before dialling the destination, so an
//     unreachable destination gives 200 and then an empty tunnel, never 503.
//     Its response carries a date header besides :status; ours does not.
//   - Istio's server checks client certificates only as its tls.Config says
//     (chain to ClientCAs): no SPIFFE ID or trust-domain check.
//   - Istio's client checks the server certificate only as tls.Config says:
//     with just RootCAs it verifies the hostname (the proxy IP) and so cannot
//     accept a SPIFFE-only certificate; here its config gets a
//     VerifyConnection doing the SPIFFE check our Dialer does.
//   - Istio's client sends no forwarded, baggage or traceparent (its
//     Config.Headers is not put on the CONNECT), and ignores its context.

const otherTDClientID = "spiffe://other.example/ns/client/sa/sleep"

// startIstioServer runs Istio's HBONE server (istiohbone.NewServer) behind a
// TLS listener the way Istio's echo server does, requiring a client
// certificate from roots, and returns its address.
func startIstioServer(t *testing.T, cert *tls.Certificate, roots *x509.CertPool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := tls.NewListener(ln, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS13,
	})
	srv := istiohbone.NewServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("istio Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// istioClientTLS is the tls.Config handed to Istio's dialer: cert as client
// certificate, and the server's chain checked against roots with its SPIFFE
// ID required to be want (Istio leaves that check to the caller's config).
func istioClientTLS(cert *tls.Certificate, roots *x509.CertPool, want string) *tls.Config {
	return &tls.Config{
		// Like Istio's echo client: always present cert, whatever CAs the
		// server asks for.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // SPIFFE-only certificate: checked below instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if got.String() != want {
				return fmt.Errorf("server identity %s, want %s", got, want)
			}
			return nil
		},
	}
}

// recordTunnels makes the fixture's server report every finished request.
func recordTunnels(ch chan<- TunnelResult) fixtureOpt {
	return func(f *fixture) {
		f.srv.OnTunnelClose = func(r TunnelResult) { ch <- r }
	}
}

func waitTunnel(t *testing.T, ch <-chan TunnelResult) TunnelResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("our server reported no finished tunnel within 5s")
		return TunnelResult{}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestIstioServerWithOurDialer(t *testing.T) {
	checkNoLeaks(t)
	ca := newTestCA(t, "mesh")
	clientCert := ca.issue(t, clientID)
	dialer := &Dialer{
		Certificate: func(context.Context, Identity) (*tls.Certificate, error) { return clientCert, nil },
		Roots:       ca.pool,
	}
	t.Cleanup(func() { dialer.Close() })
	istioAddr := startIstioServer(t, ca.issue(t, serverID), ca.pool)
	upstream := startUpstream(t, echo)
	target := func(authority, dst string) Target {
		return Target{
			Address:     istioAddr,
			Authority:   authority,
			Source:      mustIdentity(t, clientID),
			Destination: mustIdentity(t, dst),
		}
	}

	t.Run("echo with half-close", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := dialer.DialContext(ctx, target(upstream, serverID))
		if err != nil {
			t.Fatalf("DialContext through Istio's server: %v", err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if got := st.PeerIdentity().String(); got != serverID {
			t.Errorf("PeerIdentity = %s, want %s", got, serverID)
		}
		payload := randomBytes(256 << 10)
		werr := make(chan error, 1)
		go func() {
			_, err := st.Write(payload)
			if err == nil {
				err = st.CloseWrite() // END_STREAM: Istio's server half-closes the upstream
			}
			werr <- err
		}()
		got := readAllString(t, st) // EOF: the upstream's half-close came back as END_STREAM
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		if got != string(payload) {
			t.Fatalf("echoed %d bytes, want the %d sent back unchanged", len(got), len(payload))
		}
	})

	t.Run("unreachable destination", func(t *testing.T) {
		// Istio answers 200 before dialling (its later 503 is a superfluous
		// WriteHeader), so what is guaranteed is only that no byte flows and
		// the tunnel ends; we would have answered 503 (Retryable).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := dialer.DialContext(ctx, target(refusedAddr(t), serverID))
		if err != nil {
			t.Logf("observed: DialContext failed: %v (retryable %v)", err, Retryable(err))
			if !isStatus(err, http.StatusServiceUnavailable) {
				t.Errorf("DialContext: %v, want a 200 and an empty tunnel, or a 503", err)
			}
			return
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		n, rerr := st.Read(make([]byte, 1))
		t.Logf("observed: 200, then Read = %d, %v", n, rerr)
		if n != 0 || rerr == nil {
			t.Errorf("Read = %d, %v; want no data and the tunnel ended", n, rerr)
		}
	})

	t.Run("response headers", func(t *testing.T) {
		// Records what Istio's server sends beyond :status (our Dialer does
		// not expose response headers), through x/net's client.
		tr := &http2.Transport{TLSClientConfig: istioClientTLS(clientCert, ca.pool, serverID)}
		defer tr.CloseIdleConnections()
		for _, authority := range []string{upstream, refusedAddr(t)} {
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodConnect, "https://"+istioAddr, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = authority
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("CONNECT %s: %v", authority, err)
			}
			pw.Close()
			body, berr := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("observed: CONNECT %s: %d, headers %v, body %d bytes (%v), trailers %v",
				authority, resp.StatusCode, resp.Header, len(body), berr, resp.Trailer)
		}
	})

	t.Run("server identity from another trust domain", func(t *testing.T) {
		// Istio's server presents whatever certificate it is given; our
		// Dialer holds it to the expected SPIFFE ID.
		otherAddr := startIstioServer(t, ca.issue(t, "spiffe://other.example/ns/server/sa/ztunnel"), ca.pool)
		tg := target(upstream, serverID)
		tg.Address = otherAddr
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := dialer.DialContext(ctx, tg)
		if err == nil {
			st.Close()
			t.Fatal("DialContext succeeded, want an *IdentityError")
		}
		var ie *IdentityError
		if !errors.As(err, &ie) {
			t.Fatalf("DialContext: %v, want an *IdentityError", err)
		}
	})
}

func TestIstioDialerToOurServer(t *testing.T) {
	tunnels := make(chan TunnelResult, 4)
	f := newFixture(t, recordTunnels(tunnels))
	other := newTestCA(t, "other mesh")

	t.Run("echo", func(t *testing.T) {
		d := istiohbone.NewDialer(istiohbone.Config{
			ProxyAddress: f.addr,
			TLS:          istioClientTLS(f.ca.issue(t, clientID), f.ca.pool, serverID),
		})
		// Istio's DialContext ignores ctx: our server must answer.
		conn, err := d.DialContext(context.Background(), "tcp", f.upstream)
		if err != nil {
			t.Fatalf("Istio DialContext through our server: %v", err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		payload := randomBytes(64 << 10)
		werr := make(chan error, 1)
		go func() {
			_, err := conn.Write(payload) // a net.Pipe: blocks until Istio's copier takes it
			werr <- err
		}()
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("reading the echo: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("echo differs from what was sent")
		}
		// Istio's conn is one end of a net.Pipe, which has no CloseWrite:
		// Close is its only way to end the tunnel (END_STREAM towards us).
		conn.Close()

		r := waitTunnel(t, tunnels)
		if r.Status != http.StatusOK || r.Err != nil {
			t.Errorf("tunnel: status %d, err %v; want 200 and a clean end", r.Status, r.Err)
		}
		if r.Received != int64(len(payload)) || r.Sent != int64(len(payload)) {
			t.Errorf("relayed %d bytes in, %d out; want %d each way", r.Received, r.Sent, len(payload))
		}
		req := r.Request
		if req.Peer.String() != clientID || req.Authority != f.upstream {
			t.Errorf("request from %s to %s, want %s to %s", req.Peer, req.Authority, clientID, f.upstream)
		}
		t.Logf("observed headers from Istio's client: forwarded=%q baggage=%q; traceparent (ours if absent) %q",
			req.Forwarded, req.Baggage, req.Traceparent)
	})

	t.Run("client refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cert *tls.Certificate
		}{
			{"same CA, other trust domain", f.ca.issue(t, otherTDClientID)},
			{"other CA", other.issue(t, clientID)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := f.ln.accepted.Load()
				d := istiohbone.NewDialer(istiohbone.Config{
					ProxyAddress: f.addr,
					TLS:          istioClientTLS(tc.cert, f.ca.pool, serverID),
				})
				conn, err := d.DialContext(context.Background(), "tcp", f.upstream)
				if err == nil {
					conn.Close()
					t.Fatal("Istio DialContext succeeded, want the TLS handshake refused")
				}
				t.Logf("observed: %v", err)
				if f.ln.accepted.Load() == before {
					t.Error("our server saw no connection: the refusal was not its doing")
				}
				select {
				case r := <-tunnels:
					t.Errorf("a tunnel reached our server: %+v", r)
				default:
				}
			})
		}
	})
}

// TestIstioEchoClientThroughOurServer is what `client --hbone <our server>
// --hbone-client-cert … --hbone-client-key … http://<echo>` does, in
// process: Istio's echo forwarder sends an HTTP request to Istio's echo
// server through an HBONE tunnel terminated by our Server.
func TestIstioEchoClientThroughOurServer(t *testing.T) {
	tunnels := make(chan TunnelResult, 4)
	f := newFixture(t, recordTunnels(tunnels))
	echoAddr := startIstioEchoHTTP(t)
	certPEM, keyPEM := pemPair(t, f.ca.issue(t, clientID))
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.cert.Raw}))

	fw := forwarder.New()
	t.Cleanup(func() { fw.Close() })
	forward := func(hb *proto.HBONE) (*proto.ForwardEchoResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return fw.ForwardEcho(ctx, &forwarder.Config{Request: &proto.ForwardEchoRequest{
			Url:           "http://" + echoAddr + "/interop",
			Count:         1,
			TimeoutMicros: (3 * time.Second).Microseconds(),
			Hbone:         hb,
		}})
	}

	t.Run("hbone-insecure-skip-verify", func(t *testing.T) {
		// The only server check of the echo client that a SPIFFE-only
		// certificate passes: it verifies nothing about our server.
		resp, err := forward(&proto.HBONE{Address: f.addr, Cert: certPEM, Key: keyPEM, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("ForwardEcho via our HBONE server: %v", err)
		}
		out := strings.Join(resp.GetOutput(), "\n")
		if !strings.Contains(out, "StatusCode=200") || !strings.Contains(out, "URL=/interop") {
			t.Errorf("echo server's answer lacks StatusCode=200 and URL=/interop:\n%s", out)
		}
		r := waitTunnel(t, tunnels)
		if r.Status != http.StatusOK || r.Request.Authority != echoAddr || r.Request.Peer.String() != clientID {
			t.Errorf("tunnel: status %d from %s to %s; want 200 from %s to %s",
				r.Status, r.Request.Peer, r.Request.Authority, clientID, echoAddr)
		}
	})

	t.Run("hbone-ca", func(t *testing.T) {
		// With a CA the echo client verifies the hostname, the proxy's IP,
		// which a certificate carrying only a SPIFFE URI SAN (ours and
		// Istio's alike) cannot match.
		_, err := forward(&proto.HBONE{Address: f.addr, Cert: certPEM, Key: keyPEM, CaCert: caPEM})
		if err == nil {
			t.Fatal("ForwardEcho with --hbone-ca succeeded, want a hostname verification failure")
		}
		t.Logf("observed: %v", err)
		select {
		case r := <-tunnels:
			t.Errorf("a tunnel reached our server: %+v", r)
		default:
		}
	})
}

// startIstioEchoHTTP runs Istio's echo server HTTP endpoint on loopback and
// returns its address once it reports ready.
func startIstioEchoHTTP(t *testing.T) string {
	t.Helper()
	port := &common.Port{Name: "http", Protocol: protocol.HTTP}
	// The endpoint's readiness probe waits for the 503 its handler answers
	// while the server is not ready; it is ready once the probe succeeded.
	var isReady atomic.Bool
	ep, err := endpoint.New(endpoint.Config{
		Port:          port,
		ListenerIP:    "127.0.0.1",
		IsServerReady: isReady.Load,
		ReportRequest: func() {},
	})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	if err := ep.Start(func() { isReady.Store(true); close(ready) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("Istio echo endpoint not ready within 5s")
	}
	return fmt.Sprintf("127.0.0.1:%d", port.Port)
}

// pemPair encodes cert's leaf and key as the echo client takes them.
func pemPair(t *testing.T, cert *tls.Certificate) (certPEM, keyPEM string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
