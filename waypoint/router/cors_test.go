package router

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// The CORS filters of the conformance test HTTPRouteCORS
// (conformance/tests/httproute-cors.yaml), as istiod-lite compiles them.
var (
	corsMultiple = &routeapi.CORS{ // /cors-1
		AllowOrigins:     []string{"https://www.foo.com", "https://*.bar.com"},
		AllowMethods:     []string{"GET", "OPTIONS"},
		AllowHeaders:     []string{"x-header-1", "x-header-2"},
		ExposeHeaders:    []string{"x-header-3", "x-header-4"},
		AllowCredentials: true,
		MaxAgeSeconds:    3600,
	}
	corsWildcardMethods = &routeapi.CORS{ // /cors-2
		AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}, MaxAgeSeconds: 5,
	}
	corsWildcardOrigin = &routeapi.CORS{ // /cors-wildcard-origin
		AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}, MaxAgeSeconds: 5,
	}
	corsWildcardCredentials = &routeapi.CORS{ // /cors-wildcard-methods-headers
		AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true, MaxAgeSeconds: 5,
	}
	corsWildcardNoCredentials = &routeapi.CORS{ // /cors-wildcard-methods-headers-unauth
		AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, MaxAgeSeconds: 5,
	}
)

func mustCORS(t *testing.T, c *routeapi.CORS) *CORS {
	t.Helper()
	out, err := compileCORS(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func preflight(origin, method, headers string) *http.Request {
	h := []string{"Origin", origin, "Access-Control-Request-Method", method}
	if headers != "" {
		h = append(h, "Access-Control-Request-Headers", headers)
	}
	return newRequest("OPTIONS", "/", h...)
}

// TestCORSPreflight replays the preflight cases of HTTPRouteCORS, choosing
// one of the answers it accepts, and the API's rules around them.
func TestCORSPreflight(t *testing.T) {
	allowedMultiple := http.Header{
		"Access-Control-Allow-Methods":     {"GET, OPTIONS"},
		"Access-Control-Allow-Headers":     {"x-header-1, x-header-2"},
		"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
		"Access-Control-Max-Age":           {"3600"},
		"Access-Control-Allow-Credentials": {"true"},
		"Vary":                             {"Origin"},
	}
	with := func(h http.Header, origin string) http.Header {
		out := h.Clone()
		out.Set("Access-Control-Allow-Origin", origin)
		return out
	}
	for _, tc := range []struct {
		name string
		cors *routeapi.CORS
		req  *http.Request
		want http.Header
	}{
		{"exact origin is allowed and echoed", corsMultiple,
			preflight("https://www.foo.com", "GET", "x-header-1, x-header-2"), with(allowedMultiple, "https://www.foo.com")},
		{"wildcard origin matches one label", corsMultiple,
			preflight("https://www.bar.com", "GET", "x-header-1, x-header-2"), with(allowedMultiple, "https://www.bar.com")},
		{"wildcard origin matches several labels", corsMultiple,
			preflight("https://xpto.www.bar.com", "GET", "x-header-1, x-header-2"), with(allowedMultiple, "https://xpto.www.bar.com")},
		{"origin is compared case-insensitively and echoed as sent", corsMultiple,
			preflight("HTTPS://WWW.Foo.com", "GET", ""), with(allowedMultiple, "HTTPS://WWW.Foo.com")},
		{"default port of the scheme is the same origin", corsMultiple,
			preflight("https://www.foo.com:443", "GET", ""), with(allowedMultiple, "https://www.foo.com:443")},
		{"non-matching origin gets no CORS headers", corsMultiple,
			preflight("https://foobar.com", "GET", ""), http.Header{"Vary": {"Origin"}}},
		{"wildcard needs a label before the domain", corsMultiple,
			preflight("https://bar.com", "GET", ""), http.Header{"Vary": {"Origin"}}},
		{"wildcard does not match a longer label", corsMultiple,
			preflight("https://foobar.com", "GET", ""), http.Header{"Vary": {"Origin"}}},
		{"scheme must match", corsMultiple,
			preflight("http://www.foo.com", "GET", ""), http.Header{"Vary": {"Origin"}}},
		{"another port is another origin", corsMultiple,
			preflight("https://www.foo.com:8443", "GET", ""), http.Header{"Vary": {"Origin"}}},
		{"wildcard methods without credentials is *", corsWildcardMethods,
			preflight("https://www.foo.com", "POST", ""), http.Header{
				"Access-Control-Allow-Origin":  {"https://www.foo.com"},
				"Access-Control-Allow-Methods": {"*"},
				"Access-Control-Max-Age":       {"5"},
				"Vary":                         {"Origin"},
			}},
		{"origin * allows any origin, port included", corsWildcardOrigin,
			preflight("https://foobar.com:12345", "PUT", ""), http.Header{
				"Access-Control-Allow-Origin":  {"https://foobar.com:12345"},
				"Access-Control-Allow-Methods": {"PUT"},
				"Access-Control-Max-Age":       {"5"},
				"Vary":                         {"Origin"},
			}},
		{"origin * does not allow the null origin", corsWildcardOrigin,
			preflight("null", "PUT", ""), http.Header{"Vary": {"Origin"}}},
		{"wildcards with credentials echo the method and headers", corsWildcardCredentials,
			preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"), http.Header{
				"Access-Control-Allow-Origin":      {"https://other.foo.com"},
				"Access-Control-Allow-Methods":     {"PUT"},
				"Access-Control-Allow-Headers":     {"x-header-1, x-header-2"},
				"Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Max-Age":           {"5"},
				"Vary":                             {"Origin"},
			}},
		{"wildcard headers with credentials and none requested: no allow-headers", corsWildcardCredentials,
			preflight("https://other.foo.com", "PUT", ""), http.Header{
				"Access-Control-Allow-Origin":      {"https://other.foo.com"},
				"Access-Control-Allow-Methods":     {"PUT"},
				"Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Max-Age":           {"5"},
				"Vary":                             {"Origin"},
			}},
		{"wildcards without credentials are * and no credentials header", corsWildcardNoCredentials,
			preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"), http.Header{
				"Access-Control-Allow-Origin":  {"https://other.foo.com"},
				"Access-Control-Allow-Methods": {"*"},
				"Access-Control-Allow-Headers": {"*"},
				"Access-Control-Max-Age":       {"5"},
				"Vary":                         {"Origin"},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if !mustCORS(t, tc.cors).Preflight(tc.req, h) {
				t.Fatal("not a preflight")
			}
			if diff := cmp.Diff(tc.want, h); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCORSIsPreflight(t *testing.T) {
	c := mustCORS(t, corsMultiple)
	for _, tc := range []struct {
		name string
		req  *http.Request
		want bool
	}{
		{"OPTIONS with Origin and Access-Control-Request-Method", preflight("https://www.foo.com", "GET", ""), true},
		{"OPTIONS without Access-Control-Request-Method", newRequest("OPTIONS", "/", "Origin", "https://www.foo.com"), false},
		{"OPTIONS without Origin", newRequest("OPTIONS", "/", "Access-Control-Request-Method", "GET"), false},
		{"GET with the CORS request headers is an actual request", newRequest("GET", "/", "Origin", "https://www.foo.com", "Access-Control-Request-Method", "GET"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if got := c.Preflight(tc.req, h); got != tc.want {
				t.Errorf("Preflight = %v, want %v", got, tc.want)
			}
			if !tc.want && len(h) != 0 {
				t.Errorf("headers written for a non-preflight: %v", h)
			}
		})
	}
	var none *CORS
	if none.Preflight(preflight("https://www.foo.com", "GET", ""), http.Header{}) {
		t.Error("a nil CORS answered a preflight")
	}
}

// TestCORSApply replays the actual-request cases of HTTPRouteCORS.
func TestCORSApply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cors     *routeapi.CORS
		origin   string
		upstream http.Header
		want     http.Header
	}{
		{"exact origin is echoed with credentials and exposed headers", corsMultiple, "https://www.foo.com", nil, http.Header{
			"Access-Control-Allow-Origin":      {"https://www.foo.com"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
			"Vary":                             {"Origin"},
		}},
		{"wildcard origin is echoed", corsMultiple, "https://www.bar.com", nil, http.Header{
			"Access-Control-Allow-Origin":      {"https://www.bar.com"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
			"Vary":                             {"Origin"},
		}},
		{"non-matching origin gets no allow-origin", corsMultiple, "https://foobar.com", nil, http.Header{"Vary": {"Origin"}}},
		{"no Origin: a same-origin request", corsMultiple, "", nil, http.Header{"Vary": {"Origin"}}},
		{"origin * with a port, no credentials", corsWildcardOrigin, "https://foobar.com:12345", nil, http.Header{
			"Access-Control-Allow-Origin": {"https://foobar.com:12345"},
			"Vary":                        {"Origin"},
		}},
		{"credentials true is sent with a wildcard origin", corsWildcardCredentials, "https://other.foo.com", nil, http.Header{
			"Access-Control-Allow-Origin":      {"https://other.foo.com"},
			"Access-Control-Allow-Credentials": {"true"},
			"Vary":                             {"Origin"},
		}},
		{"the backend's allow-origin is replaced, its Vary kept", corsWildcardNoCredentials, "https://other.foo.com", http.Header{
			"Access-Control-Allow-Origin": {"*"},
			"Vary":                        {"Accept-Encoding"},
		}, http.Header{
			"Access-Control-Allow-Origin": {"https://other.foo.com"},
			"Vary":                        {"Accept-Encoding", "Origin"},
		}},
		{"Vary: Origin is not repeated", corsWildcardNoCredentials, "https://other.foo.com", http.Header{"Vary": {"accept, origin"}}, http.Header{
			"Access-Control-Allow-Origin": {"https://other.foo.com"},
			"Vary":                        {"accept, origin"},
		}},
		{"expose * without credentials", &routeapi.CORS{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"*"}}, "https://a.example", nil, http.Header{
			"Access-Control-Allow-Origin":   {"https://a.example"},
			"Access-Control-Expose-Headers": {"*"},
			"Vary":                          {"Origin"},
		}},
		{"expose * with credentials is left out", &routeapi.CORS{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"*"}, AllowCredentials: true}, "https://a.example", nil, http.Header{
			"Access-Control-Allow-Origin":      {"https://a.example"},
			"Access-Control-Allow-Credentials": {"true"},
			"Vary":                             {"Origin"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.upstream
			if h == nil {
				h = http.Header{}
			}
			req := newRequest("GET", "/")
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			mustCORS(t, tc.cors).Apply(req, h)
			if diff := cmp.Diff(tc.want, h); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCORSOrigins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed string
		origin  string
		want    bool
	}{
		{"host wildcard with a port", "https://*.example.com:8443", "https://a.example.com:8443", true},
		{"host wildcard with another port", "https://*.example.com:8443", "https://a.example.com", false},
		{"any host of a scheme", "http://*", "http://anything.test", true},
		{"any host of a scheme, other scheme", "http://*", "https://anything.test", false},
		{"http default port", "http://a.test", "http://a.test:80", true},
		{"IPv6 origin", "http://[fd00::1]:8080", "http://[fd00::1]:8080", true},
		{"configured in upper case", "https://A.Example", "https://a.example", true},
		{"an origin with a path is not an origin", "https://a.example", "https://a.example/", false},
		{"host wildcard needs a non-empty label", "https://*.example.com", "https://.example.com", false},
		{"a wildcard sent by a client is not a host", "https://*.example.com", "https://*.example.com", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustCORS(t, &routeapi.CORS{AllowOrigins: []string{tc.allowed}})
			if got := c.allows(tc.origin); got != tc.want {
				t.Errorf("allows(%q) with %q = %v, want %v", tc.origin, tc.allowed, got, tc.want)
			}
		})
	}
}
