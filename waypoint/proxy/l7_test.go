package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/routeapi"
)

const (
	reviewsVIP = "10.96.0.10:80"
	v2VIP      = "10.96.0.11:80"
)

// shop is the services most tests use: reviews (backend "reviews"),
// reviews-v2 (backend "v2"), mirror (backend "mirror"), and the client's
// workload.
type shop struct {
	reviews, v2, mirror *backend
}

func (f *l7Fixture) shop(opts ...func(*backend)) *shop {
	s := &shop{
		reviews: startBackend(f.t, "reviews", opts...),
		v2:      startBackend(f.t, "v2"),
		mirror:  startBackend(f.t, "mirror"),
	}
	f.addresses(
		clientWorkload(),
		svc("reviews", "10.96.0.10", 80), endpoint("reviews-0", "reviews", 80, s.reviews.port),
		svc("reviews-v2", "10.96.0.11", 80), endpoint("reviews-v2-0", "reviews-v2", 80, s.v2.port),
		svc("mirror", "10.96.0.12", 80), endpoint("mirror-0", "mirror", 80, s.mirror.port),
	)
	return s
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestHTTPWithoutRoutes: HTTP to a service without routes is still proxied
// as HTTP, over HBONE with the waypoint's identity, to the service's
// endpoint, with the forwarding headers; it is measured and logged.
func TestHTTPWithoutRoutes(t *testing.T) {
	f := newL7(t, nil)
	f.shop()
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			c := f.client(clientID, reviewsVIP, h2)
			resp, body := do(t, c, newReq(t, "GET", "http://reviews.shop:80/a/b?q=1&x", nil))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			got := seen(t, body)
			if got.Backend != "reviews" || got.Path != "/a/b" || got.RawQuery != "q=1&x" || got.Host != "reviews.shop:80" {
				t.Errorf("backend saw %+v", got)
			}
			if xff := got.Header.Get("X-Forwarded-For"); xff != "10.244.0.10" {
				t.Errorf("x-forwarded-for %q, want the original client 10.244.0.10", xff)
			}
			if p := got.Header.Get("X-Forwarded-Proto"); p != "http" {
				t.Errorf("x-forwarded-proto %q", p)
			}
			if id := got.Header.Get("X-Request-Id"); !uuidRE.MatchString(id) {
				t.Errorf("x-request-id %q, want a generated UUID", id)
			}
			if tp := got.Header.Get("Traceparent"); !validTraceparent(tp) {
				t.Errorf("traceparent %q, want a generated one", tp)
			}
			wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			if got.Proto != wantProto {
				t.Errorf("backend spoken to with %s, want %s (the request's protocol)", got.Proto, wantProto)
			}
		})
	}
	if _, ok := f.upstreamPeers.Load(waypointID); !ok {
		t.Error("the backends' ztunnel did not see the waypoint's identity")
	}

	// A traceparent and a request id given are propagated unchanged.
	c := f.client(clientID, reviewsVIP, false)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	_, body := do(t, c, newReq(t, "GET", "http://reviews.shop/", nil, "Traceparent", tp, "X-Request-Id", "req-1", "X-Forwarded-For", "192.0.2.1"))
	got := seen(t, body)
	if got.Header.Get("Traceparent") != tp || got.Header.Get("X-Request-Id") != "req-1" {
		t.Errorf("traceparent %q, x-request-id %q: want them as sent", got.Header.Get("Traceparent"), got.Header.Get("X-Request-Id"))
	}
	if xff := got.Header.Get("X-Forwarded-For"); xff != "192.0.2.1, 10.244.0.10" {
		t.Errorf("x-forwarded-for %q, want the client appended", xff)
	}

	f.logs.waitLog(t, "request", map[string]any{
		"status": 200.0, "method": "GET", "path": "/", "requestId": "req-1", "traceparent": tp,
		"service": "reviews.shop.svc.cluster.local", "peer": clientID.String(), "flags": "-",
	})
	want := `istio_requests_total{connection_security_policy="mutual_tls",destination_canonical_revision="v1",destination_canonical_service="reviews-0",` +
		`destination_principal="spiffe://cluster.local/ns/shop/sa/reviews",destination_service="reviews.shop.svc.cluster.local",destination_service_name="reviews",` +
		`destination_service_namespace="shop",destination_workload="reviews-0",destination_workload_namespace="shop",grpc_response_status="",reporter="waypoint",` +
		`request_protocol="http",response_code="200",response_flags="-",source_canonical_revision="v1",source_canonical_service="frontend",` +
		`source_principal="spiffe://cluster.local/ns/shop/sa/frontend",source_workload="frontend",source_workload_namespace="shop"} 3`
	text := f.metricsText()
	if !strings.Contains(text, want) {
		t.Errorf("metrics lack\n%s\ngot:\n%s", want, grep(text, "istio_requests_total"))
	}
	for _, m := range []string{"istio_request_duration_milliseconds_bucket", "istio_request_bytes_bucket", "istio_response_bytes_bucket"} {
		if !strings.Contains(text, m+"{") {
			t.Errorf("metrics lack %s", m)
		}
	}
	c.CloseIdleConnections() // the client's connection (tunnel) ends
	f.logs.waitLog(t, "tunnel closed", map[string]any{"mode": "http", "status": 200.0, "dst": reviewsVIP, "requests": 1.0})
}

// TestUpstreamPooling: requests on one client connection reuse pooled
// upstream connections (HBONE tunnels), yet each request picks its own
// endpoint.
func TestUpstreamPooling(t *testing.T) {
	f := newL7(t, nil)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	f.addresses(clientWorkload(), svc("reviews", "10.96.0.10", 80),
		endpoint("reviews-a", "reviews", 80, a.port), endpoint("reviews-b", "reviews", 80, b.port))
	for _, h2 := range []bool{false, true} {
		before := f.ztDials.Load()
		c := f.client(clientID, reviewsVIP, h2)
		got := map[string]int{}
		for range 100 {
			_, body := do(t, c, newReq(t, "GET", "http://reviews.shop/", nil))
			got[seen(t, body).Backend]++
		}
		if got["a"] < 20 || got["b"] < 20 {
			t.Errorf("h2=%v: endpoints got %v, want both about half", h2, got)
		}
		if n := f.ztDials.Load() - before; n > 4 {
			t.Errorf("h2=%v: %d upstream tunnels for 100 sequential requests, want them pooled (one per endpoint)", h2, n)
		}
		c.CloseIdleConnections()
	}
}

// grep returns the lines of text containing s.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHTTPRouteRules: HTTPRoute semantics as the waypoint applies them, one
// request each.
func TestHTTPRouteRules(t *testing.T) {
	f := newL7(t, nil)
	s := f.shop()
	cors := &routeapi.CORS{AllowOrigins: []string{"https://app.example"}, AllowMethods: []string{"GET", "POST"},
		AllowHeaders: []string{"x-custom"}, ExposeHeaders: []string{"x-backend"}, MaxAgeSeconds: 10}
	f.routesOrSkip(routes("reviews", "10.96.0.10", httpPort(80, ruleSet(
		[]*routeapi.Match{prefix("/v2"), prefix("/headers"), prefix("/redirect"), prefix("/rewrite"),
			prefix("/direct"), prefix("/invalid"), prefix("/cors"), prefix("/backend-filters")},
		forward("to-v2", to("reviews-v2", 1)),
		withFilters(forward("headers", to("reviews", 1)),
			reqHeaderFilter(headerMod([][2]string{{"x-set", "set"}}, [][2]string{{"x-add", "added"}}, "x-remove")),
			respHeaderFilter(headerMod([][2]string{{"x-resp", "yes"}}, nil, "x-backend"))),
		&routeapi.Rule{Origin: &routeapi.Origin{Kind: "HTTPRoute", Name: "redirect"},
			Action: &routeapi.Rule_Redirect{Redirect: &routeapi.Redirect{Scheme: "https", Hostname: "example.com", StatusCode: 301,
				Path: &routeapi.PathModifier{Kind: &routeapi.PathModifier_FullPath{FullPath: "/elsewhere"}}}}},
		withFilters(forward("rewrite", to("reviews", 1)), &routeapi.Filter{Kind: &routeapi.Filter_UrlRewrite{UrlRewrite: &routeapi.URLRewrite{
			Hostname: "rewritten.example",
			Path:     &routeapi.PathModifier{Kind: &routeapi.PathModifier_Prefix{Prefix: &routeapi.PrefixReplacement{MatchedPrefix: "/rewrite", Replacement: "/new"}}}}}}),
		&routeapi.Rule{Origin: &routeapi.Origin{Kind: "HTTPRoute", Name: "direct"},
			Action: &routeapi.Rule_DirectResponse{DirectResponse: &routeapi.DirectResponse{Status: 500, Reason: "no backend has weight"}}},
		forward("invalid", invalid("service shop/gone not found", 1)),
		withFilters(forward("cors", to("reviews", 1)), &routeapi.Filter{Kind: &routeapi.Filter_Cors{Cors: cors}}),
		forward("backend-filters", to("reviews", 1,
			reqHeaderFilter(headerMod([][2]string{{"x-backend-req", "b"}}, nil)),
			respHeaderFilter(headerMod([][2]string{{"x-backend-resp", "b"}}, nil)))),
	))))
	c := f.client(clientID, reviewsVIP, false)

	for _, tc := range []struct {
		name    string
		method  string
		path    string
		headers []string
		status  int
		check   func(t *testing.T, resp *http.Response, body string)
	}{
		{name: "no rule matches: 404", path: "/nothing", status: 404},
		{name: "prefix routes to another service", path: "/v2/x", status: 200, check: func(t *testing.T, _ *http.Response, body string) {
			if b := seen(t, body).Backend; b != "v2" {
				t.Errorf("backend %q, want v2", b)
			}
		}},
		{name: "path normalised before matching and upstream", path: "/x/../v2/%7Ey", status: 200, check: func(t *testing.T, _ *http.Response, body string) {
			if got := seen(t, body); got.Backend != "v2" || got.Path != "/v2/~y" {
				t.Errorf("backend %q saw path %q, want v2 and /v2/~y", got.Backend, got.Path)
			}
		}},
		{name: "header modifiers", path: "/headers", headers: []string{"X-Remove", "gone", "X-Add", "first"}, status: 200,
			check: func(t *testing.T, resp *http.Response, body string) {
				h := seen(t, body).Header
				if h.Get("X-Set") != "set" || strings.Join(h.Values("X-Add"), ",") != "first,added" || h.Get("X-Remove") != "" {
					t.Errorf("request headers upstream: %v", h)
				}
				if resp.Header.Get("X-Resp") != "yes" || resp.Header.Get("X-Backend") != "" {
					t.Errorf("response headers: %v", resp.Header)
				}
			}},
		{name: "redirect", path: "/redirect/x?q=1", status: 301, check: func(t *testing.T, resp *http.Response, _ string) {
			if loc := resp.Header.Get("Location"); loc != "https://example.com/elsewhere?q=1" {
				t.Errorf("Location %q", loc)
			}
		}},
		{name: "rewrite host and prefix", path: "/rewrite/x?q=1", status: 200, check: func(t *testing.T, _ *http.Response, body string) {
			got := seen(t, body)
			if got.Host != "rewritten.example" || got.Path != "/new/x" || got.RawQuery != "q=1" {
				t.Errorf("backend saw host %q path %q query %q", got.Host, got.Path, got.RawQuery)
			}
		}},
		{name: "direct response", path: "/direct", status: 500},
		{name: "invalid backend: 500", path: "/invalid", status: 500},
		{name: "CORS preflight answered by the waypoint", method: "OPTIONS", path: "/cors",
			headers: []string{"Origin", "https://app.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "x-custom"},
			status:  204, check: func(t *testing.T, resp *http.Response, _ string) {
				if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "https://app.example" {
					t.Errorf("allow-origin %q; headers %v", o, resp.Header)
				}
				if resp.Header.Get("X-Backend") != "" {
					t.Error("a backend answered the preflight")
				}
			}},
		{name: "CORS preflight of another origin: no CORS headers", method: "OPTIONS", path: "/cors",
			headers: []string{"Origin", "https://evil.example", "Access-Control-Request-Method", "POST"},
			status:  204, check: func(t *testing.T, resp *http.Response, _ string) {
				if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "" {
					t.Errorf("allow-origin %q for a foreign origin", o)
				}
			}},
		{name: "CORS actual request", path: "/cors", headers: []string{"Origin", "https://app.example"}, status: 200,
			check: func(t *testing.T, resp *http.Response, _ string) {
				if o := resp.Header.Get("Access-Control-Allow-Origin"); o != "https://app.example" {
					t.Errorf("allow-origin %q", o)
				}
			}},
		{name: "backend-level filters", path: "/backend-filters", status: 200, check: func(t *testing.T, resp *http.Response, body string) {
			if seen(t, body).Header.Get("X-Backend-Req") != "b" || resp.Header.Get("X-Backend-Resp") != "b" {
				t.Errorf("backend filters not applied: request %v, response %v", seen(t, body).Header, resp.Header)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp, body := do(t, c, newReq(t, method, "http://reviews.shop"+tc.path, nil, tc.headers...))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.status, body)
			}
			if tc.check != nil {
				tc.check(t, resp, body)
			}
		})
	}
	f.logs.waitLog(t, "request", map[string]any{"status": 404.0, "flags": "NR", "path": "/nothing"})
	f.logs.waitLog(t, "request", map[string]any{"status": 500.0, "flags": "NC", "route": "HTTPRoute/shop/invalid#0"})
	_ = s
}

// TestHTTPWeights: a rule's backends get their share of the requests, per
// request (one keep-alive connection), and an invalid backend answers 500
// for its share.
func TestHTTPWeights(t *testing.T) {
	f := newL7(t, nil)
	f.shop()
	f.routesOrSkip(routes("reviews", "10.96.0.10", httpPort(80, ruleSet(
		[]*routeapi.Match{prefix("/weighted"), prefix("/half-invalid")},
		forward("weighted", to("reviews", 3), to("reviews-v2", 1)),
		forward("half-invalid", to("reviews", 1), invalid("no such service", 1)),
	))))
	c := f.client(clientID, reviewsVIP, false)
	count := func(path string, n int) map[string]int {
		got := map[string]int{}
		for range n {
			resp, body := do(t, c, newReq(t, "GET", "http://reviews.shop"+path, nil))
			key := fmt.Sprint(resp.StatusCode)
			if resp.StatusCode == 200 {
				key = seen(t, body).Backend
			}
			got[key]++
		}
		return got
	}
	// 400 draws at 1/4: the v2 share is within 0.15..0.35 with
	// overwhelming probability (more than 4 standard deviations).
	got := count("/weighted", 400)
	if share := float64(got["v2"]) / 400; share < 0.15 || share > 0.35 || got["reviews"]+got["v2"] != 400 {
		t.Errorf("weighted 3:1: %v (v2 share %.2f), want about 25%% v2", got, share)
	}
	got = count("/half-invalid", 200)
	if share := float64(got["500"]) / 200; share < 0.3 || share > 0.7 || got["reviews"]+got["500"] != 200 {
		t.Errorf("half invalid: %v, want about half 500", got)
	}
}

// TestHTTPMirror: a RequestMirror filter sends a copy, body included, to the
// mirror service; the client gets the primary backend's answer.
func TestHTTPMirror(t *testing.T) {
	f := newL7(t, nil)
	s := f.shop()
	f.routesOrSkip(routes("reviews", "10.96.0.10", httpPort(80, ruleSet(
		[]*routeapi.Match{prefix("/")},
		withFilters(forward("mirrored", to("reviews", 1)), mirrorTo("mirror")),
	))))
	c := f.client(clientID, reviewsVIP, false)
	resp, body := do(t, c, newReq(t, "POST", "http://reviews.shop/orders?id=7", strings.NewReader("order 7")))
	if resp.StatusCode != 200 || seen(t, body).Backend != "reviews" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	select {
	case m := <-s.mirror.seen:
		if m.Method != "POST" || m.Path != "/orders" || m.RawQuery != "id=7" || m.Body != "order 7" {
			t.Errorf("mirror got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the mirror received nothing")
	}
	waitFor(t, "mirror counted", func() bool {
		return strings.Contains(f.metricsText(), `waypoint_mirror_requests_total{result="sent"} 1`)
	})
}

// TestHTTPTimeouts: timeouts.request and timeouts.backendRequest answer 504
// when the backend is slower.
func TestHTTPTimeouts(t *testing.T) {
	f := newL7(t, nil)
	slow := startBackend(t, "slow", func(b *backend) { b.delay = 3 * time.Second })
	f.addresses(clientWorkload(), svc("slow", "10.96.0.13", 80), endpoint("slow-0", "slow", 80, slow.port))
	timeouts := func(r *routeapi.Rule, request, backend time.Duration) *routeapi.Rule {
		r.Timeouts = &routeapi.Timeouts{}
		if request > 0 {
			r.Timeouts.Request = dur(request)
		}
		if backend > 0 {
			r.Timeouts.BackendRequest = dur(backend)
		}
		return r
	}
	f.routesOrSkip(routes("slow", "10.96.0.13", httpPort(80, ruleSet(
		[]*routeapi.Match{prefix("/request"), prefix("/backend")},
		timeouts(forward("request", to("slow", 1)), 200*time.Millisecond, 0),
		timeouts(forward("backend", to("slow", 1)), 0, 200*time.Millisecond),
	))))
	c := f.client(clientID, "10.96.0.13:80", false)
	for _, path := range []string{"/request", "/backend"} {
		start := time.Now()
		resp, body := do(t, c, newReq(t, "GET", "http://slow.shop"+path, nil))
		if resp.StatusCode != 504 {
			t.Errorf("%s: status %d, want 504; body %q", path, resp.StatusCode, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: answered after %v, want about 200ms", path, d)
		}
	}
	f.logs.waitLog(t, "request", map[string]any{"status": 504.0, "flags": "UT", "path": "/backend"})
}

// TestHTTPRetry: a backend failing every other request is hidden by a retry
// on its status; a refused connection is retried; a body larger than the
// retry buffer is sent once.
func TestHTTPRetry(t *testing.T) {
	f := newL7(t, nil)
	flaky := startBackend(t, "flaky", func(b *backend) {
		b.status = func(n int64) int {
			if n%2 == 1 {
				return http.StatusServiceUnavailable
			}
			return 0
		}
	})
	down := startBackend(t, "down", func(b *backend) { b.status = func(int64) int { return http.StatusServiceUnavailable } })
	steady := startBackend(t, "steady")
	f.addresses(clientWorkload(),
		svc("flaky", "10.96.0.14", 80), endpoint("flaky-0", "flaky", 80, flaky.port),
		svc("down", "10.96.0.15", 80), endpoint("down-0", "down", 80, down.port),
		svc("steady", "10.96.0.18", 80), endpoint("steady-0", "steady", 80, steady.port))
	retry := func(r *routeapi.Rule) *routeapi.Rule {
		r.Retry = &routeapi.Retry{Attempts: 1, Codes: []uint32{503}, Backoff: dur(5 * time.Millisecond)}
		return r
	}
	f.routesOrSkip(
		routes("flaky", "10.96.0.14", httpPort(80, ruleSet(
			[]*routeapi.Match{prefix("/retry"), prefix("/once")},
			retry(forward("retry", &routeapi.Backend{Weight: 1, Target: &routeapi.Backend_Destination{Destination: dest("flaky", 80, routeapi.Protocol_PROTOCOL_HTTP)}})),
			forward("once", &routeapi.Backend{Weight: 1, Target: &routeapi.Backend_Destination{Destination: dest("flaky", 80, routeapi.Protocol_PROTOCOL_HTTP)}}),
		))),
		routes("down", "10.96.0.15", httpPort(80, ruleSet(
			[]*routeapi.Match{prefix("/")},
			retry(forward("down", &routeapi.Backend{Weight: 1, Target: &routeapi.Backend_Destination{Destination: dest("down", 80, routeapi.Protocol_PROTOCOL_HTTP)}})),
		))),
		routes("steady", "10.96.0.18", httpPort(80, ruleSet(
			[]*routeapi.Match{prefix("/")},
			retry(forward("steady", &routeapi.Backend{Weight: 1, Target: &routeapi.Backend_Destination{Destination: dest("steady", 80, routeapi.Protocol_PROTOCOL_HTTP)}})),
		))),
	)
	c := f.client(clientID, "10.96.0.14:80", false)

	// 50 % failing, one retry: every request succeeds.
	for i := range 10 {
		resp, body := do(t, c, newReq(t, "POST", "http://flaky.shop/retry", strings.NewReader("small body")))
		if resp.StatusCode != 200 || seen(t, body).Body != "small body" {
			t.Fatalf("request %d: status %d, body %q", i, resp.StatusCode, body)
		}
	}
	if n := flaky.hits.Load(); n != 20 {
		t.Errorf("backend hit %d times, want 20 (each request retried once)", n)
	}
	// Without the retry policy half of them fail.
	failed := 0
	for range 10 {
		if resp, _ := do(t, c, newReq(t, "GET", "http://flaky.shop/once", nil)); resp.StatusCode == 503 {
			failed++
		}
	}
	if failed != 5 {
		t.Errorf("%d of 10 failed without retries, want 5", failed)
	}

	// A refused connection (the ztunnel answers 503) is retried.
	f.failDials.Store(1)
	resp, body := do(t, f.client(clientID, "10.96.0.18:80", false), newReq(t, "GET", "http://steady.shop/refused", nil))
	if resp.StatusCode != 200 || f.failDials.Load() >= 0 {
		t.Errorf("after a refused connection: status %d, body %q (dial failures left %d)", resp.StatusCode, body, f.failDials.Load())
	}
	f.logs.waitLog(t, "request", map[string]any{"status": 200.0, "path": "/refused", "attempts": 2.0})

	// A body over the retry buffer goes once; the 503 is the answer.
	cd := f.client(clientID, "10.96.0.15:80", false)
	before := down.hits.Load()
	big := bytes.Repeat([]byte("x"), DefaultRetryBuffer+1)
	if resp, _ := do(t, cd, newReq(t, "POST", "http://down.shop/", bytes.NewReader(big))); resp.StatusCode != 503 {
		t.Errorf("big body: status %d, want the backend's 503", resp.StatusCode)
	}
	if n := down.hits.Load() - before; n != 1 {
		t.Errorf("big body sent %d times, want once", n)
	}
	before = down.hits.Load()
	if resp, _ := do(t, cd, newReq(t, "POST", "http://down.shop/", strings.NewReader("small"))); resp.StatusCode != 503 {
		t.Errorf("small body: status %d, want 503 after the retries", resp.StatusCode)
	}
	if n := down.hits.Load() - before; n != 2 {
		t.Errorf("small body sent %d times, want twice (one retry)", n)
	}
	f.logs.waitLog(t, "request", map[string]any{"status": 503.0, "flags": "URX", "attempts": 2.0})
	if text := f.metricsText(); !strings.Contains(text, "waypoint_upstream_retries_total 12") {
		t.Errorf("retries metric: %s", grep(text, "retries"))
	}
}

// TestHTTPConsumerRoutes: a client from a namespace with consumer routes
// uses them; other clients use the producer routes.
func TestHTTPConsumerRoutes(t *testing.T) {
	f := newL7(t, nil)
	f.shop()
	consumer := ruleSet([]*routeapi.Match{prefix("/")}, forward("consumer", to("reviews-v2", 1)))
	consumer.Namespace = "other"
	f.routesOrSkip(routes("reviews", "10.96.0.10", httpPort(80,
		ruleSet([]*routeapi.Match{prefix("/")}, forward("producer", to("reviews", 1))), consumer)))
	for _, tc := range []struct {
		id   hbone.Identity
		want string
	}{{clientID, "reviews"}, {otherID, "v2"}} {
		_, body := do(t, f.client(tc.id, reviewsVIP, false), newReq(t, "GET", "http://reviews.shop/", nil))
		if got := seen(t, body).Backend; got != tc.want {
			t.Errorf("client %s reached %s, want %s", tc.id, got, tc.want)
		}
	}
}

// TestHTTPFailures: what the waypoint answers when it cannot forward.
func TestHTTPFailures(t *testing.T) {
	f := newL7(t, func(c *dataPlaneConfig) {
		c.Limits.MaxRequestBody = 1 << 20
		c.Authorize = func(_ context.Context, r *http.Request, _ *caller) error {
			switch r.URL.Path {
			case "/boom":
				panic("test panic")
			case "/deny":
				return fmt.Errorf("denied by test policy")
			}
			return nil
		}
	})
	b := startBackend(t, "b")
	f.addresses(clientWorkload(),
		svc("empty", "10.96.0.16", 80),
		svc("imposter", "10.96.0.17", 80), endpoint("imposter-0", "imposter", 80, b.port, func(w *workloadapi.Workload) { w.ServiceAccount = "imposter" }),
		svc("reviews", "10.96.0.10", 80), endpoint("reviews-0", "reviews", 80, b.port),
	)
	for _, tc := range []struct {
		name   string
		dst    string
		req    func() *http.Request
		status int
		flag   string
	}{
		{"no endpoint", "10.96.0.16:80", func() *http.Request { return newReq(t, "GET", "http://empty.shop/", nil) }, 503, "UH"},
		{"endpoint with another identity", "10.96.0.17:80", func() *http.Request { return newReq(t, "GET", "http://imposter.shop/", nil) }, 503, "UF"},
		{"policy hook denies", reviewsVIP, func() *http.Request { return newReq(t, "GET", "http://reviews.shop/deny", nil) }, 403, "UAEX"},
		{"handler panic", reviewsVIP, func() *http.Request { return newReq(t, "GET", "http://reviews.shop/boom", nil) }, 500, "INT"},
		{"content-length over the limit", reviewsVIP, func() *http.Request {
			return newReq(t, "POST", "http://reviews.shop/", bytes.NewReader(make([]byte, 2<<20)))
		}, 413, "RTL"},
		{"streamed body over the limit", reviewsVIP, func() *http.Request {
			r := newReq(t, "POST", "http://reviews.shop/stream", io.LimitReader(zeros{}, 2<<20))
			r.ContentLength = -1
			return r
		}, 413, "RTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, f.client(clientID, tc.dst, false), tc.req())
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.status, body)
			}
			f.logs.waitLog(t, "request", map[string]any{"status": float64(tc.status), "flags": tc.flag})
		})
	}
	// The waypoint still serves after the panic.
	if resp, _ := do(t, f.client(clientID, reviewsVIP, true), newReq(t, "GET", "http://reviews.shop/", nil)); resp.StatusCode != 200 {
		t.Errorf("after a panic: %d", resp.StatusCode)
	}
	if text := f.metricsText(); !strings.Contains(text, "waypoint_panics_total 1") {
		t.Errorf("panics: %s", grep(text, "panics"))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHTTPDrain: on shutdown, a request in flight completes, idle
// keep-alive tunnels are closed, and no tunnel is left open.
func TestHTTPDrain(t *testing.T) {
	f := newL7(t, nil)
	slow := startBackend(t, "slow", func(b *backend) { b.delay = 300 * time.Millisecond })
	fast := startBackend(t, "fast")
	f.addresses(clientWorkload(),
		svc("slow", "10.96.0.13", 80), endpoint("slow-0", "slow", 80, slow.port),
		svc("reviews", "10.96.0.10", 80), endpoint("reviews-0", "reviews", 80, fast.port))
	idle := f.client(clientID, reviewsVIP, false)
	if resp, _ := do(t, idle, newReq(t, "GET", "http://reviews.shop/", nil)); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	busy := f.client(clientID, "10.96.0.13:80", true)
	done := make(chan int, 1)
	go func() {
		resp, err := busy.Get("http://slow.shop/")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitFor(t, "the slow request to reach its backend", func() bool { return slow.hits.Load() == 1 })
	f.dp.shutdown()
	if code := <-done; code != 200 {
		t.Errorf("request in flight during the shutdown: %d, want 200", code)
	}
	f.logs.waitLog(t, "tunnel closed", map[string]any{"dst": reviewsVIP, "requests": 1.0})
	waitFor(t, "every tunnel closed", func() bool { return f.dp.active.Load() == 0 })
}
