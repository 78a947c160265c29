package authz

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// compiler compiles one rule, collecting what it could not use. An
// unusable field or condition compiles to "matches everything" (its zero
// value); the caller leaves an ALLOW rule with problems out, and keeps a
// DENY rule as compiled.
type compiler struct {
	problems []string
}

func (c *compiler) problemf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *compiler) rule(pr *routeapi.PolicyRule) rule {
	var r rule
	if pr == nil {
		c.problemf("null rule")
		return r
	}
	for j, s := range pr.GetFrom() {
		r.from = append(r.from, c.source(s, fmt.Sprintf("from[%d]", j)))
	}
	for j, o := range pr.GetTo() {
		r.to = append(r.to, c.operation(o, fmt.Sprintf("to[%d]", j)))
	}
	for j, pc := range pr.GetWhen() {
		if cond, ok := c.condition(pc, fmt.Sprintf("when[%d]", j)); ok {
			r.when = append(r.when, cond)
		}
	}
	return r
}

func (c *compiler) source(s *routeapi.PolicySource, at string) source {
	var out source
	if s == nil {
		c.problemf("%s is null", at)
		return out
	}
	out.principals = c.strings(s.GetPrincipals(), s.GetNotPrincipals(), at+".principals")
	out.namespaces = c.strings(s.GetNamespaces(), s.GetNotNamespaces(), at+".namespaces")
	out.ips = c.cidrs(s.GetIpBlocks(), s.GetNotIpBlocks(), at+".ip_blocks")
	return out
}

func (c *compiler) operation(o *routeapi.PolicyOperation, at string) operation {
	var out operation
	if o == nil {
		c.problemf("%s is null", at)
		return out
	}
	out.hosts = c.strings(o.GetHosts(), o.GetNotHosts(), at+".hosts")
	out.methods = c.strings(o.GetMethods(), o.GetNotMethods(), at+".methods")
	out.paths = c.strings(o.GetPaths(), o.GetNotPaths(), at+".paths")
	out.ports = c.ports(o.GetPorts(), o.GetNotPorts(), at+".ports")
	return out
}

// Condition keys a waypoint evaluates (policy.proto).
const (
	keyHeaderPrefix    = "request.headers["
	keySourceIP        = "source.ip"
	keySourceNamespace = "source.namespace"
	keySourcePrincipal = "source.principal"
	keyDestinationIP   = "destination.ip"
	keyDestinationPort = "destination.port"
)

// condition compiles a `when` condition; ok is false when it is unusable
// (the caller ignores it, or leaves the ALLOW rule out).
func (c *compiler) condition(pc *routeapi.PolicyCondition, at string) (cond condition, ok bool) {
	if pc == nil {
		c.problemf("%s is null", at)
		return cond, false
	}
	key, vals, notVals := pc.GetKey(), pc.GetValues(), pc.GetNotValues()
	if len(vals) == 0 && len(notVals) == 0 {
		c.problemf("%s (%s) has neither values nor not_values", at, key)
		return cond, false
	}
	before := len(c.problems)
	at += " (" + key + ")"
	switch key {
	case keySourceIP:
		cond.attr, cond.ips = attrSourceIP, c.cidrs(vals, notVals, at)
	case keyDestinationIP:
		cond.attr, cond.ips = attrDestinationIP, c.cidrs(vals, notVals, at)
	case keyDestinationPort:
		cond.attr, cond.ports = attrDestinationPort, c.portStrings(vals, notVals, at)
	case keySourceNamespace:
		cond.attr, cond.str = attrSourceNamespace, c.strings(vals, notVals, at)
	case keySourcePrincipal:
		cond.attr, cond.str = attrSourcePrincipal, c.strings(vals, notVals, at)
	default:
		name, isHeader := strings.CutPrefix(key, keyHeaderPrefix)
		name, closed := strings.CutSuffix(name, "]")
		if !isHeader || !closed || name == "" {
			c.problemf("%s: a key a waypoint does not evaluate", at)
			return cond, false
		}
		switch name = strings.ToLower(name); {
		case name == "host" || name == ":authority":
			cond.attr = attrHost
		case name == ":method":
			cond.attr = attrMethod
		case strings.HasPrefix(name, ":"):
			c.problemf("%s: pseudo-header %s is not evaluated", at, name)
			return cond, false
		default:
			cond.attr, cond.header, cond.lowerHeader = attrHeader, textproto.CanonicalMIMEHeaderKey(name), name
		}
		cond.str = c.strings(vals, notVals, at)
	}
	return cond, len(c.problems) == before
}

// strings compiles a field's values and not_values. An empty value makes
// the field unusable: it would match a missing attribute.
func (c *compiler) strings(vals, notVals []string, at string) stringField {
	var f stringField
	for _, v := range vals {
		m, ok := parseMatch(v)
		if !ok {
			c.problemf("%s: empty value", at)
			return stringField{}
		}
		f.in = append(f.in, m)
	}
	for _, v := range notVals {
		m, ok := parseMatch(v)
		if !ok {
			c.problemf("%s: empty value", at)
			return stringField{}
		}
		f.notIn = append(f.notIn, m)
	}
	return f
}

// parseMatch reads Istio's match syntax: "*" any non-empty value, "*x"
// suffix, "x*" prefix, else exact.
func parseMatch(v string) (stringMatch, bool) {
	switch {
	case v == "":
		return stringMatch{}, false
	case v == "*":
		return stringMatch{kind: matchPresent}, true
	case strings.HasPrefix(v, "*"):
		return stringMatch{kind: matchSuffix, value: v[1:]}, true
	case strings.HasSuffix(v, "*"):
		return stringMatch{kind: matchPrefix, value: v[:len(v)-1]}, true
	default:
		return stringMatch{kind: matchExact, value: v}, true
	}
}

// cidrs compiles IP ranges (CIDRs or single addresses; host bits masked).
func (c *compiler) cidrs(vals, notVals []string, at string) ipField {
	var f ipField
	for _, list := range []struct {
		vals []string
		dst  *[]netip.Prefix
	}{{vals, &f.in}, {notVals, &f.notIn}} {
		for _, v := range list.vals {
			p, err := parsePrefix(v)
			if err != nil {
				c.problemf("%s: %q is not an IP address or CIDR range", at, v)
				return ipField{}
			}
			*list.dst = append(*list.dst, p)
		}
	}
	return f
}

func parsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			// Requests are compared unmapped: read the range as IPv4.
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zone in %q", v)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ports compiles port numbers, which must fit 16 bits.
func (c *compiler) ports(vals, notVals []uint32, at string) portField {
	var f portField
	for _, list := range []struct {
		vals []uint32
		dst  *[]uint16
	}{{vals, &f.in}, {notVals, &f.notIn}} {
		for _, v := range list.vals {
			if v > 65535 {
				c.problemf("%s: %d is not a port number", at, v)
				return portField{}
			}
			*list.dst = append(*list.dst, uint16(v))
		}
	}
	return f
}

// portStrings compiles decimal port numbers (destination.port values).
func (c *compiler) portStrings(vals, notVals []string, at string) portField {
	parse := func(vs []string) ([]uint32, bool) {
		var out []uint32
		for _, v := range vs {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				c.problemf("%s: %q is not a port number", at, v)
				return nil, false
			}
			out = append(out, uint32(n))
		}
		return out, true
	}
	in, ok := parse(vals)
	notIn, notOK := parse(notVals)
	if !ok || !notOK {
		return portField{}
	}
	return c.ports(in, notIn, at)
}
