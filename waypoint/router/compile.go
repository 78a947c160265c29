package router

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Compilation checks what routeapi.proto promises, so that the request path
// never meets a surprise: a value outside its documented range fails the
// whole resource (its last good version stays); a value the proto says is
// always set but that is zero gets the default the proto documents.

// Defaults for values routeapi.proto says are always set.
const (
	defaultRetryAttempts  = 2
	defaultRetryBackoff   = 25 * time.Millisecond
	defaultRedirectStatus = 302
	defaultRedirectScheme = "http"
)

func compileResource(name string, src *routeapi.ServiceRoutes) (*resource, error) {
	if src == nil {
		return nil, errors.New("empty resource")
	}
	if got := src.ResourceName(); got != name {
		return nil, fmt.Errorf("namespace and hostname make the name %q, not the resource's", got)
	}
	res := &resource{name: name, src: src}
	for _, a := range src.GetAddresses() {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		if addr = addr.Unmap().WithZone(""); !slices.Contains(res.addrs, addr) {
			res.addrs = append(res.addrs, addr)
		}
	}
	for _, pr := range src.GetPorts() {
		p, err := compilePort(src, pr)
		if err != nil {
			return nil, fmt.Errorf("port %d: %w", pr.GetPort(), err)
		}
		res.ports = append(res.ports, p)
	}
	slices.SortFunc(res.ports, func(a, b *Port) int { return cmp.Compare(a.Number, b.Number) })
	for i := 1; i < len(res.ports); i++ {
		if res.ports[i].Number == res.ports[i-1].Number {
			return nil, fmt.Errorf("port %d is listed twice", res.ports[i].Number)
		}
	}
	return res, nil
}

func compilePort(src *routeapi.ServiceRoutes, pr *routeapi.PortRoutes) (*Port, error) {
	if pr == nil {
		return nil, errors.New("empty port")
	}
	if pr.Port == 0 || pr.Port > 65535 {
		return nil, errors.New("not a port number")
	}
	if _, ok := routeapi.Protocol_name[int32(pr.Protocol)]; !ok {
		return nil, fmt.Errorf("unknown protocol %d", pr.Protocol)
	}
	p := &Port{
		Service: src.Name, Namespace: src.Namespace, Hostname: src.Hostname,
		Number: pr.Port, Name: pr.Name, Protocol: pr.Protocol,
	}
	var err error
	if pr.Producer != nil {
		if p.producer, err = compileRuleSet(pr.Producer, src.Hostname); err != nil {
			return nil, fmt.Errorf("producer rules: %w", err)
		}
		p.producer.namespace = ""
	}
	for _, c := range pr.Consumers {
		if c.GetNamespace() == "" {
			return nil, errors.New("consumer rules without a namespace")
		}
		rs, err := compileRuleSet(c, src.Hostname)
		if err != nil {
			return nil, fmt.Errorf("consumer rules of namespace %s: %w", c.Namespace, err)
		}
		p.consumers = append(p.consumers, rs)
	}
	slices.SortFunc(p.consumers, func(a, b *RuleSet) int { return strings.Compare(a.namespace, b.namespace) })
	for i := 1; i < len(p.consumers); i++ {
		if p.consumers[i].namespace == p.consumers[i-1].namespace {
			return nil, fmt.Errorf("two consumer rule sets for namespace %s", p.consumers[i].namespace)
		}
	}
	return p, nil
}

func compileRuleSet(rs *routeapi.RuleSet, serviceHost string) (*RuleSet, error) {
	if len(rs.Matches) == 0 {
		return nil, errors.New("no matches")
	}
	rules := make([]*Rule, len(rs.Rules))
	for i, r := range rs.Rules {
		var err error
		if rules[i], err = compileRule(r, serviceHost); err != nil {
			return nil, fmt.Errorf("rule %d (%s): %w", i, originString(r.GetOrigin()), err)
		}
	}
	out := &RuleSet{namespace: rs.Namespace, matches: make([]match, len(rs.Matches))}
	for i, m := range rs.Matches {
		if m == nil {
			return nil, fmt.Errorf("match %d is empty", i)
		}
		if int(m.Rule) >= len(rules) {
			return nil, fmt.Errorf("match %d selects rule %d of %d", i, m.Rule, len(rules))
		}
		if err := compileMatch(&out.matches[i], m); err != nil {
			return nil, fmt.Errorf("match %d (rule %s): %w", i, originString(rules[m.Rule].Origin), err)
		}
		out.matches[i].rule = rules[m.Rule]
	}
	return out, nil
}

func originString(o *routeapi.Origin) string {
	if o == nil {
		return "no origin"
	}
	s := fmt.Sprintf("%s %s/%s rule %d", o.Kind, o.Namespace, o.Name, o.RuleIndex)
	if o.RuleName != "" {
		s += " " + o.RuleName
	}
	return s
}

func compileMatch(out *match, m *routeapi.Match) error {
	var err error
	switch k := m.GetPath().GetKind().(type) {
	case nil:
		out.path = anyPath
	case *routeapi.PathMatch_Exact:
		if !strings.HasPrefix(k.Exact, "/") {
			return fmt.Errorf("exact path %q does not start with '/'", k.Exact)
		}
		out.path, out.value = exactPath, k.Exact
	case *routeapi.PathMatch_Prefix:
		if !strings.HasPrefix(k.Prefix, "/") {
			return fmt.Errorf("path prefix %q does not start with '/'", k.Prefix)
		}
		out.path, out.value = prefixPath, trimSlash(k.Prefix)
	case *routeapi.PathMatch_Regex:
		// Every match starts with the literal prefix of the expression:
		// Match checks it first, which spares the regexp most paths.
		if out.re, out.value, err = compileRegexPrefix(k.Regex); err != nil {
			return fmt.Errorf("path: %w", err)
		}
		out.path = regexPath
	}
	if m.Method != "" && !httpguts.ValidHeaderFieldName(m.Method) {
		return fmt.Errorf("method %q is not a token", m.Method)
	}
	out.method = m.Method
	for _, h := range m.Headers {
		name := strings.ToLower(h.GetName())
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("%q is not a header name", h.GetName())
		}
		hm := headerMatch{key: textproto.CanonicalMIMEHeaderKey(name), lower: name, host: name == "host"}
		if hm.value, err = compileStringMatch(h.Value); err != nil {
			return fmt.Errorf("header %s: %w", name, err)
		}
		out.headers = append(out.headers, hm)
	}
	for _, q := range m.QueryParams {
		if q.GetName() == "" {
			return errors.New("query parameter without a name")
		}
		qm := queryMatch{name: q.Name}
		if qm.value, err = compileStringMatch(q.Value); err != nil {
			return fmt.Errorf("query parameter %s: %w", q.Name, err)
		}
		out.query = append(out.query, qm)
	}
	if g := m.GrpcMethod; g != nil {
		out.grpc = &grpcMatch{}
		for _, part := range []struct {
			in   *routeapi.StringMatch
			out  **stringMatch
			what string
		}{{g.Service, &out.grpc.service, "gRPC service"}, {g.Method, &out.grpc.method, "gRPC method"}} {
			if part.in == nil {
				continue
			}
			sm, err := compileStringMatch(part.in)
			if err != nil {
				return fmt.Errorf("%s: %w", part.what, err)
			}
			*part.out = &sm
		}
	}
	return nil
}

func compileStringMatch(sm *routeapi.StringMatch) (stringMatch, error) {
	switch k := sm.GetKind().(type) {
	case *routeapi.StringMatch_Exact:
		return stringMatch{exact: k.Exact}, nil
	case *routeapi.StringMatch_Regex:
		re, err := compileRegex(k.Regex)
		return stringMatch{re: re}, err
	}
	return stringMatch{}, errors.New("no value to match")
}

// compileRegex compiles re to match whole values: ^(?:re)$. re is compiled
// alone first: a valid expression has balanced groups, so the anchors
// cannot change its meaning (as they would for "a)|(b").
func compileRegex(re string) (*regexp.Regexp, error) {
	anchored, _, err := compileRegexPrefix(re)
	return anchored, err
}

// compileRegexPrefix is compileRegex that also returns the literal string
// every match of re starts with ("" when there is none, and for
// case-insensitive expressions).
func compileRegexPrefix(re string) (anchored *regexp.Regexp, prefix string, err error) {
	alone, err := regexp.Compile(re)
	if err != nil {
		return nil, "", err
	}
	prefix, _ = alone.LiteralPrefix()
	anchored, err = regexp.Compile("^(?:" + re + ")$")
	return anchored, prefix, err
}

// trimSlash drops the trailing "/" of a path prefix, except of "/".
func trimSlash(p string) string {
	if t := strings.TrimRight(p, "/"); t != "" {
		return t
	}
	return "/"
}

func compileRule(r *routeapi.Rule, serviceHost string) (*Rule, error) {
	if r == nil {
		return nil, errors.New("empty rule")
	}
	rule := &Rule{Origin: r.Origin, serviceHost: serviceHost}
	f, err := compileFilters(r.Filters, false)
	if err != nil {
		return nil, err
	}
	rule.request, rule.response, rule.Mirrors, rule.CORS = f.request, f.response, f.mirrors, f.cors
	switch a := r.Action.(type) {
	case *routeapi.Rule_Forward:
		rule.Action = Forward
		if len(a.Forward.GetBackends()) == 0 {
			return nil, errors.New("forward without backends")
		}
		for i, b := range a.Forward.Backends {
			be, err := compileBackend(b)
			if err != nil {
				return nil, fmt.Errorf("backend %d: %w", i, err)
			}
			rule.Backends = append(rule.Backends, be)
			rule.totalWeight += uint64(be.Weight)
		}
	case *routeapi.Rule_Redirect:
		rule.Action = Redirect
		if rule.redirect, err = compileRedirect(a.Redirect); err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
	case *routeapi.Rule_DirectResponse:
		rule.Action = DirectResponse
		rule.DirectStatus, rule.DirectReason = int(a.DirectResponse.GetStatus()), a.DirectResponse.GetReason()
		if rule.DirectStatus < 200 || rule.DirectStatus > 599 {
			return nil, fmt.Errorf("direct response status %d is not between 200 and 599", rule.DirectStatus)
		}
	default:
		return nil, errors.New("no action")
	}
	if t := r.Timeouts; t != nil {
		if rule.RequestTimeout, err = duration(t.Request); err != nil {
			return nil, fmt.Errorf("request timeout: %w", err)
		}
		if rule.BackendTimeout, err = duration(t.BackendRequest); err != nil {
			return nil, fmt.Errorf("backend request timeout: %w", err)
		}
		if rule.RequestTimeout > 0 && rule.BackendTimeout > rule.RequestTimeout {
			return nil, fmt.Errorf("backend request timeout %s is longer than the request timeout %s", rule.BackendTimeout, rule.RequestTimeout)
		}
	}
	if rt := r.Retry; rt != nil {
		if rule.Retry, err = compileRetry(rt); err != nil {
			return nil, fmt.Errorf("retry: %w", err)
		}
	}
	return rule, nil
}

func compileRetry(rt *routeapi.Retry) (*Retry, error) {
	out := &Retry{Attempts: int(rt.Attempts), Backoff: defaultRetryBackoff}
	if out.Attempts == 0 {
		out.Attempts = defaultRetryAttempts
	}
	for _, c := range rt.Codes {
		if c < 400 || c > 599 {
			return nil, fmt.Errorf("status %d is not between 400 and 599", c)
		}
		out.Codes = append(out.Codes, int(c))
	}
	slices.Sort(out.Codes)
	out.Codes = slices.Compact(out.Codes)
	if rt.Backoff != nil {
		var err error
		if out.Backoff, err = duration(rt.Backoff); err != nil {
			return nil, fmt.Errorf("backoff: %w", err)
		}
	}
	return out, nil
}

// duration converts a protobuf Duration; nil is 0.
func duration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	if v := d.AsDuration(); v >= 0 {
		return v, nil
	}
	return 0, fmt.Errorf("%s is negative", d.AsDuration())
}

func compileBackend(b *routeapi.Backend) (*Backend, error) {
	if b == nil {
		return nil, errors.New("empty backend")
	}
	if b.Weight == 0 {
		return nil, errors.New("weight 0")
	}
	be := &Backend{Weight: b.Weight}
	switch t := b.Target.(type) {
	case *routeapi.Backend_Destination:
		if err := checkDestination(t.Destination); err != nil {
			return nil, err
		}
		be.Destination = t.Destination
	case *routeapi.Backend_Invalid:
		be.Invalid = cmp.Or(t.Invalid, "backendRef not resolved")
	default:
		return nil, errors.New("neither a destination nor invalid")
	}
	f, err := compileFilters(b.Filters, true)
	if err != nil {
		return nil, err
	}
	be.request, be.response, be.Mirrors = f.request, f.response, f.mirrors
	return be, nil
}

func checkDestination(d *routeapi.Destination) error {
	switch {
	case d == nil:
		return errors.New("empty destination")
	case d.Hostname == "":
		return errors.New("destination without hostname")
	case d.Port == 0 || d.Port > 65535:
		return fmt.Errorf("destination %s: port %d is not a port number", d.Hostname, d.Port)
	}
	return nil
}

// filters is a compiled list of Filter, split by what they act on.
type filters struct {
	request  []requestFilter
	response []*headerModifier
	mirrors  []Mirror
	cors     *CORS
}

func compileFilters(in []*routeapi.Filter, backend bool) (filters, error) {
	var out filters
	for i, f := range in {
		var err error
		switch k := f.GetKind().(type) {
		case *routeapi.Filter_RequestHeaderModifier:
			var m *headerModifier
			if m, err = compileHeaderModifier(k.RequestHeaderModifier, true); err == nil {
				out.request = append(out.request, requestHeaders{m})
			}
		case *routeapi.Filter_ResponseHeaderModifier:
			var m *headerModifier
			if m, err = compileHeaderModifier(k.ResponseHeaderModifier, false); err == nil {
				out.response = append(out.response, m)
			}
		case *routeapi.Filter_RequestMirror:
			m := k.RequestMirror
			switch {
			case m == nil:
				err = errors.New("empty mirror")
			case m.Denominator == 0 || m.Numerator > m.Denominator:
				err = fmt.Errorf("mirror fraction %d/%d is not between 0 and 1", m.Numerator, m.Denominator)
			default:
				err = checkDestination(m.Destination)
			}
			if err == nil {
				out.mirrors = append(out.mirrors, Mirror{Destination: m.Destination, Numerator: m.Numerator, Denominator: m.Denominator})
			}
		case *routeapi.Filter_UrlRewrite:
			var rw *urlRewrite
			if rw, err = compileURLRewrite(k.UrlRewrite); err == nil {
				out.request = append(out.request, rw)
			}
		case *routeapi.Filter_Cors:
			switch {
			case backend:
				err = errors.New("CORS on a backend")
			case out.cors != nil:
				err = errors.New("a second CORS filter")
			case k.Cors == nil:
				err = errors.New("empty CORS filter")
			default:
				out.cors, err = compileCORS(k.Cors)
			}
		default:
			err = errors.New("no filter")
		}
		if err != nil {
			return filters{}, fmt.Errorf("filter %d: %w", i, err)
		}
	}
	return out, nil
}

// compileHeaderModifier compiles names to their canonical form; for a
// request, "host" becomes the modifier's host.
func compileHeaderModifier(m *routeapi.HeaderModifier, request bool) (*headerModifier, error) {
	if m == nil {
		return nil, errors.New("empty header modifier")
	}
	out := &headerModifier{}
	name := func(n string) (string, error) {
		l := strings.ToLower(n)
		if !httpguts.ValidHeaderFieldName(l) {
			return "", fmt.Errorf("%q is not a header name", n)
		}
		return l, nil
	}
	for _, list := range []struct {
		in  []*routeapi.Header
		out *[]header
	}{{m.Set, &out.set}, {m.Add, &out.add}} {
		for _, h := range list.in {
			n, err := name(h.GetName())
			if err != nil {
				return nil, err
			}
			if !httpguts.ValidHeaderFieldValue(h.GetValue()) {
				return nil, fmt.Errorf("the value of header %s is not a valid header value", n)
			}
			if request && n == "host" {
				if !httpguts.ValidHostHeader(h.Value) || h.Value == "" {
					return nil, fmt.Errorf("%q is not a valid host", h.Value)
				}
				out.host = h.Value
				continue
			}
			*list.out = append(*list.out, header{key: textproto.CanonicalMIMEHeaderKey(n), value: h.GetValue()})
		}
	}
	for _, r := range m.Remove {
		n, err := name(r)
		if err != nil {
			return nil, err
		}
		if request && n == "host" {
			continue // a request keeps its Host
		}
		out.remove = append(out.remove, textproto.CanonicalMIMEHeaderKey(n))
	}
	return out, nil
}

func compileURLRewrite(rw *routeapi.URLRewrite) (*urlRewrite, error) {
	if rw == nil {
		return nil, errors.New("empty URL rewrite")
	}
	if rw.Hostname != "" && !httpguts.ValidHostHeader(rw.Hostname) {
		return nil, fmt.Errorf("%q is not a valid host", rw.Hostname)
	}
	out := &urlRewrite{host: rw.Hostname}
	var err error
	if out.path, err = compilePathModifier(rw.Path); err != nil {
		return nil, err
	}
	return out, nil
}

func compilePathModifier(pm *routeapi.PathModifier) (*pathModifier, error) {
	if pm == nil {
		return nil, nil
	}
	valid := func(p string) error {
		if _, err := url.PathUnescape(p); err != nil || strings.ContainsAny(p, "?# ") {
			return fmt.Errorf("%q is not a valid escaped path", p)
		}
		return nil
	}
	switch k := pm.Kind.(type) {
	case *routeapi.PathModifier_FullPath:
		if !strings.HasPrefix(k.FullPath, "/") {
			return nil, fmt.Errorf("full path %q does not start with '/'", k.FullPath)
		}
		if err := valid(k.FullPath); err != nil {
			return nil, err
		}
		var u url.URL
		setEscapedPath(&u, k.FullPath)
		return &pathModifier{full: k.FullPath, fullPath: u.Path, fullRaw: u.RawPath}, nil
	case *routeapi.PathModifier_Prefix:
		prefix, repl := k.Prefix.GetMatchedPrefix(), k.Prefix.GetReplacement()
		if !strings.HasPrefix(prefix, "/") {
			return nil, fmt.Errorf("matched prefix %q does not start with '/'", prefix)
		}
		if repl != "" && !strings.HasPrefix(repl, "/") {
			return nil, fmt.Errorf("prefix replacement %q does not start with '/'", repl)
		}
		for _, p := range []string{prefix, repl} {
			if err := valid(p); err != nil {
				return nil, err
			}
		}
		return &pathModifier{prefix: trimSlash(prefix), replacement: strings.TrimRight(repl, "/")}, nil
	}
	return nil, errors.New("empty path modifier")
}

var redirectStatuses = []uint32{301, 302, 303, 307, 308}

func compileRedirect(rd *routeapi.Redirect) (*redirect, error) {
	if rd == nil {
		return nil, errors.New("empty redirect")
	}
	out := &redirect{scheme: strings.ToLower(cmp.Or(rd.Scheme, defaultRedirectScheme)), host: rd.Hostname, status: defaultRedirectStatus}
	if out.scheme != "http" && out.scheme != "https" {
		return nil, fmt.Errorf("scheme %q is neither http nor https", rd.Scheme)
	}
	if rd.Hostname != "" && (!httpguts.ValidHostHeader(rd.Hostname) || strings.ContainsAny(rd.Hostname, ":[]")) {
		return nil, fmt.Errorf("%q is not a hostname", rd.Hostname)
	}
	switch {
	case rd.Port > 65535:
		return nil, fmt.Errorf("port %d is not a port number", rd.Port)
	case rd.Port == 0, rd.Port == 80 && out.scheme == "http", rd.Port == 443 && out.scheme == "https":
		// no port in the Location
	default:
		out.port = ":" + strconv.FormatUint(uint64(rd.Port), 10)
	}
	if rd.StatusCode != 0 {
		if !slices.Contains(redirectStatuses, rd.StatusCode) {
			return nil, fmt.Errorf("status %d is not a redirect status", rd.StatusCode)
		}
		out.status = int(rd.StatusCode)
	}
	var err error
	if out.path, err = compilePathModifier(rd.Path); err != nil {
		return nil, err
	}
	return out, nil
}

// validToken reports whether s is an RFC 9110 token (a method or header name).
func validToken(s string) bool { return httpguts.ValidHeaderFieldName(s) }
