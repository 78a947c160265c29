package meshecho

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// roundRobin dials the given addresses in turn, whatever address it is
// asked for: a stand-in for a Service in front of two pods.
func roundRobin(addrs ...string) func(ctx context.Context, network, address string) (net.Conn, error) {
	var n atomic.Int64
	var d net.Dialer
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		i := n.Add(1) - 1
		return d.DialContext(ctx, network, addrs[int(i)%len(addrs)])
	}
}

var ignoreBody = cmpopts.IgnoreFields(Report{}, "Body")

func TestClientCountsTwoVersions(t *testing.T) {
	t.Parallel()
	a := startServer(t, ServerConfig{Name: "reviews-v1-6d4f", Version: "v1"})
	b := startServer(t, ServerConfig{Name: "reviews-v2-77aa", Version: "v2"})
	versions := map[string]int{"v1": 5, "v2": 5}
	hostnames := map[string]int{"reviews-v1-6d4f": 5, "reviews-v2-77aa": 5}
	tests := []struct {
		name  string
		url   string
		addrs []string
		want  *Report
	}{
		{
			name:  "http",
			url:   "http://reviews.demo:9080/reviews/1",
			addrs: []string{a.httpAddr, b.httpAddr},
			want:  &Report{Requests: 10, OK: 10, Status: map[int]int{200: 10}, Versions: versions, Hostnames: hostnames, ErrorMessages: map[string]int{}},
		},
		{
			name:  "h2c",
			url:   "h2c://reviews.demo:9080/reviews/1",
			addrs: []string{a.httpAddr, b.httpAddr},
			want:  &Report{Requests: 10, OK: 10, Status: map[int]int{200: 10}, Versions: versions, Hostnames: hostnames, ErrorMessages: map[string]int{}},
		},
		{
			name:  "grpc",
			url:   "grpc://reviews.demo:9090",
			addrs: []string{a.grpcAddr, b.grpcAddr},
			want:  &Report{Requests: 10, OK: 10, Status: map[int]int{0: 10}, Versions: versions, Hostnames: hostnames, ErrorMessages: map[string]int{}},
		},
		{
			name:  "tcp",
			url:   "tcp://reviews.demo:9000",
			addrs: []string{a.tcpAddr, b.tcpAddr},
			want:  &Report{Requests: 10, OK: 10, Status: map[int]int{}, Versions: versions, Hostnames: hostnames, ErrorMessages: map[string]int{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep, err := RunClient(t.Context(), ClientConfig{
				URL:              tc.url,
				Count:            10,
				Concurrency:      3,
				DisableKeepAlive: true, // one connection, so one pod, per request
				Dial:             roundRobin(tc.addrs...),
			})
			if err != nil {
				t.Fatalf("RunClient: %v", err)
			}
			if diff := cmp.Diff(tc.want, rep, ignoreBody); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
			if err := rep.Check(0); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

func TestClientConnectionReuse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scheme    string
		keepAlive bool
		wantConns int64
	}{
		{"http", true, 1},
		{"http", false, 5},
		{"h2c", true, 1},
		{"h2c", false, 5},
		{"grpc", true, 1},
		{"grpc", false, 5},
		{"tcp", true, 5}, // always a new connection
	}
	for _, tc := range tests {
		name := tc.scheme + map[bool]string{true: " keepalive", false: " new connections"}[tc.keepAlive]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, ServerConfig{})
			addr, accepted := ts.httpAddr, &ts.accepted.http
			switch tc.scheme {
			case "grpc":
				addr, accepted = ts.grpcAddr, &ts.accepted.grpc
			case "tcp":
				addr, accepted = ts.tcpAddr, &ts.accepted.tcp
			}
			rep, err := RunClient(t.Context(), ClientConfig{URL: tc.scheme + "://" + addr, Count: 5, DisableKeepAlive: !tc.keepAlive})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != 5 {
				t.Fatalf("report: %+v", rep)
			}
			if got := accepted.Load(); got != tc.wantConns {
				t.Errorf("server accepted %d connections, want %d", got, tc.wantConns)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	dead := closedAddr(t)
	ts := startServer(t, ServerConfig{})
	tests := []struct {
		name        string
		cfg         ClientConfig
		wantErrors  int
		wantStatus  map[int]int
		wantMessage string // the only error message starts with this
		wantVersion map[string]int
	}{
		{name: "http refused", cfg: ClientConfig{URL: "http://" + dead, Count: 3}, wantErrors: 3, wantStatus: map[int]int{},
			wantMessage: "dial tcp " + dead + ": connect: connection refused"},
		{name: "h2c refused", cfg: ClientConfig{URL: "h2c://" + dead, Count: 3, Concurrency: 3}, wantErrors: 3, wantStatus: map[int]int{},
			wantMessage: "dial tcp " + dead + ": connect: connection refused"},
		{name: "tcp refused", cfg: ClientConfig{URL: "tcp://" + dead, Count: 3}, wantErrors: 3, wantStatus: map[int]int{},
			wantMessage: "dial tcp " + dead + ": connect: connection refused"},
		{name: "grpc refused", cfg: ClientConfig{URL: "grpc://" + dead, Count: 3, DisableKeepAlive: true}, wantErrors: 3, wantStatus: map[int]int{14: 3},
			wantMessage: "grpc Unavailable: connection error"},
		{name: "grpc status", cfg: ClientConfig{URL: "grpc://" + ts.grpcAddr, Count: 2, Headers: []string{"x-echo-status: 5"}}, wantErrors: 2, wantStatus: map[int]int{5: 2},
			wantMessage: "grpc NotFound: meshecho: requested status NotFound", wantVersion: map[string]int{"v1": 2}},
		{name: "http timeout", cfg: ClientConfig{URL: "http://" + ts.httpAddr + "/?delay=5s", Count: 2, Timeout: 50 * time.Millisecond}, wantErrors: 2, wantStatus: map[int]int{},
			wantMessage: "timeout: context deadline exceeded"},
		{name: "tcp to an http port", cfg: ClientConfig{URL: "tcp://" + ts.httpAddr, Count: 1, Timeout: time.Second}, wantErrors: 1, wantStatus: map[int]int{},
			wantMessage: "reading banner: read tcp " + ts.httpAddr + ": i/o timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep, err := RunClient(t.Context(), tc.cfg)
			if err != nil {
				t.Fatalf("RunClient: %v", err)
			}
			if rep.Errors != tc.wantErrors || rep.OK != rep.Requests-tc.wantErrors {
				t.Errorf("requests %d, ok %d, errors %d; want %d errors", rep.Requests, rep.OK, rep.Errors, tc.wantErrors)
			}
			if diff := cmp.Diff(tc.wantStatus, rep.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantVersion, rep.Versions, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("versions (-want +got):\n%s", diff)
			}
			if len(rep.ErrorMessages) != 1 {
				t.Fatalf("error messages = %v, want one group", rep.ErrorMessages)
			}
			for msg, n := range rep.ErrorMessages {
				if !strings.HasPrefix(msg, tc.wantMessage) || n != tc.wantErrors {
					t.Errorf("error messages = %v, want %d× %q...", rep.ErrorMessages, tc.wantErrors, tc.wantMessage)
				}
			}
			if err := rep.Check(0); !errors.Is(err, ErrCheck) {
				t.Errorf("Check = %v, want ErrCheck", err)
			}
		})
	}
}

func TestClientQPS(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	start := time.Now()
	rep, err := RunClient(t.Context(), ClientConfig{URL: "http://" + ts.httpAddr, Count: 5, Concurrency: 5, QPS: 20})
	if err != nil || rep.OK != 5 {
		t.Fatalf("RunClient = %+v, %v", rep, err)
	}
	// Five starts at 20/s are four 50ms intervals apart.
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("5 requests at 20 qps took %v, want at least 200ms", elapsed)
	}
}

func TestClientStopsOnCancel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	rep, err := RunClient(ctx, ClientConfig{URL: "http://" + ts.httpAddr, Count: 1000, QPS: 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunClient error = %v, want context.DeadlineExceeded", err)
	}
	if rep == nil || rep.Requests == 0 || rep.Requests > 10 {
		t.Errorf("report = %+v, want the few requests made before the cancel", rep)
	}
}

// runCLI runs the command line and returns stdout, stderr and the error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(t.Context(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestClientCommand(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{Name: "pod-a", Version: "v1"})
	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantErr    error // nil, ErrCheck
	}{
		{
			name:       "text",
			args:       []string{"client", "-n", "4", "-c", "2", ts.url("/")},
			wantStdout: "Requests: 4  OK: 4  Errors: 0\nStatus 200: 4\nVersion v1: 4\nHostname pod-a: 4\n",
		},
		{
			name:       "flags after the URL",
			args:       []string{"client", ts.url("/?status=201"), "--concurrency", "3", "-n", "3", "--expect-status", "201"},
			wantStdout: "Requests: 3  OK: 3  Errors: 0\nStatus 201: 3\nVersion v1: 3\nHostname pod-a: 3\n",
		},
		{
			name:       "expect-status mismatch",
			args:       []string{"client", "-n", "2", "--expect-status", "200", ts.url("/?status=503")},
			wantStdout: "Requests: 2  OK: 2  Errors: 0\nStatus 503: 2\nVersion v1: 2\nHostname pod-a: 2\n",
			wantErr:    ErrCheck,
		},
		{
			name:       "transport errors",
			args:       []string{"client", "-n", "2", "http://" + closedAddr(t) + "/"},
			wantStdout: "Requests: 2  OK: 0  Errors: 2\nError dial tcp <addr>: connect: connection refused: 2\n",
			wantErr:    ErrCheck,
		},
		{
			name:       "tcp",
			args:       []string{"client", "--message", "ping", "tcp://" + ts.tcpAddr},
			wantStdout: "Requests: 1  OK: 1  Errors: 0\nVersion v1: 1\nHostname pod-a: 1\n",
		},
		{
			name:       "grpc",
			args:       []string{"client", "-n", "2", "-H", "x-test: 1", "grpc://" + ts.grpcAddr},
			wantStdout: "Requests: 2  OK: 2  Errors: 0\nStatus 0: 2\nVersion v1: 2\nHostname pod-a: 2\n",
		},
		{
			name:       "print body",
			args:       []string{"client", "--print-body", "--method", "PUT", "--body", "abc", "-H", "Host: reviews", "h2c://" + ts.httpAddr + "/p"},
			wantStdout: "ServiceVersion=v1\nHostname=pod-a\nNamespace=\nMethod=PUT\nURL=/p\nHost=reviews\nProto=HTTP/2.0\nRemoteAddr=<addr>\nRequestHeader=Accept-Encoding: gzip\nRequestHeader=Content-Length: 3\nRequestHeader=User-Agent: Go-http-client/2.0\nBodyLength=3\nStatusCode=200\n\nRequests: 1  OK: 1  Errors: 0\nStatus 200: 1\nVersion v1: 1\nHostname pod-a: 1\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCLI(t, tc.args...)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("Run = %v, want %v; stderr:\n%s", err, tc.wantErr, stderr)
			}
			if errors.Is(err, ErrUsage) {
				t.Errorf("Run = %v, a usage error", err)
			}
			if diff := cmp.Diff(tc.wantStdout, maskAddrs(stdout)); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

// maskAddrs replaces loopback addresses by <addr>.
func maskAddrs(s string) string {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\n' || r == '=' })
	for _, f := range fields {
		f = strings.TrimSuffix(f, ":")
		if strings.HasPrefix(f, "127.0.0.1:") {
			s = strings.ReplaceAll(s, f, "<addr>")
		}
	}
	return s
}

func TestClientCommandJSON(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ServerConfig{Name: "pod-j", Version: "v9"})
	stdout, stderr, err := runCLI(t, "client", "-o", "json", "-n", "3", "--print-body", ts.url("/?status=202"))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, stderr)
	}
	var got Report
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	want := Report{Requests: 3, OK: 3, Status: map[int]int{202: 3}, Versions: map[string]int{"v9": 3},
		Hostnames: map[string]int{"pod-j": 3}, ErrorMessages: map[string]int{}}
	if diff := cmp.Diff(want, got, ignoreBody); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(got.Body, "ServiceVersion=v9\n") {
		t.Errorf("body = %q, want the first reply's body", got.Body)
	}
	// Without --print-body there is no body key; the other keys are always there.
	stdout, _, _ = runCLI(t, "client", "-o", "json", "http://"+closedAddr(t))
	var keys map[string]any
	if err := json.Unmarshal([]byte(stdout), &keys); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	if diff := cmp.Diff([]string{"errorMessages", "errors", "hostnames", "ok", "requests", "status", "versions"}, names, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("JSON keys (-want +got):\n%s", diff)
	}
}
