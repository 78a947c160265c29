package router

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// RuleSet is a precedence-ordered set of matches.
type RuleSet struct {
	namespace string // client namespace of a consumer set; "" for the producer set
	matches   []match
}

// Match returns the rule of the first match that holds for r (path without
// query, method, headers, query parameters, gRPC service/method); nil: no
// match (the proxy answers 404, or gRPC UNIMPLEMENTED for gRPC requests).
//
// The path matched is the path as sent, in its escaped form
// (r.URL.EscapedPath()), as the route's values are written; it is not
// normalised (see NormalizePath). Header names are looked up by their
// canonical form (as net/http stores them), then lower case; "host" is
// r.Host. Query parameters are read from r.URL.RawQuery, only by matches
// that have query conditions.
//
// It does not allocate for paths, methods, headers with one value and
// exact values, and query parameters without escapes.
func (rs *RuleSet) Match(r *http.Request) *Rule {
	if rs == nil || r.URL == nil {
		return nil
	}
	path := r.URL.EscapedPath()
	for i := range rs.matches {
		m := &rs.matches[i]
		// Reject on the path here, without a call: most matches fail on it.
		switch m.path {
		case exactPath:
			if path != m.value {
				continue
			}
		case prefixPath:
			if !hasPathPrefix(path, m.value) {
				continue
			}
		case regexPath:
			if !strings.HasPrefix(path, m.value) || !m.re.MatchString(path) {
				continue
			}
		}
		if m.holds(r, path) {
			return m.rule
		}
	}
	return nil
}

type pathKind uint8

const (
	anyPath pathKind = iota
	exactPath
	prefixPath
	regexPath
)

// match is a compiled routeapi.Match.
type match struct {
	rule    *Rule
	path    pathKind
	value   string         // exact or prefix path; for a regex, its literal prefix
	re      *regexp.Regexp // regex path
	method  string         // "": any
	headers []headerMatch
	query   []queryMatch
	grpc    *grpcMatch
}

// holds reports whether the conditions other than the path hold.
func (m *match) holds(r *http.Request, path string) bool {
	if m.method != "" && r.Method != m.method {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].holds(r) {
			return false
		}
	}
	if m.grpc != nil && !m.grpc.holds(path) {
		return false
	}
	for i := range m.query {
		if !m.query[i].holds(r.URL.RawQuery) {
			return false
		}
	}
	return true
}

// hasPathPrefix reports whether path starts with the path elements of
// prefix: prefix "/abc" holds for "/abc", "/abc/" and "/abc/d", not for
// "/abcd". prefix never ends in "/" except "/", which holds for every path.
func hasPathPrefix(path, prefix string) bool {
	if prefix == "/" {
		return true
	}
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// stringMatch is an exact value or an anchored regular expression.
type stringMatch struct {
	exact string
	re    *regexp.Regexp // nil: exact
}

func (s *stringMatch) holds(v string) bool {
	if s.re != nil {
		return s.re.MatchString(v)
	}
	return v == s.exact
}

// holdsJoined matches the values of a repeated header joined with ",",
// without joining them for an exact value.
func (s *stringMatch) holdsJoined(vals []string) bool {
	if len(vals) == 1 {
		return s.holds(vals[0])
	}
	if s.re != nil {
		return s.re.MatchString(strings.Join(vals, ","))
	}
	rest := s.exact
	for i, v := range vals {
		if i > 0 {
			if rest == "" || rest[0] != ',' {
				return false
			}
			rest = rest[1:]
		}
		if !strings.HasPrefix(rest, v) {
			return false
		}
		rest = rest[len(v):]
	}
	return rest == ""
}

type headerMatch struct {
	key   string // canonical (textproto) form
	lower string // the name as configured, lower case
	host  bool   // the name is "host": match r.Host
	value stringMatch
}

func (h *headerMatch) holds(r *http.Request) bool {
	if h.host {
		return r.Host != "" && h.value.holds(r.Host)
	}
	vals := r.Header[h.key]
	if len(vals) == 0 {
		vals = r.Header[h.lower]
		if len(vals) == 0 {
			return false
		}
	}
	return h.value.holdsJoined(vals)
}

type queryMatch struct {
	name  string
	value stringMatch
}

func (q *queryMatch) holds(rawQuery string) bool {
	v, ok := queryValue(rawQuery, q.name)
	return ok && q.value.holds(v)
}

// queryValue is url.ParseQuery(rawQuery)[name][0] and whether it exists,
// without building the map: pairs are separated by "&", a pair with a ";"
// or with a malformed escape is skipped (as ParseQuery does), and keys and
// values are unescaped only when they hold "%" or "+". One pass over each
// pair finds all of that.
func queryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		eq, semicolon, escapedKey, escapedValue := -1, false, false, false
		i := 0
		for ; i < len(rawQuery) && rawQuery[i] != '&'; i++ {
			switch rawQuery[i] {
			case '=':
				if eq < 0 {
					eq = i
				}
			case ';':
				semicolon = true
			case '%', '+':
				if eq < 0 {
					escapedKey = true
				} else {
					escapedValue = true
				}
			}
		}
		pair := rawQuery[:i]
		rawQuery = rawQuery[min(i+1, len(rawQuery)):]
		if pair == "" || semicolon {
			continue
		}
		k, v := pair, ""
		if eq >= 0 {
			k, v = pair[:eq], pair[eq+1:]
		}
		if !escapedKey && k != name {
			continue
		}
		if escapedKey {
			var err error
			if k, err = url.QueryUnescape(k); err != nil || k != name {
				continue
			}
		}
		if !escapedValue {
			return v, true
		}
		if v, err := url.QueryUnescape(v); err == nil {
			return v, true
		}
	}
	return "", false
}

// grpcMatch matches the service and method of a gRPC path.
type grpcMatch struct {
	service, method *stringMatch // nil: any
}

func (g *grpcMatch) holds(path string) bool {
	svc, method, ok := grpcMethod(path)
	return ok && (g.service == nil || g.service.holds(svc)) && (g.method == nil || g.method.holds(method))
}

// grpcMethod splits a gRPC path "/<service>/<method>"; ok is false for
// any other path (an element missing or empty, or more elements).
func grpcMethod(path string) (service, method string, ok bool) {
	if len(path) < 4 || path[0] != '/' {
		return "", "", false
	}
	service, method, ok = strings.Cut(path[1:], "/")
	if !ok || service == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return "", "", false
	}
	return service, method, true
}
