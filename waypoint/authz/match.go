package authz

import (
	"net/netip"
	"slices"
	"strings"
)

// request is a Request prepared once for matching.
type request struct {
	r          *Request
	principal  string // without "spiffe://"
	host       string // as sent
	hostNoPort string // host without its port ("" when it has none)
	path       string // without the query
	srcIP      netip.Addr
	dstIP      netip.Addr
}

func newRequest(r *Request) request {
	q := request{
		r:         r,
		principal: strings.TrimPrefix(r.SourcePrincipal, "spiffe://"),
		host:      r.Host,
		path:      r.Path,
		srcIP:     r.SourceIP.Unmap(),
		dstIP:     r.DestinationIP.Unmap(),
	}
	if i := strings.IndexByte(q.path, '?'); i >= 0 {
		q.path = q.path[:i]
	}
	q.hostNoPort = stripPort(r.Host)
	return q
}

// stripPort returns host without its ":<port>", or "" when it has none.
// An IPv6 address keeps its brackets; an unbracketed one has no port.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || i == len(host)-1 {
		return ""
	}
	for _, c := range []byte(host[i+1:]) {
		if c < '0' || c > '9' {
			return ""
		}
	}
	h := host[:i]
	if strings.HasPrefix(h, "[") != strings.HasSuffix(h, "]") || !strings.HasPrefix(h, "[") && strings.Contains(h, ":") {
		return ""
	}
	return h
}

// rule matches when one of `from` matches (or there are none), one of `to`
// does (or there are none), and every `when` does.
type rule struct {
	from []source
	to   []operation
	when []condition
}

func (ru *rule) matches(r *request) bool {
	if len(ru.to) > 0 && !anyOperation(ru.to, r) {
		return false
	}
	if len(ru.from) > 0 && !anySource(ru.from, r) {
		return false
	}
	for i := range ru.when {
		if !ru.when[i].matches(r) {
			return false
		}
	}
	return true
}

func anyOperation(os []operation, r *request) bool {
	for i := range os {
		if os[i].matches(r) {
			return true
		}
	}
	return false
}

func anySource(ss []source, r *request) bool {
	for i := range ss {
		if ss[i].matches(r) {
			return true
		}
	}
	return false
}

// source is a PolicySource: its fields ANDed.
type source struct {
	principals stringField
	namespaces stringField
	ips        ipField
}

func (s *source) matches(r *request) bool {
	return s.principals.matches(r.principal) && s.namespaces.matches(r.r.SourceNamespace) && s.ips.matches(r.srcIP)
}

// operation is a PolicyOperation: its fields ANDed.
type operation struct {
	hosts   stringField
	methods stringField
	paths   stringField
	ports   portField
}

func (o *operation) matches(r *request) bool {
	return o.ports.matches(r.r.DestinationPort) && o.methods.matches(r.r.Method) &&
		o.paths.matches(r.path) && o.hosts.matchesHost(r.host, r.hostNoPort)
}

// attribute is what a condition compares.
type attribute uint8

const (
	attrHeader attribute = iota
	attrHost
	attrMethod
	attrSourceIP
	attrSourceNamespace
	attrSourcePrincipal
	attrDestinationIP
	attrDestinationPort
)

type condition struct {
	attr        attribute
	header      string // canonical header key (attrHeader)
	lowerHeader string // lower-case header key (attrHeader)
	str         stringField
	ips         ipField
	ports       portField
}

func (c *condition) matches(r *request) bool {
	switch c.attr {
	case attrHeader:
		vs, ok := r.r.Header[c.header]
		if !ok {
			vs, ok = r.r.Header[c.lowerHeader]
		}
		if !ok {
			return c.str.matchesAbsent()
		}
		v := ""
		switch len(vs) {
		case 0:
		case 1:
			v = vs[0]
		default:
			v = strings.Join(vs, ",") // as Envoy matches a repeated header
		}
		return c.str.matchesPresent(v)
	case attrHost:
		return c.str.matchesHost(r.host, r.hostNoPort)
	case attrMethod:
		return c.str.matches(r.r.Method)
	case attrSourceNamespace:
		return c.str.matches(r.r.SourceNamespace)
	case attrSourcePrincipal:
		return c.str.matches(r.principal)
	case attrSourceIP:
		return c.ips.matches(r.srcIP)
	case attrDestinationIP:
		return c.ips.matches(r.dstIP)
	case attrDestinationPort:
		return c.ports.matches(r.r.DestinationPort)
	}
	return false
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchPresent // any non-empty value
)

type stringMatch struct {
	kind  matchKind
	value string
}

func (m stringMatch) matches(v string) bool {
	switch m.kind {
	case matchExact:
		return v == m.value
	case matchPrefix:
		return strings.HasPrefix(v, m.value)
	case matchSuffix:
		return strings.HasSuffix(v, m.value)
	default:
		return v != ""
	}
}

// matchesFold is matches, ASCII case-insensitively (hosts).
func (m stringMatch) matchesFold(v string) bool {
	n := len(m.value)
	switch m.kind {
	case matchExact:
		return strings.EqualFold(v, m.value)
	case matchPrefix:
		return len(v) >= n && strings.EqualFold(v[:n], m.value)
	case matchSuffix:
		return len(v) >= n && strings.EqualFold(v[len(v)-n:], m.value)
	default:
		return v != ""
	}
}

// stringField is a field's values (in: one must match, unless there are
// none) and not_values (notIn: none may match).
type stringField struct {
	in, notIn []stringMatch
}

func (f *stringField) matches(v string) bool {
	return (len(f.in) == 0 || anyMatch(f.in, v)) && !anyMatch(f.notIn, v)
}

func anyMatch(ms []stringMatch, v string) bool {
	for _, m := range ms {
		if m.matches(v) {
			return true
		}
	}
	return false
}

// matchesHost matches a Host case-insensitively, as sent and without its
// port: a value matches if it matches either; a not_value excludes the
// request if it matches either.
func (f *stringField) matchesHost(host, noPort string) bool {
	hit := func(ms []stringMatch) bool {
		for _, m := range ms {
			if m.matchesFold(host) || noPort != "" && m.matchesFold(noPort) {
				return true
			}
		}
		return false
	}
	return (len(f.in) == 0 || hit(f.in)) && !hit(f.notIn)
}

// matchesPresent matches a header that is present: "*" matches it even
// when its value is empty (Envoy's present_match).
func (f *stringField) matchesPresent(v string) bool {
	hit := func(ms []stringMatch) bool {
		for _, m := range ms {
			if m.kind == matchPresent || m.matches(v) {
				return true
			}
		}
		return false
	}
	return (len(f.in) == 0 || hit(f.in)) && !hit(f.notIn)
}

// matchesAbsent matches a header that is absent: no value matches it.
func (f *stringField) matchesAbsent() bool { return len(f.in) == 0 }

type ipField struct {
	in, notIn []netip.Prefix
}

func (f *ipField) matches(a netip.Addr) bool {
	return (len(f.in) == 0 || containsAddr(f.in, a)) && !containsAddr(f.notIn, a)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type portField struct {
	in, notIn []uint16
}

func (f *portField) matches(p uint16) bool {
	return (len(f.in) == 0 || slices.Contains(f.in, p)) && !slices.Contains(f.notIn, p)
}
