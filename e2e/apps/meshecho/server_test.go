package meshecho

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testServer is a Server running on loopback listeners for one test.
type testServer struct {
	httpAddr, grpcAddr, tcpAddr string
	// accepted counts the connections each listener accepted.
	accepted struct{ http, grpc, tcp atomic.Int64 }
}

func (ts *testServer) url(path string) string { return "http://" + ts.httpAddr + path }

// startServer runs a Server with cfg on 127.0.0.1:0 listeners until the test
// ends, and checks that Serve then returns nil.
func startServer(t *testing.T, cfg ServerConfig) *testServer {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ls, err := ListenConfig{HTTP: "127.0.0.1:0", GRPC: "127.0.0.1:0", TCP: "127.0.0.1:0"}.Listen(ctx)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ts := &testServer{httpAddr: ls.HTTP.Addr().String(), grpcAddr: ls.GRPC.Addr().String(), tcpAddr: ls.TCP.Addr().String()}
	ls.HTTP = countingListener{ls.HTTP, &ts.accepted.http}
	ls.GRPC = countingListener{ls.GRPC, &ts.accepted.grpc}
	ls.TCP = countingListener{ls.TCP, &ts.accepted.tcp}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ls) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return testClient(t, &p)
}

func http1Client(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	return testClient(t, &p)
}

// testClient returns a client whose idle connections are closed when the
// test ends, before the servers it started shut down.
func testClient(t *testing.T, p *http.Protocols) *http.Client {
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get makes a request and returns the status, the x-echo headers and the body.
func get(t *testing.T, c *http.Client, method, url string, header http.Header, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// bodyLines splits an echo body into lines, replacing the RemoteAddr value
// (an ephemeral port) by "<loopback>" after checking it is one.
func bodyLines(t *testing.T, body string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	for i, l := range lines {
		if addr, ok := strings.CutPrefix(l, "RemoteAddr="); ok {
			host, _, err := net.SplitHostPort(addr)
			if err != nil || host != "127.0.0.1" {
				t.Errorf("RemoteAddr=%q, want 127.0.0.1:<port>", addr)
			}
			lines[i] = "RemoteAddr=<loopback>"
		}
	}
	return lines
}

func TestHTTPEcho(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{Name: "echo-v1-abc", Namespace: "demo", Version: "v1"})
	std := http.Header{"User-Agent": {"meshecho-test"}, "Accept-Encoding": {"identity"}}
	tests := []struct {
		name   string
		client *http.Client
		method string
		path   string
		header http.Header
		body   string
		want   []string
	}{
		{
			name:   "http1 get",
			client: http1Client(t),
			method: "GET",
			path:   "/the/path?x=y",
			header: http.Header{"X-Multi": {"b", "a"}},
			want: []string{
				"ServiceVersion=v1",
				"Hostname=echo-v1-abc",
				"Namespace=demo",
				"Method=GET",
				"URL=/the/path?x=y",
				"Host=" + ts.httpAddr,
				"Proto=HTTP/1.1",
				"RemoteAddr=<loopback>",
				"RequestHeader=Accept-Encoding: identity",
				"RequestHeader=User-Agent: meshecho-test",
				"RequestHeader=X-Multi: b",
				"RequestHeader=X-Multi: a",
				"BodyLength=0",
				"StatusCode=200",
			},
		},
		{
			name:   "h2c post with body",
			client: h2cClient(t),
			method: "POST",
			path:   "/submit",
			body:   "twelve bytes",
			want: []string{
				"ServiceVersion=v1",
				"Hostname=echo-v1-abc",
				"Namespace=demo",
				"Method=POST",
				"URL=/submit",
				"Host=" + ts.httpAddr,
				"Proto=HTTP/2.0",
				"RemoteAddr=<loopback>",
				"RequestHeader=Accept-Encoding: identity",
				"RequestHeader=Content-Length: 12",
				"RequestHeader=User-Agent: meshecho-test",
				"BodyLength=12",
				"StatusCode=200",
			},
		},
		{
			name:   "unclean path is echoed, not redirected",
			client: http1Client(t),
			method: "GET",
			path:   "//a/../b",
			want: []string{
				"ServiceVersion=v1",
				"Hostname=echo-v1-abc",
				"Namespace=demo",
				"Method=GET",
				"URL=//a/../b",
				"Host=" + ts.httpAddr,
				"Proto=HTTP/1.1",
				"RemoteAddr=<loopback>",
				"RequestHeader=Accept-Encoding: identity",
				"RequestHeader=User-Agent: meshecho-test",
				"BodyLength=0",
				"StatusCode=200",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := std.Clone()
			for k, vs := range tc.header {
				h[k] = vs
			}
			status, header, body := get(t, tc.client, tc.method, ts.url(tc.path), h, tc.body)
			if status != http.StatusOK {
				t.Errorf("status = %d, want 200", status)
			}
			if diff := cmp.Diff(tc.want, bodyLines(t, body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			gotHeaders := []string{header.Get(HeaderHostname), header.Get(HeaderVersion)}
			if diff := cmp.Diff([]string{"echo-v1-abc", "v1"}, gotHeaders); diff != "" {
				t.Errorf("x-echo headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPControls(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	tests := []struct {
		name       string
		path       string
		header     http.Header
		wantStatus int
		wantLine   string // a line the body must contain
		minElapsed time.Duration
	}{
		{name: "default", path: "/", wantStatus: 200, wantLine: "StatusCode=200"},
		{name: "status query", path: "/?status=418", wantStatus: 418, wantLine: "StatusCode=418"},
		{name: "status header", path: "/", header: http.Header{"X-Echo-Status": {"503"}}, wantStatus: 503, wantLine: "StatusCode=503"},
		{name: "query wins over header", path: "/?status=201", header: http.Header{"X-Echo-Status": {"503"}}, wantStatus: 201, wantLine: "StatusCode=201"},
		{name: "delay query", path: "/?delay=150ms", wantStatus: 200, wantLine: "StatusCode=200", minElapsed: 150 * time.Millisecond},
		{name: "delay header with status", path: "/?status=504", header: http.Header{"X-Echo-Delay": {"100ms"}}, wantStatus: 504, wantLine: "StatusCode=504", minElapsed: 100 * time.Millisecond},
		{name: "bad status", path: "/?status=abc", wantStatus: 400, wantLine: `meshecho: status "abc": want an HTTP status from 200 to 599`},
		{name: "informational status refused", path: "/?status=101", wantStatus: 400, wantLine: `meshecho: status "101": want an HTTP status from 200 to 599`},
		{name: "bad delay", path: "/?delay=soon", wantStatus: 400, wantLine: `meshecho: delay "soon": want a duration such as 150ms`},
		{name: "healthz", path: "/healthz", wantStatus: 200, wantLine: "ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			status, _, body := get(t, http1Client(t), "GET", ts.url(tc.path), tc.header, "")
			if elapsed := time.Since(start); elapsed < tc.minElapsed {
				t.Errorf("answered after %v, want at least %v", elapsed, tc.minElapsed)
			}
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
			if !strings.Contains("\n"+body, "\n"+tc.wantLine+"\n") {
				t.Errorf("body lacks line %q:\n%s", tc.wantLine, body)
			}
		})
	}
}

func TestHTTPDelayRespectsCancellation(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/?delay=10s"), nil)
	start := time.Now()
	if resp, err := http1Client(t).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want the client timeout", resp.StatusCode)
	}
	// The test cleanup's Serve must also return promptly: the handler left
	// its delay when the client went away.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %v", elapsed)
	}
}

func TestFailRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cfg        ServerConfig
		wantStatus int
	}{
		{name: "rate 1 always fails", cfg: ServerConfig{FailRate: 1}, wantStatus: 503},
		{name: "rate 1 with code", cfg: ServerConfig{FailRate: 1, FailCode: 500}, wantStatus: 500},
		{name: "rate 0 never fails", cfg: ServerConfig{FailRate: 0}, wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, tc.cfg)
			c := h2cClient(t)
			for range 20 {
				// Fail-rate applies before the status control.
				status, header, body := get(t, c, "GET", ts.url("/?status=200"), nil, "")
				if status != tc.wantStatus {
					t.Fatalf("status = %d, want %d", status, tc.wantStatus)
				}
				if header.Get(HeaderVersion) != "v1" || !strings.Contains(body, "ServiceVersion=v1\n") {
					t.Errorf("failed reply does not say who answered: %v\n%s", header, body)
				}
				if status, _, _ := get(t, c, "GET", ts.url("/healthz"), nil, ""); status != 200 {
					t.Fatalf("/healthz status = %d, want 200 whatever the fail rate", status)
				}
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestChaining(t *testing.T) {
	t.Parallel()
	ratings := startServer(t, ServerConfig{Name: "ratings-v1", Namespace: "demo", Version: "v1"})
	reviews := startServer(t, ServerConfig{Name: "reviews-v2", Namespace: "demo", Version: "v2",
		Calls: []string{ratings.url("/ratings/0")}})
	deadURL := "http://" + closedAddr(t) + "/down"
	header := http.Header{
		"User-Agent":      {"meshecho-test"},
		"Accept-Encoding": {"identity"},
		"X-Request-Id":    {"req-1"},
		"Traceparent":     {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"Baggage":         {"k=v"},
		"X-B3-Traceid":    {"abc"},
		"X-Ambient-Test":  {"yes"},
		"X-Private":       {"not propagated"},
	}
	tests := []struct {
		name       string
		cfg        ServerConfig
		wantStatus int
		wantTail   []string // body lines from the first Upstream= line on
		wantFirst  string   // or: a prefix of the first Upstream= line
	}{
		{
			name:       "upstream body indented, headers propagated",
			cfg:        ServerConfig{Name: "frontend", Calls: []string{reviews.url("/reviews/0")}},
			wantStatus: 200,
			wantTail: []string{
				"Upstream=" + reviews.url("/reviews/0") + " status=200",
				"  ServiceVersion=v2",
				"  Hostname=reviews-v2",
				"  Namespace=demo",
				"  Method=GET",
				"  URL=/reviews/0",
				"  Host=" + reviews.httpAddr,
				"  Proto=HTTP/1.1",
				"  RemoteAddr=<loopback>",
				"  RequestHeader=Accept-Encoding: gzip",
				"  RequestHeader=Baggage: k=v",
				"  RequestHeader=Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				"  RequestHeader=User-Agent: Go-http-client/1.1",
				"  RequestHeader=X-Ambient-Test: yes",
				"  RequestHeader=X-B3-Traceid: abc",
				"  RequestHeader=X-Request-Id: req-1",
				"  BodyLength=0",
				"  StatusCode=200",
				"  Upstream=" + ratings.url("/ratings/0") + " status=200",
				"    ServiceVersion=v1",
				"    Hostname=ratings-v1",
				"    Namespace=demo",
				"    Method=GET",
				"    URL=/ratings/0",
				"    Host=" + ratings.httpAddr,
				"    Proto=HTTP/1.1",
				"    RemoteAddr=<loopback>",
				"    RequestHeader=Accept-Encoding: gzip",
				"    RequestHeader=Baggage: k=v",
				"    RequestHeader=Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				"    RequestHeader=User-Agent: Go-http-client/1.1",
				"    RequestHeader=X-Ambient-Test: yes",
				"    RequestHeader=X-B3-Traceid: abc",
				"    RequestHeader=X-Request-Id: req-1",
				"    BodyLength=0",
				"    StatusCode=200",
			},
		},
		{
			name:       "upstream status is reported, not propagated",
			cfg:        ServerConfig{Name: "frontend", Calls: []string{ratings.url("/?status=503")}},
			wantStatus: 200,
			wantFirst:  "Upstream=" + ratings.url("/?status=503") + " status=503\n  ServiceVersion=v1",
		},
		{
			name:       "unreachable upstream gives 502",
			cfg:        ServerConfig{Name: "frontend", Calls: []string{deadURL}},
			wantStatus: 502,
			wantFirst:  "Upstream=" + deadURL + " error=dial tcp ",
		},
		{
			name:       "slow upstream times out with 502",
			cfg:        ServerConfig{Name: "frontend", UpstreamTimeout: 50 * time.Millisecond, Calls: []string{ratings.url("/?delay=5s")}},
			wantStatus: 502,
			wantFirst:  "Upstream=" + ratings.url("/?delay=5s") + " error=no reply within 50ms: context deadline exceeded",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			front := startServer(t, tc.cfg)
			status, _, body := get(t, http1Client(t), "GET", front.url("/"), header, "")
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
			lines := bodyLines(t, body)
			for i, l := range lines {
				lines[i] = indentedRemoteAddr(l)
			}
			if !strings.Contains(body, "StatusCode="+strconv.Itoa(tc.wantStatus)+"\n") {
				t.Errorf("body lacks StatusCode=%d:\n%s", tc.wantStatus, body)
			}
			var tail []string
			for i, l := range lines {
				if strings.HasPrefix(l, "Upstream=") {
					tail = lines[i:]
					break
				}
			}
			if tc.wantFirst != "" {
				if got := strings.Join(tail, "\n"); !strings.HasPrefix(got, tc.wantFirst) {
					t.Errorf("upstream lines = %q, want a start of %q", tail, tc.wantFirst)
				}
				return
			}
			if diff := cmp.Diff(tc.wantTail, tail); diff != "" {
				t.Errorf("upstream lines (-want +got):\n%s", diff)
			}
		})
	}
}

// indentedRemoteAddr masks the ephemeral port of indented RemoteAddr lines.
func indentedRemoteAddr(l string) string {
	trimmed := strings.TrimLeft(l, " ")
	if strings.HasPrefix(trimmed, "RemoteAddr=127.0.0.1:") && trimmed != l {
		return l[:len(l)-len(trimmed)] + "RemoteAddr=<loopback>"
	}
	return l
}

func TestTCPEcho(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{Name: "tcp-pod", Version: "v3"})
	tests := []struct {
		name    string
		message string
	}{
		{name: "short", message: "hello"},
		{name: "empty", message: ""},
		{name: "large", message: strings.Repeat("0123456789abcdef", 16<<10)}, // 256 KiB
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", ts.tcpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			// Write concurrently: a large message fills both socket
			// buffers before the echo is read.
			werr := make(chan error, 1)
			go func() {
				_, err := io.WriteString(conn, tc.message)
				if err == nil {
					err = conn.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("writing: %v", err)
			}
			want := "ServiceVersion=v3 Hostname=tcp-pod\n" + tc.message
			if string(got) != want {
				t.Errorf("got %d bytes starting %q, want %d bytes starting %q", len(got), head(string(got)), len(want), head(want))
			}
		})
	}
}

func head(s string) string { return s[:min(len(s), 60)] }

func TestServeShutsDownCleanly(t *testing.T) {
	// Not parallel: it counts goroutines.
	before := runtime.NumGoroutine()
	srv, err := NewServer(ServerConfig{ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ls, err := ListenConfig{HTTP: "127.0.0.1:0", GRPC: "127.0.0.1:0", TCP: "127.0.0.1:0"}.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ls) }()

	// An idle TCP echo session must not hold up the shutdown beyond the
	// grace period, nor an HTTP keep-alive connection.
	idle, err := net.Dial("tcp", ls.TCP.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	c := http1Client(t)
	if status, _, _ := get(t, c, "GET", "http://"+ls.HTTP.Addr().String()+"/", nil, ""); status != 200 {
		t.Fatalf("status %d", status)
	}
	c.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after cancellation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	idle.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string
	}{
		{name: "zero value", cfg: ServerConfig{}},
		{name: "full", cfg: ServerConfig{FailRate: 0.5, FailCode: 500, Calls: []string{"http://ratings:8080/r"}}},
		{name: "fail rate above 1", cfg: ServerConfig{FailRate: 1.5}, wantErr: "fail rate 1.5: want a fraction from 0 to 1"},
		{name: "negative fail rate", cfg: ServerConfig{FailRate: -0.1}, wantErr: "fail rate -0.1: want a fraction from 0 to 1"},
		{name: "fail code", cfg: ServerConfig{FailCode: 99}, wantErr: "fail code 99: want an HTTP status from 200 to 599"},
		{name: "call without scheme", cfg: ServerConfig{Calls: []string{"ratings:8080"}}, wantErr: `upstream call "ratings:8080": want an http:// or https:// URL with a host`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			if err := tc.cfg.Validate(); err != nil {
				got = err.Error()
			}
			if got != tc.wantErr {
				t.Errorf("Validate() = %q, want %q", got, tc.wantErr)
			}
		})
	}
}
