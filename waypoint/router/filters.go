package router

import (
	"net/http"
	"strings"
)

// requestFilter is a compiled RequestHeaderModifier or URLRewrite.
type requestFilter interface {
	apply(req *http.Request)
}

// RewriteRequest applies, to the request about to be sent upstream, the
// rule's request filters (RequestHeaderModifier, URLRewrite: host and path,
// keeping the query) and then b's, in order. It changes r.Header, r.Host
// and r.URL.Path / RawPath. b may be nil (redirect, direct response).
//
// A header modifier naming "host" sets r.Host (set and add alike; remove
// does nothing): net/http sends r.Host, never a Host entry of r.Header.
func (r *Rule) RewriteRequest(req *http.Request, b *Backend) {
	for _, f := range r.request {
		f.apply(req)
	}
	if b != nil {
		for _, f := range b.request {
			f.apply(req)
		}
	}
}

// RewriteResponse applies the rule's ResponseHeaderModifier filters and then
// b's to the response header h.
func (r *Rule) RewriteResponse(h http.Header, b *Backend) {
	for _, m := range r.response {
		m.apply(h)
	}
	if b != nil {
		for _, m := range b.response {
			m.apply(h)
		}
	}
}

// headerModifier is a compiled HeaderModifier: set, then add, then remove.
type headerModifier struct {
	set, add []header // canonical names
	remove   []string // canonical names
	host     string   // request modifiers: the value set or added for "host"
}

type header struct{ key, value string }

func (m *headerModifier) apply(h http.Header) {
	for _, s := range m.set {
		h[s.key] = []string{s.value}
	}
	for _, a := range m.add {
		h[a.key] = append(h[a.key], a.value)
	}
	for _, k := range m.remove {
		delete(h, k)
	}
}

// requestHeaders is a RequestHeaderModifier.
type requestHeaders struct{ *headerModifier }

func (m requestHeaders) apply(req *http.Request) {
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	m.headerModifier.apply(req.Header)
	if m.host != "" {
		req.Host = m.host
	}
}

// urlRewrite is a compiled URLRewrite.
type urlRewrite struct {
	host string        // "": unchanged
	path *pathModifier // nil: unchanged
}

func (u *urlRewrite) apply(req *http.Request) {
	if u.host != "" {
		req.Host = u.host
	}
	if u.path == nil || req.URL == nil {
		return
	}
	if u.path.full != "" {
		req.URL.Path, req.URL.RawPath = u.path.fullPath, u.path.fullRaw
		return
	}
	if p := req.URL.EscapedPath(); hasPathPrefix(p, u.path.prefix) {
		setEscapedPath(req.URL, u.path.replace(p))
	}
}

// pathModifier is a compiled PathModifier. Paths are in their escaped form,
// like the path Match sees.
type pathModifier struct {
	full              string // full replacement; "": a prefix replacement
	fullPath, fullRaw string // full as url.URL Path and RawPath
	prefix            string // matched prefix, normalised as in PathMatch.prefix
	replacement       string // without a trailing "/"
}

// apply is the path p modified; for a prefix replacement p is unchanged
// when it does not start with the matched prefix's elements.
func (m *pathModifier) apply(p string) string {
	if m.full != "" {
		return m.full
	}
	if !hasPathPrefix(p, m.prefix) {
		return p
	}
	return m.replace(p)
}

// replace replaces the matched prefix of p, which holds it, element-wise:
// with prefix "/foo", "/foo" becomes the replacement ("/" when empty),
// "/foo/bar" replacement+"/bar" and "/foo/" replacement+"/".
func (m *pathModifier) replace(p string) string {
	if p == m.prefix {
		if m.replacement == "" {
			return "/"
		}
		return m.replacement
	}
	rest := p[len(m.prefix):] // starts with "/"
	if m.prefix == "/" {
		rest = p
	}
	return m.replacement + rest
}

// redirect is a compiled Redirect.
type redirect struct {
	scheme string
	host   string // "": the request's host
	port   string // ":8080"; "": none
	path   *pathModifier
	status int
}

// RedirectTarget is, for a Redirect rule, the Location and status to answer
// req with: the rule's scheme, its hostname or else the request's Host
// without its port (the Service's hostname for a request without Host), the
// port istiod-lite derived (none for http on 80 and https on 443), the
// request path (escaped, as sent) or its replacement, and the request's
// query. "" and 0 for a rule that does not redirect.
func (r *Rule) RedirectTarget(req *http.Request) (location string, status int) {
	rd := r.redirect
	if rd == nil {
		return "", 0
	}
	host := rd.host
	if host == "" {
		host = hostWithoutPort(req.Host)
		if host == "" {
			host = r.serviceHost
		}
	}
	path, query := "/", ""
	if req.URL != nil {
		path, query = req.URL.EscapedPath(), req.URL.RawQuery
	}
	if rd.path != nil {
		path = rd.path.apply(path)
	}
	if path == "" {
		path = "/"
	}
	var b strings.Builder
	b.Grow(len(rd.scheme) + 3 + len(host) + 2 + len(rd.port) + len(path) + 1 + len(query))
	b.WriteString(rd.scheme)
	b.WriteString("://")
	if strings.IndexByte(host, ':') >= 0 && host[0] != '[' { // an IPv6 literal
		b.WriteString("[" + host + "]")
	} else {
		b.WriteString(host)
	}
	b.WriteString(rd.port)
	b.WriteString(path)
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String(), rd.status
}

// hostWithoutPort is a Host header without its port: "echo:8080" → "echo",
// "[fd00::1]:80" → "[fd00::1]". A bare IPv6 address is kept whole.
func hostWithoutPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.IndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i+1:], ':') < 0 {
		return h[:i]
	}
	return h
}
