package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// startGreeter runs a loopback TCP server that speaks first ("hello\n"),
// then echoes, like a server-first protocol (MySQL, SMTP).
func startGreeter(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "hello\n")
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestTCPPassThrough: what is not HTTP, and what arrives on a port declared
// TCP, is relayed to an endpoint over HBONE with the waypoint's identity;
// server-first protocols work (detection gives up waiting for the client).
func TestTCPPassThrough(t *testing.T) {
	f := newL7(t, nil)
	echo := startEcho(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	greeter := startGreeter(t)
	f.addresses(clientWorkload(),
		svc("db", "10.96.0.30", 5432), endpoint("db-0", "db", 5432, parsePort(t, echoPort)),
		svc("mysql", "10.96.0.31", 3306), endpoint("mysql-0", "mysql", 3306, greeter),
		svc("legacy", "10.96.0.32", 9000), endpoint("legacy-0", "legacy", 9000, parsePort(t, echoPort), plaintext),
	)
	ctx := context.Background()
	roundTrip := func(t *testing.T, dst, msg string) string {
		t.Helper()
		st, err := f.tunnel(ctx, clientID, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		io.WriteString(st, msg)
		st.CloseWrite()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(st)
		if err != nil {
			t.Fatalf("%s: %v", dst, err)
		}
		return string(got)
	}

	t.Run("binary protocol", func(t *testing.T) {
		const msg = "\x00\x01\x02 not http at all\n"
		if got := roundTrip(t, "10.96.0.30:5432", msg); got != msg {
			t.Errorf("echo %q, want %q", got, msg)
		}
	})
	t.Run("endpoint outside the mesh: plain TCP", func(t *testing.T) {
		if got := roundTrip(t, "10.96.0.32:9000", "plain\n"); got != "plain\n" {
			t.Errorf("echo %q", got)
		}
	})
	t.Run("server first", func(t *testing.T) {
		st, err := f.tunnel(ctx, clientID, "10.96.0.31:3306")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(st).ReadString('\n')
		if err != nil || line != "hello\n" {
			t.Fatalf("greeting %q, %v", line, err)
		}
	})
	t.Run("port declared TCP: HTTP bytes pass through untouched", func(t *testing.T) {
		skipWithoutRouter(t)
		if err := f.applyRoutes(nil, routes("db", "10.96.0.30",
			&routeapi.PortRoutes{Port: 5432, Name: "tcp", Protocol: routeapi.Protocol_PROTOCOL_TCP})); err != nil {
			t.Fatal(err)
		}
		const req = "GET / HTTP/1.1\r\nHost: db\r\n\r\n"
		if got := roundTrip(t, "10.96.0.30:5432", req); got != req {
			t.Errorf("echo %q, want the request bytes back", got)
		}
	})
	if _, ok := f.upstreamPeers.Load(waypointID); !ok {
		t.Error("the endpoint's ztunnel did not see the waypoint's identity")
	}
	f.logs.waitLog(t, "tunnel closed", map[string]any{"mode": "tcp", "dst": "10.96.0.30:5432", "received": 20.0, "sent": 20.0})
	text := f.metricsText()
	for _, want := range []string{`istio_tcp_connections_opened_total{reporter="waypoint"}`, `istio_tcp_received_bytes_total{reporter="waypoint"}`} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func parsePort(t *testing.T, s string) uint16 {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", "127.0.0.1:"+s)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(ap.Port)
}

// TestTCPNoEndpoint: a pass-through tunnel whose destination has no
// endpoint is closed and counted.
func TestTCPNoEndpoint(t *testing.T) {
	f := newL7(t, nil)
	f.addresses(svc("db", "10.96.0.30", 5432))
	st, err := f.tunnel(context.Background(), clientID, "10.96.0.30:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	io.WriteString(st, "\x00binary")
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(st); len(b) != 0 {
		t.Errorf("read %q from a tunnel without endpoint", b)
	}
	f.logs.waitLog(t, "tunnel closed", map[string]any{"mode": "tcp", "dst": "10.96.0.30:5432"})
	waitFor(t, "failure counted", func() bool {
		return strings.Contains(f.metricsText(), "waypoint_tcp_connect_failures_total 1")
	})
}

// TestBadHTTP: malformed requests get 400, oversized headers 431, from the
// in-tunnel server, without reaching a backend or stopping the waypoint.
func TestBadHTTP(t *testing.T) {
	f := newL7(t, nil)
	b := startBackend(t, "reviews")
	f.addresses(clientWorkload(), svc("reviews", "10.96.0.10", 80), endpoint("reviews-0", "reviews", 80, b.port))
	ctx := context.Background()
	raw := func(t *testing.T, req string) string {
		t.Helper()
		st, err := f.tunnel(ctx, clientID, reviewsVIP)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		io.WriteString(st, req)
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(st).ReadString('\n')
		return line
	}
	for _, tc := range []struct{ name, req, want string }{
		{"header line without colon", "GET / HTTP/1.1\r\nHost: reviews\r\nnot a header\r\n\r\n", "HTTP/1.1 400"},
		{"bad version", "GET / HTTP/9.9\r\nHost: reviews\r\n\r\n", "HTTP/1.1 505"},
		{"two content lengths", "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400"},
		{"headers over the limit", "GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + strings.Repeat("a", DefaultMaxHeaderBytes+8192) + "\r\n\r\n", "HTTP/1.1 431"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := raw(t, tc.req); !strings.HasPrefix(got, tc.want) {
				t.Errorf("status line %q, want %s", got, tc.want)
			}
		})
	}
	t.Run("HTTP/2 headers over the limit", func(t *testing.T) {
		// Go's client will not send more than the advertised limit: frames
		// by hand, as a client that ignores it would.
		st, err := f.tunnel(ctx, clientID, reviewsVIP)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(st, http2Preface)
		fr := http2.NewFramer(st, st)
		fr.WriteSettings()
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, hf := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "reviews"}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
		}
		// Fields of 4 KiB adding up to just over the limit (with HPACK's 32
		// bytes per field): far over it, or one huge field, is a connection
		// error instead (Go's defence against CONTINUATION floods).
		for i := range DefaultMaxHeaderBytes / 4096 {
			enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("a", 4096)})
		}
		b := block.Bytes()
		const chunk = 16384
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:chunk], EndStream: true})
		for b = b[chunk:]; len(b) > 0; {
			n := min(chunk, len(b))
			fr.WriteContinuation(1, n == len(b), b[:n])
			b = b[n:]
		}
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		for {
			fm, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if h, ok := fm.(*http2.MetaHeadersFrame); ok && h.StreamID == 1 {
				if s := h.PseudoValue("status"); s != "431" {
					t.Errorf(":status %s, want 431", s)
				}
				return
			}
			if rst, ok := fm.(*http2.RSTStreamFrame); ok {
				t.Fatalf("stream reset (%v), want 431", rst.ErrCode)
			}
		}
	})
	if n := b.hits.Load(); n != 0 {
		t.Errorf("the backend got %d of the bad requests", n)
	}

	t.Run("protocol upgrade", func(t *testing.T) {
		st, err := f.tunnel(ctx, clientID, reviewsVIP)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		io.WriteString(st, "GET /ws HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(st)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v, %v", resp, err)
		}
		io.WriteString(st, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			t.Errorf("after the upgrade: %q, %v", buf, err)
		}
	})
	if resp, _ := do(t, f.client(clientID, reviewsVIP, false), newReq(t, "GET", "http://reviews/", nil)); resp.StatusCode != 200 {
		t.Errorf("a good request afterwards: %d", resp.StatusCode)
	}
}
