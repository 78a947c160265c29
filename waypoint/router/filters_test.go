package router

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// TestRewriteRequestHeaders follows the conformance test
// HTTPRouteRequestHeaderModifier: set replaces, add appends, remove
// removes; names are case-insensitive.
func TestRewriteRequestHeaders(t *testing.T) {
	r := compileOne(t, forwardRule("r", reqHeaders(
		[]*routeapi.Header{{Name: "x-header-set", Value: "set-overwrites-values"}},
		[]*routeapi.Header{{Name: "X-Header-Add", Value: "header-val-1"}, {Name: "x-header-add-append", Value: "header-val-2"}},
		"x-header-remove", "X-Header-Remove-2",
	)))
	req := newRequest("GET", "/",
		"X-Header-Set", "some-other-value", "X-Header-Set", "and-another",
		"X-Header-Add-Append", "append-val-1",
		"X-Header-Remove", "val", "X-Header-Remove-2", "val",
		"X-Untouched", "kept")
	r.RewriteRequest(req, nil)
	want := http.Header{
		"X-Header-Set":        {"set-overwrites-values"},
		"X-Header-Add":        {"header-val-1"},
		"X-Header-Add-Append": {"append-val-1", "header-val-2"},
		"X-Untouched":         {"kept"},
	}
	if diff := cmp.Diff(want, req.Header); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

// TestRewriteOrder: the rule's filters in their order, then the picked
// backend's (HTTPRouteRequestHeaderModifierBackendWeights); response
// headers likewise.
func TestRewriteOrder(t *testing.T) {
	rule := compileOne(t, &routeapi.Rule{
		Filters: []*routeapi.Filter{
			reqHeaders(hv("x-order", "rule-1"), nil),
			reqHeaders(nil, hv("x-order", "rule-2")),
			respHeaders(hv("x-resp", "rule"), nil),
		},
		Action: &routeapi.Rule_Forward{Forward: &routeapi.Forward{Backends: []*routeapi.Backend{
			backend("a", 1, reqHeaders(nil, hv("x-order", "backend")), respHeaders(nil, hv("x-resp", "backend"))),
			backend("b", 1, reqHeaders(hv("x-order", "backend-b"), nil)),
		}}},
	})
	req := newRequest("GET", "/")
	rule.RewriteRequest(req, rule.Backends[0])
	if diff := cmp.Diff([]string{"rule-1", "rule-2", "backend"}, req.Header["X-Order"]); diff != "" {
		t.Errorf("request filters of backend a (-want +got):\n%s", diff)
	}
	req = newRequest("GET", "/")
	rule.RewriteRequest(req, rule.Backends[1])
	if diff := cmp.Diff([]string{"backend-b"}, req.Header["X-Order"]); diff != "" {
		t.Errorf("request filters of backend b, set last (-want +got):\n%s", diff)
	}
	req = newRequest("GET", "/")
	rule.RewriteRequest(req, nil)
	if diff := cmp.Diff([]string{"rule-1", "rule-2"}, req.Header["X-Order"]); diff != "" {
		t.Errorf("request filters without backend (-want +got):\n%s", diff)
	}
	h := http.Header{"X-Resp": {"upstream"}}
	rule.RewriteResponse(h, rule.Backends[0])
	if diff := cmp.Diff(http.Header{"X-Resp": {"rule", "backend"}}, h); diff != "" {
		t.Errorf("response filters (-want +got):\n%s", diff)
	}
}

// TestRewriteResponseHeaders follows HTTPRouteResponseHeaderModifier.
func TestRewriteResponseHeaders(t *testing.T) {
	r := compileOne(t, forwardRule("r", respHeaders(hv("X-Header-Set", "set-overwrites-values"), hv("x-header-add", "add-appends-values"), "x-header-remove")))
	h := http.Header{"X-Header-Set": {"a", "b"}, "X-Header-Add": {"add-val-0"}, "X-Header-Remove": {"gone"}}
	r.RewriteResponse(h, nil)
	want := http.Header{"X-Header-Set": {"set-overwrites-values"}, "X-Header-Add": {"add-val-0", "add-appends-values"}}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRewriteHostHeader: "host" in a request header modifier is the
// request's Host (net/http never sends Header["Host"]).
func TestRewriteHostHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *routeapi.Filter
		want string
	}{
		{"set host sets r.Host", reqHeaders(hv("host", "other.example"), nil), "other.example"},
		{"add host sets r.Host", reqHeaders(nil, hv("Host", "added.example")), "added.example"},
		{"remove host keeps r.Host", reqHeaders(nil, nil, "host"), "echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest("GET", "/")
			compileOne(t, forwardRule("r", tc.f)).RewriteRequest(req, nil)
			if req.Host != tc.want || req.Header["Host"] != nil {
				t.Errorf("Host %q, Header[Host] %q; want %q and none", req.Host, req.Header["Host"], tc.want)
			}
		})
	}
}

// TestURLRewrite follows HTTPRouteRewritePath, HTTPRouteRewriteHost and
// routeapi.PrefixReplacement.
func TestURLRewrite(t *testing.T) {
	for _, tc := range []struct {
		name         string
		host         string
		path         *routeapi.PathModifier
		target       string
		wantHost     string
		wantURI      string // escaped path and query
		wantPathOnly string // decoded Path, when it differs from the escaped one
	}{
		{"hostname replaces the Host", "one.example.org", nil, "/x", "one.example.org", "/x", ""},
		{"no hostname keeps the Host", "", fullPath("/y"), "/x", "echo", "/y", ""},
		{"full path replaces the whole path", "", fullPath("/one"), "/full/one/two", "echo", "/one", ""},
		{"full path keeps the query", "", fullPath("/one"), "/full/one/two?a=1&b=%20", "echo", "/one?a=1&b=%20", ""},
		{"prefix is replaced element-wise", "", replacePrefix("/prefix/one", "/one"), "/prefix/one/two", "echo", "/one/two", ""},
		{"prefix replaced by / strips it", "", replacePrefix("/strip-prefix", ""), "/strip-prefix/three", "echo", "/three", ""},
		{"path equal to the prefix, empty replacement, is /", "", replacePrefix("/strip-prefix", ""), "/strip-prefix", "echo", "/", ""},
		{"path equal to the prefix becomes the replacement", "", replacePrefix("/foo", "/bar"), "/foo", "echo", "/bar", ""},
		{"trailing slash of the path is kept", "", replacePrefix("/foo", "/bar"), "/foo/", "echo", "/bar/", ""},
		{"trailing slash kept with empty replacement", "", replacePrefix("/foo", ""), "/foo/", "echo", "/", ""},
		{"prefix rewrite keeps the query", "", replacePrefix("/foo", "/bar"), "/foo/x?q=1", "echo", "/bar/x?q=1", ""},
		{"prefix / prepends the replacement", "", replacePrefix("/", "/api"), "/x/y", "echo", "/api/x/y", ""},
		{"prefix / on / is the replacement", "", replacePrefix("/", "/api"), "/", "echo", "/api", ""},
		{"replacement trailing slash is dropped", "", replacePrefix("/foo", "/bar/"), "/foo/x", "echo", "/bar/x", ""},
		{"a path without the prefix is unchanged", "", replacePrefix("/foo", "/bar"), "/foobar/x", "echo", "/foobar/x", ""},
		{"escapes in the rest of the path are kept", "", replacePrefix("/foo", "/bar"), "/foo/a%2Fb", "echo", "/bar/a%2Fb", "/bar/a/b"},
		{"escapes in a full path are kept", "", fullPath("/a%2Fb"), "/x", "echo", "/a%2Fb", "/a/b"},
		{"hostname and path together", "example.org", replacePrefix("/foo", "/bar"), "/foo/1", "example.org", "/bar/1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := compileOne(t, forwardRule("r", rewriteFilter(tc.host, tc.path)))
			req := newRequest("GET", tc.target)
			r.RewriteRequest(req, nil)
			if req.Host != tc.wantHost || req.URL.RequestURI() != tc.wantURI {
				t.Errorf("Host %q, URI %q; want %q, %q", req.Host, req.URL.RequestURI(), tc.wantHost, tc.wantURI)
			}
			if tc.wantPathOnly != "" && req.URL.Path != tc.wantPathOnly {
				t.Errorf("Path %q, want %q", req.URL.Path, tc.wantPathOnly)
			}
		})
	}
}

// TestRedirectTarget follows the mesh conformance tests HTTPRouteRedirect*
// (Host "echo", service port 80) and routeapi.Redirect.
func TestRedirectTarget(t *testing.T) {
	for _, tc := range []struct {
		name       string
		redirect   *routeapi.Redirect
		host       string // request Host; "-" for none
		target     string
		wantLoc    string
		wantStatus int
	}{
		{"port only (MeshHTTPRouteRedirectPort)", &routeapi.Redirect{Scheme: "http", Port: 8083, StatusCode: 302}, "echo", "/port", "http://echo:8083/port", 302},
		{"port and host", &routeapi.Redirect{Scheme: "http", Hostname: "example.org", Port: 8083, StatusCode: 302}, "echo", "/port-and-host", "http://example.org:8083/port-and-host", 302},
		{"port and status", &routeapi.Redirect{Scheme: "http", Port: 8083, StatusCode: 301}, "echo", "/port-and-status", "http://echo:8083/port-and-status", 301},
		{"scheme https on 443 has no port", &routeapi.Redirect{Scheme: "https", Port: 443, StatusCode: 302}, "echo", "/scheme", "https://echo/scheme", 302},
		{"scheme https, port 0 has no port", &routeapi.Redirect{Scheme: "https", StatusCode: 302}, "echo", "/scheme", "https://echo/scheme", 302},
		{"http on 80 has no port", &routeapi.Redirect{Scheme: "http", Port: 80, StatusCode: 302}, "echo", "/x", "http://echo/x", 302},
		{"https on 80 keeps the port", &routeapi.Redirect{Scheme: "https", Port: 80, StatusCode: 302}, "echo", "/x", "https://echo:80/x", 302},
		{"http on 443 keeps the port", &routeapi.Redirect{Scheme: "http", Port: 443, StatusCode: 302}, "echo", "/x", "http://echo:443/x", 302},
		{"hostname replaces the Host", &routeapi.Redirect{Scheme: "http", Hostname: "example.org", StatusCode: 302}, "echo", "/x", "http://example.org/x", 302},
		{"the request's port is dropped", &routeapi.Redirect{Scheme: "http", StatusCode: 302}, "echo:8080", "/x", "http://echo/x", 302},
		{"IPv6 Host keeps its brackets", &routeapi.Redirect{Scheme: "http", Port: 8083, StatusCode: 302}, "[fd00::1]:80", "/x", "http://[fd00::1]:8083/x", 302},
		{"no Host: the Service hostname", &routeapi.Redirect{Scheme: "http", StatusCode: 302}, "-", "/x", "http://echo.mesh.svc.cluster.local/x", 302},
		{"query is kept", &routeapi.Redirect{Scheme: "http", StatusCode: 302}, "echo", "/x?a=1&b=2", "http://echo/x?a=1&b=2", 302},
		{"status 303", &routeapi.Redirect{Scheme: "http", StatusCode: 303}, "echo", "/x", "http://echo/x", 303},
		{"status 307", &routeapi.Redirect{Scheme: "http", StatusCode: 307}, "echo", "/x", "http://echo/x", 307},
		{"status 308", &routeapi.Redirect{Scheme: "http", StatusCode: 308}, "echo", "/x", "http://echo/x", 308},
		{"prefix replacement (HTTPRouteRedirectPath)", &routeapi.Redirect{Scheme: "http", StatusCode: 302, Path: replacePrefix("/original-prefix", "/replacement-prefix")}, "echo", "/original-prefix/lemon", "http://echo/replacement-prefix/lemon", 302},
		{"prefix replacement of the whole path", &routeapi.Redirect{Scheme: "http", Hostname: "example.org", StatusCode: 302, Path: replacePrefix("/path-and-host", "/replacement-prefix")}, "echo", "/path-and-host", "http://example.org/replacement-prefix", 302},
		{"full path replacement", &routeapi.Redirect{Scheme: "http", StatusCode: 301, Path: fullPath("/replacement-full")}, "echo", "/full-path-and-status/x?q=1", "http://echo/replacement-full?q=1", 301},
		{"escaped path is sent escaped", &routeapi.Redirect{Scheme: "http", StatusCode: 302}, "echo", "/a%20b/c%2Fd", "http://echo/a%20b/c%2Fd", 302},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := compileOne(t, redirectRule(tc.redirect))
			if r.Action != Redirect || len(r.Backends) != 0 {
				t.Fatalf("action %v with %d backends", r.Action, len(r.Backends))
			}
			req := newRequest("GET", tc.target)
			req.Host = tc.host
			if tc.host == "-" {
				req.Host = ""
			}
			loc, status := r.RedirectTarget(req)
			if loc != tc.wantLoc || status != tc.wantStatus {
				t.Errorf("RedirectTarget = %q, %d; want %q, %d", loc, status, tc.wantLoc, tc.wantStatus)
			}
		})
	}
	if loc, status := compileOne(t, forwardRule("f")).RedirectTarget(newRequest("GET", "/")); loc != "" || status != 0 {
		t.Errorf("a forward rule redirects: %q %d", loc, status)
	}
}

func TestHostWithoutPort(t *testing.T) {
	for in, want := range map[string]string{
		"echo": "echo", "echo:80": "echo", "10.0.0.1:80": "10.0.0.1", "[fd00::1]:80": "[fd00::1]",
		"[fd00::1]": "[fd00::1]", "fd00::1": "fd00::1", "": "",
	} {
		if got := hostWithoutPort(in); got != want {
			t.Errorf("hostWithoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNormalizePath: RFC 3986 §6.2.2 and §5.2.4, as Istio's default.
func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"normal path unchanged", "/a/b/c", "/a/b/c"},
		{"root unchanged", "/", "/"},
		{"trailing slash kept", "/a/", "/a/"},
		{"double slash kept", "/a//b", "/a//b"},
		{"dot segment removed", "/a/./b", "/a/b"},
		{"dot-dot removes the previous segment", "/a/b/../c", "/a/c"},
		{"dot-dot above the root stops at the root", "/../../a", "/a"},
		{"trailing dot keeps a slash", "/a/b/.", "/a/b/"},
		{"trailing dot-dot keeps a slash", "/a/b/..", "/a/"},
		{"dot-dot to the root", "/a/..", "/"},
		{"dots inside a segment are not segments", "/a/.b/..c/d.", "/a/.b/..c/d."},
		{"encoded unreserved is decoded", "/%61%2D%5F%7E", "/a-_~"},
		{"encoded dots are dot segments", "/a/%2e%2E/b", "/b"},
		{"encoded slash stays encoded, hex upper-cased", "/a%2fb", "/a%2Fb"},
		{"encoded space stays encoded", "/a%20b", "/a%20b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest("GET", tc.in+"?q=1")
			changed := NormalizePath(req)
			if got := req.URL.EscapedPath(); got != tc.want || changed != (tc.in != tc.want) || req.URL.RawQuery != "q=1" {
				t.Errorf("NormalizePath(%s) = %s, changed %v, query %q; want %s", tc.in, got, changed, req.URL.RawQuery, tc.want)
			}
		})
	}
	req := newRequest("GET", "/a/b")
	if n := testing.AllocsPerRun(100, func() { NormalizePath(req) }); n != 0 {
		t.Errorf("NormalizePath of a normal path: %v allocations", n)
	}
}
