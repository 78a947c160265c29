package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// Our HTTP/2 layer against an independent implementation, x/net/http2, in
// both roles: catches framing, SETTINGS and flow-control mistakes that a
// test of our client against our server would hide.

const interopSize = 3 << 20 // beyond x/net's default windows

func TestInteropXNetClientToOurServer(t *testing.T) {
	f := newFixture(t)
	cert := f.ca.issue(t, clientID)
	tr := &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			d := tls.Dialer{Config: &tls.Config{
				Certificates:       []tls.Certificate{*cert},
				NextProtos:         []string{"h2"},
				InsecureSkipVerify: true, // identity checks are tested elsewhere
			}}
			return d.DialContext(ctx, network, f.addr)
		},
	}
	defer tr.CloseIdleConnections()

	pr, pw := io.Pipe()
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Scheme: "https", Host: f.upstream},
		Host:   f.upstream,
		Header: http.Header{"Baggage": {"k=v"}},
		Body:   pr,
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	payload := make([]byte, interopSize)
	rand.Read(payload)
	go func() {
		pw.Write(payload)
		pw.Close() // END_STREAM: the echo upstream sees EOF and half-closes back
	}()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("echo through x/net client: %d bytes back, want the %d sent", len(got), len(payload))
	}
}

func TestInteropOurDialerToXNetServer(t *testing.T) {
	ca := newTestCA(t, "mesh")
	serverCert := ca.issue(t, serverID)
	clientCert := ca.issue(t, clientID)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{*serverCert},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	authority := make(chan string, 1)
	var wg sync.WaitGroup
	h2s := &http2.Server{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authority <- r.Host
		if r.Method != http.MethodConnect {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return // returning ends our response: END_STREAM
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				// x/net's ServeConn wants the handshake done (it checks the
				// negotiated TLS version).
				if err := c.(*tls.Conn).Handshake(); err != nil {
					c.Close()
					return
				}
				h2s.ServeConn(c, &http2.ServeConnOpts{Handler: handler})
			})
		}
	})

	d := &Dialer{
		Certificate: func(context.Context, Identity) (*tls.Certificate, error) { return clientCert, nil },
		Roots:       ca.pool,
	}
	t.Cleanup(func() {
		d.Close()
		ln.Close()
		wg.Wait()
	})
	st, err := d.DialContext(context.Background(), Target{
		Address:     ln.Addr().String(),
		Authority:   "10.1.2.3:8080",
		Source:      mustIdentity(t, clientID),
		Destination: mustIdentity(t, serverID),
	})
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	defer st.Close()
	if got := <-authority; got != "10.1.2.3:8080" {
		t.Errorf("x/net server saw authority %q", got)
	}
	payload := make([]byte, interopSize)
	rand.Read(payload)
	go func() {
		st.Write(payload)
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("echo through x/net server: %d bytes back, want the %d sent", len(got), len(payload))
	}
}
