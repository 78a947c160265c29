package router

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// The CORS header names, canonical.
const (
	hdrOrigin           = "Origin"
	hdrRequestMethod    = "Access-Control-Request-Method"
	hdrRequestHeaders   = "Access-Control-Request-Headers"
	hdrAllowOrigin      = "Access-Control-Allow-Origin"
	hdrAllowCredentials = "Access-Control-Allow-Credentials"
	hdrAllowMethods     = "Access-Control-Allow-Methods"
	hdrAllowHeaders     = "Access-Control-Allow-Headers"
	hdrExposeHeaders    = "Access-Control-Expose-Headers"
	hdrMaxAge           = "Access-Control-Max-Age"
	hdrVary             = "Vary"
)

// CORS is a compiled CORS filter.
//
// An allowed Origin is always echoed in access-control-allow-origin (never
// "*", with or without credentials), with "Vary: Origin". A wildcard in
// allowMethods or allowHeaders is answered "*" without credentials and
// with the requested method or headers with credentials; a wildcard in
// exposeHeaders is "*" without credentials and left out with credentials
// (the API forbids "*" then, and a preflight cannot know the response's
// headers).
type CORS struct {
	anyOrigin   bool
	origins     []originPattern
	credentials bool
	anyMethod   bool
	methods     string // joined with ", "; "": header left out
	anyHeader   bool
	headers     string
	anyExpose   bool
	expose      string
	maxAge      string
}

// originPattern is one allowed origin other than "*": scheme and port
// exact (the port defaults to the scheme's), the host exact, any ("*"), or
// a suffix (".example.com" from "*.example.com", at least one character
// before it).
type originPattern struct {
	scheme, host, port string
	anyHost, suffix    bool
}

// Preflight reports whether req is a CORS preflight (OPTIONS with Origin
// and Access-Control-Request-Method); if so the proxy answers it itself,
// without forwarding, with status 204 (the API allows 200 or 204; the
// conformance test HTTPRouteCORS accepts both) and the headers written into
// h: none when the origin is not allowed (besides "Vary: Origin"), so the
// browser refuses the actual request. A nil CORS has no preflights.
func (c *CORS) Preflight(req *http.Request, h http.Header) (isPreflight bool) {
	if c == nil || req.Method != http.MethodOptions {
		return false
	}
	origin, method := req.Header.Get(hdrOrigin), req.Header.Get(hdrRequestMethod)
	if origin == "" || method == "" {
		return false
	}
	addVaryOrigin(h)
	if !c.allows(origin) {
		return true
	}
	c.allowOrigin(origin, h)
	switch {
	case c.anyMethod && c.credentials:
		h.Set(hdrAllowMethods, method)
	case c.anyMethod:
		h.Set(hdrAllowMethods, "*")
	case c.methods != "":
		h.Set(hdrAllowMethods, c.methods)
	}
	switch requested := strings.Join(req.Header.Values(hdrRequestHeaders), ", "); {
	case c.anyHeader && c.credentials:
		if requested != "" {
			h.Set(hdrAllowHeaders, requested)
		}
	case c.anyHeader:
		h.Set(hdrAllowHeaders, "*")
	case c.headers != "":
		h.Set(hdrAllowHeaders, c.headers)
	}
	h.Set(hdrMaxAge, c.maxAge)
	return true
}

// Apply adds the CORS response headers for an actual (non-preflight)
// request with an allowed Origin to the response header h:
// access-control-allow-origin (replacing the backend's),
// access-control-allow-credentials and access-control-expose-headers.
// "Vary: Origin" is added whatever the origin, as the response depends on
// it. Headers the backend set are left alone when the origin is not
// allowed. A nil CORS does nothing.
func (c *CORS) Apply(req *http.Request, h http.Header) {
	if c == nil {
		return
	}
	addVaryOrigin(h)
	if origin := req.Header.Get(hdrOrigin); origin != "" && c.allows(origin) {
		c.allowOrigin(origin, h)
	}
}

// allowOrigin writes the headers of both preflight and actual responses.
func (c *CORS) allowOrigin(origin string, h http.Header) {
	h.Set(hdrAllowOrigin, origin)
	if c.credentials {
		h.Set(hdrAllowCredentials, "true")
	}
	switch {
	case c.anyExpose && !c.credentials:
		h.Set(hdrExposeHeaders, "*")
	case c.expose != "":
		h.Set(hdrExposeHeaders, c.expose)
	}
}

// addVaryOrigin adds "Origin" to h's Vary unless it is there.
func addVaryOrigin(h http.Header) {
	for _, v := range h[hdrVary] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, hdrOrigin) {
				return
			}
		}
	}
	h.Add(hdrVary, hdrOrigin)
}

// allows reports whether the Origin header value is allowed. Only a
// serialised origin scheme://host[:port] can be: "null" and other values
// never are, not even by "*".
func (c *CORS) allows(origin string) bool {
	scheme, host, port, ok := parseOrigin(origin)
	if !ok || strings.IndexByte(host, '*') >= 0 {
		return false
	}
	if c.anyOrigin {
		return true
	}
	for _, p := range c.origins {
		if p.scheme != scheme || p.port != port {
			continue
		}
		switch {
		case p.anyHost,
			p.suffix && len(host) > len(p.host) && strings.HasSuffix(host, p.host),
			!p.suffix && host == p.host:
			return true
		}
	}
	return false
}

// parseOrigin splits a serialised origin, lower case, with the port made
// explicit for http (80) and https (443). The host may be "*" or start with
// "*." (allowed origins only; a browser never sends them).
func parseOrigin(s string) (scheme, host, port string, ok bool) {
	scheme, hostport, ok := strings.Cut(s, "://")
	if !ok || scheme == "" || hostport == "" || strings.ContainsAny(hostport, "/?#@ ") {
		return "", "", "", false
	}
	scheme, hostport = strings.ToLower(scheme), strings.ToLower(hostport)
	host = hostport
	if strings.HasPrefix(hostport, "[") { // IPv6 literal
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", "", false
		}
		host, port = hostport[:end+1], hostport[end+1:]
		if port != "" && port[0] != ':' {
			return "", "", "", false
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host, port = hostport[:i], hostport[i+1:]
	}
	if host == "" || strings.IndexByte(host, ':') >= 0 && host[0] != '[' {
		return "", "", "", false
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return "", "", "", false
		}
		port = strconv.FormatUint(n, 10)
	} else {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme, host, port, true
}

func compileCORS(c *routeapi.CORS) (*CORS, error) {
	out := &CORS{credentials: c.GetAllowCredentials(), maxAge: strconv.FormatUint(uint64(c.GetMaxAgeSeconds()), 10)}
	if c.GetMaxAgeSeconds() == 0 {
		out.maxAge = "5" // the API's default
	}
	for _, o := range c.GetAllowOrigins() {
		if o == "*" {
			out.anyOrigin = true
			continue
		}
		scheme, host, port, ok := parseOrigin(o)
		if !ok || (scheme != "http" && scheme != "https") {
			return nil, fmt.Errorf("allowed origin %q is neither \"*\" nor an http or https origin", o)
		}
		p := originPattern{scheme: scheme, host: host, port: port}
		switch {
		case host == "*":
			p.anyHost, p.host = true, ""
		case strings.HasPrefix(host, "*."):
			p.suffix, p.host = true, host[1:]
		}
		if strings.IndexByte(p.host, '*') >= 0 {
			return nil, fmt.Errorf("allowed origin %q has a wildcard that is not the first label", o)
		}
		out.origins = append(out.origins, p)
	}
	var err error
	if out.anyMethod, out.methods, err = corsList(c.GetAllowMethods(), false); err != nil {
		return nil, fmt.Errorf("allowed methods: %w", err)
	}
	if out.anyHeader, out.headers, err = corsList(c.GetAllowHeaders(), true); err != nil {
		return nil, fmt.Errorf("allowed headers: %w", err)
	}
	if out.anyExpose, out.expose, err = corsList(c.GetExposeHeaders(), true); err != nil {
		return nil, fmt.Errorf("exposed headers: %w", err)
	}
	return out, nil
}

// corsList compiles a list of methods or header names: "*" anywhere makes
// it a wildcard, otherwise the names are joined with ", ".
func corsList(names []string, headers bool) (wildcard bool, joined string, err error) {
	for _, n := range names {
		if n == "*" {
			return true, "", nil
		}
		if !validToken(n) {
			return false, "", errors.New(strconv.Quote(n) + " is not a valid token")
		}
		if headers {
			n = strings.ToLower(n)
		}
		if joined != "" {
			joined += ", "
		}
		joined += n
	}
	return false, joined, nil
}
