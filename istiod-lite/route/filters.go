package route

import (
	"errors"
	"fmt"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// headerModifier compiles a RequestHeaderModifier or ResponseHeaderModifier.
// "Only one action for a given header name is permitted": a name used twice
// (case-insensitively, in any of set, add, remove) makes the filter invalid.
func headerModifier(f *gatewayv1.HTTPHeaderFilter) (*routeapi.HeaderModifier, error) {
	if f == nil {
		return nil, errors.New("the filter's configuration is missing")
	}
	out := &routeapi.HeaderModifier{}
	seen := map[string]bool{}
	name := func(n string) (string, error) {
		l := strings.ToLower(n)
		if !validHeaderName(l) {
			return "", fmt.Errorf("%q is not a valid HTTP header name", n)
		}
		if seen[l] {
			return "", fmt.Errorf("header %q has more than one action", n)
		}
		seen[l] = true
		return l, nil
	}
	for _, list := range []struct {
		in  []gatewayv1.HTTPHeader
		out *[]*routeapi.Header
	}{{f.Set, &out.Set}, {f.Add, &out.Add}} {
		for _, h := range list.in {
			n, err := name(string(h.Name))
			if err != nil {
				return nil, err
			}
			if !validHeaderValue(h.Value) {
				return nil, fmt.Errorf("the value of header %q contains control characters", h.Name)
			}
			*list.out = append(*list.out, &routeapi.Header{Name: n, Value: h.Value})
		}
	}
	for _, h := range f.Remove {
		n, err := name(h)
		if err != nil {
			return nil, err
		}
		out.Remove = append(out.Remove, n)
	}
	return out, nil
}

// validHeaderValue reports whether v can be sent as a header value: no
// control characters except horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// pathModifier compiles the path of a URLRewrite or RequestRedirect.
// ReplacePrefixMatch needs the rule's only match to be a PathPrefix (prefix).
func pathModifier(m *gatewayv1.HTTPPathModifier, prefix string, hasPrefix bool) (*routeapi.PathModifier, error) {
	if m == nil {
		return nil, nil
	}
	switch m.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil {
			return nil, errors.New("replaceFullPath is missing")
		}
		if !strings.HasPrefix(*m.ReplaceFullPath, "/") {
			return nil, fmt.Errorf("replaceFullPath %q does not start with '/'", *m.ReplaceFullPath)
		}
		return &routeapi.PathModifier{Kind: &routeapi.PathModifier_FullPath{FullPath: *m.ReplaceFullPath}}, nil
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil {
			return nil, errors.New("replacePrefixMatch is missing")
		}
		if !hasPrefix {
			return nil, errors.New("replacePrefixMatch needs exactly one match, of type PathPrefix")
		}
		repl := strings.TrimSuffix(*m.ReplacePrefixMatch, "/")
		if repl != "" && !strings.HasPrefix(repl, "/") {
			return nil, fmt.Errorf("replacePrefixMatch %q does not start with '/'", *m.ReplacePrefixMatch)
		}
		return &routeapi.PathModifier{Kind: &routeapi.PathModifier_Prefix{Prefix: &routeapi.PrefixReplacement{
			MatchedPrefix: prefix, Replacement: repl,
		}}}, nil
	}
	return nil, fmt.Errorf("unsupported path modifier type %q", m.Type)
}

func urlRewrite(f *gatewayv1.HTTPURLRewriteFilter, prefix string, hasPrefix bool) (filterTemplate, error) {
	if f == nil {
		return filterTemplate{}, errors.New("the filter's configuration is missing")
	}
	path, err := pathModifier(f.Path, prefix, hasPrefix)
	if err != nil {
		return filterTemplate{}, err
	}
	rw := &routeapi.URLRewrite{Path: path}
	if f.Hostname != nil {
		rw.Hostname = string(*f.Hostname)
	}
	return filterTemplate{static: &routeapi.Filter{Kind: &routeapi.Filter_UrlRewrite{UrlRewrite: rw}}}, nil
}

var redirectCodes = map[int]bool{301: true, 302: true, 303: true, 307: true, 308: true}

func redirect(f *gatewayv1.HTTPRequestRedirectFilter, prefix string, hasPrefix bool) (*redirectTemplate, error) {
	if f == nil {
		return nil, errors.New("the filter's configuration is missing")
	}
	rt := &redirectTemplate{status: 302}
	if f.Scheme != nil {
		if *f.Scheme != "http" && *f.Scheme != "https" {
			return nil, fmt.Errorf("unsupported scheme %q", *f.Scheme)
		}
		rt.scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rt.hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		if *f.Port < 1 || *f.Port > 65535 {
			return nil, fmt.Errorf("port %d is not between 1 and 65535", *f.Port)
		}
		rt.port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		if !redirectCodes[*f.StatusCode] {
			return nil, fmt.Errorf("unsupported status code %d", *f.StatusCode)
		}
		rt.status = uint32(*f.StatusCode)
	}
	var err error
	if rt.path, err = pathModifier(f.Path, prefix, hasPrefix); err != nil {
		return nil, err
	}
	return rt, nil
}

// mirror checks a RequestMirror filter; its backend is resolved per parent.
func mirror(f *gatewayv1.HTTPRequestMirrorFilter) (*mirrorTemplate, error) {
	if f == nil {
		return nil, errors.New("the filter's configuration is missing")
	}
	mt := &mirrorTemplate{ref: f.BackendRef, numerator: 1, denominator: 1}
	switch {
	case f.Percent != nil && f.Fraction != nil:
		return nil, errors.New("only one of percent and fraction may be set")
	case f.Percent != nil:
		if *f.Percent < 0 || *f.Percent > 100 {
			return nil, fmt.Errorf("percent %d is not between 0 and 100", *f.Percent)
		}
		mt.numerator, mt.denominator = uint32(*f.Percent), 100
	case f.Fraction != nil:
		num, den := f.Fraction.Numerator, ptrOr(f.Fraction.Denominator, 100)
		if num < 0 || den < 1 || num > den {
			return nil, fmt.Errorf("fraction %d/%d is not between 0 and 1", num, den)
		}
		mt.numerator, mt.denominator = uint32(num), uint32(den)
	}
	return mt, nil
}

// defaultCORSMaxAge is the API's default access-control-max-age, in seconds.
const defaultCORSMaxAge = 5

func corsFilter(f *gatewayv1.HTTPCORSFilter) (*routeapi.CORS, error) {
	if f == nil {
		return nil, errors.New("the filter's configuration is missing")
	}
	out := &routeapi.CORS{AllowCredentials: ptrOr(f.AllowCredentials, false), MaxAgeSeconds: defaultCORSMaxAge}
	for _, o := range f.AllowOrigins {
		if o != "*" && !strings.HasPrefix(string(o), "http://") && !strings.HasPrefix(string(o), "https://") {
			return nil, fmt.Errorf("origin %q is neither \"*\" nor an http or https origin", o)
		}
		out.AllowOrigins = append(out.AllowOrigins, string(o))
	}
	for _, m := range f.AllowMethods {
		out.AllowMethods = append(out.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		out.AllowHeaders = append(out.AllowHeaders, strings.ToLower(string(h)))
	}
	for _, h := range f.ExposeHeaders {
		out.ExposeHeaders = append(out.ExposeHeaders, strings.ToLower(string(h)))
	}
	switch {
	case f.MaxAge < 0:
		return nil, fmt.Errorf("maxAge %d is negative", f.MaxAge)
	case f.MaxAge > 0:
		out.MaxAgeSeconds = uint32(f.MaxAge)
	}
	return out, nil
}
