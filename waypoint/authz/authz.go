// Package authz is the waypoint's L7 authorization decision: the
// AuthorizationPolicies that istiod-lite compiles for waypoints
// (internal/routeapi.WaypointPolicy, policy.proto) turned into an immutable
// Policies value that answers, for one HTTP request, whether it may pass
// and which policy decided. It performs no I/O: the proxy reads the
// request, denies it with 403 (gRPC: PERMISSION_DENIED) and logs the
// deciding policy.
//
// Istio's semantics: of the policies that apply to a request (those whose
// targets name the waypoint's Gateway or the Service the request was sent
// to), a matching DENY policy denies it; else, if any ALLOW policy applies,
// one of them must match; else it is allowed. README.md lists the
// matching rules and the choices made.
package authz

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Policies is a compiled set of WaypointPolicy resources, indexed by
// target. It is immutable and safe for concurrent use; a config change
// compiles a new one, which the proxy swaps in atomically. A nil *Policies
// has no policies: it allows everything.
type Policies struct {
	byGateway map[gatewayKey]*applicable
	byService map[string]*applicable
	names     []string // every policy, sorted
}

type gatewayKey struct{ namespace, name string }

// applicable are the policies of one target, each list sorted by name.
type applicable struct {
	deny, allow []*policy
}

// Request is what Check needs to know about one HTTP request. The zero
// value of a field means "unknown" or "absent": it matches no value of a
// policy, only the not_ forms.
type Request struct {
	// GatewayNamespace and GatewayName name the waypoint's own Gateway:
	// policies that target it apply to every request the waypoint handles.
	GatewayNamespace, GatewayName string
	// ServiceHostname is the hostname ("<name>.<namespace>.svc.<domain>",
	// lower case) of the Service the client addressed (the tunnel's
	// :authority VIP); policies that target it apply. Empty when the
	// destination is not a Service.
	ServiceHostname string
	// SourcePrincipal is the client's SPIFFE identity from its certificate,
	// "spiffe://<trust domain>/ns/<namespace>/sa/<service account>" (the
	// "spiffe://" may be left out); empty when the client has none.
	SourcePrincipal string
	// SourceNamespace is the namespace in SourcePrincipal; empty when
	// there is none.
	SourceNamespace string
	// SourceIP is the original client's address (from the tunnel's
	// forwarded header), not the peer that opened the tunnel.
	SourceIP netip.Addr
	// DestinationIP and DestinationPort are what the client addressed: the
	// tunnel's :authority (a service VIP and port).
	DestinationIP   netip.Addr
	DestinationPort uint16
	// Method is the HTTP method, compared case-sensitively.
	Method string
	// Host is the request's Host (:authority), with or without a port.
	Host string
	// Path is the request path in its escaped form without the query
	// string (anything from a '?' on is ignored), as the proxy routes and
	// forwards it: normalise it first (waypoint/router.NormalizePath), or
	// "/a/../admin" will not match a policy on "/admin".
	Path string
	// Header holds the request headers, keys canonical as net/http stores
	// them (a lower-case key is found too). Host and pseudo-headers are
	// not read from it.
	Header http.Header
}

// Check decides r: allowed, and the deciding policy "<namespace>/<name>"
// for logs. The policy is the DENY policy that matched (denied), or the
// ALLOW policy that matched (allowed); it is empty when no policy applies
// (allowed) and when ALLOW policies apply but none matched (denied).
// Check does not allocate, except to join a header that has several
// values.
func (p *Policies) Check(r Request) (allowed bool, policy string) {
	if p == nil {
		return true, ""
	}
	gw := p.byGateway[gatewayKey{r.GatewayNamespace, r.GatewayName}]
	var svc *applicable
	if r.ServiceHostname != "" {
		svc = p.byService[r.ServiceHostname]
	}
	if gw == nil && svc == nil {
		return true, ""
	}
	if gw == nil {
		gw = &noPolicies
	}
	if svc == nil {
		svc = &noPolicies
	}
	req := newRequest(&r)
	if pol := firstMatch(gw.deny, svc.deny, &req); pol != nil {
		return false, pol.name
	}
	if len(gw.allow) == 0 && len(svc.allow) == 0 {
		return true, ""
	}
	if pol := firstMatch(gw.allow, svc.allow, &req); pol != nil {
		return true, pol.name
	}
	return false, ""
}

var noPolicies applicable

// firstMatch returns the first policy by name, of a and b together (both
// sorted by name; a policy targeting both is in both), that matches r.
func firstMatch(a, b []*policy, r *request) *policy {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var p *policy
		switch {
		case j == len(b) || i < len(a) && a[i].name <= b[j].name:
			p = a[i]
			i++
			if j < len(b) && b[j] == p {
				j++ // the same policy through its other target
			}
		default:
			p = b[j]
			j++
		}
		if p.matches(r) {
			return p
		}
	}
	return nil
}

// Len is the number of policies compiled in.
func (p *Policies) Len() int {
	if p == nil {
		return 0
	}
	return len(p.names)
}

// Names are the compiled policies' names ("<namespace>/<name>"), sorted.
func (p *Policies) Names() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.names)
}

// Error is a WaypointPolicy that could not be used as written. The policy
// is still applied in a form that never weakens it (see Compile), unless
// Reasons says it was left out.
type Error struct {
	// Policy is the resource name, "<namespace>/<name>".
	Policy  string
	Reasons []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("waypoint policy %s: %s", e.Policy, strings.Join(e.Reasons, "; "))
}

// Compile indexes policies by target. What a policy holds that cannot be
// used (a malformed CIDR, a port above 65535, an empty value, an unknown
// condition key) never weakens it: an ALLOW policy loses the rule, a DENY
// policy ignores the attribute (so the rule denies more). Each such policy
// is reported as one *Error, as is a policy without a usable target (left
// out: it applies to nothing) and one with an unknown action (applied as
// DENY). Nil entries are skipped.
func Compile(policies []*routeapi.WaypointPolicy) (*Policies, []error) {
	out := &Policies{byGateway: map[gatewayKey]*applicable{}, byService: map[string]*applicable{}}
	var errs []error
	var compiled []*policy
	seen := map[string]bool{}
	for _, wp := range policies {
		if wp == nil {
			continue
		}
		pol, reasons := compilePolicy(wp)
		if seen[pol.name] {
			reasons = append(reasons, "a second resource with this name; both are applied")
		}
		seen[pol.name] = true
		if len(reasons) > 0 {
			errs = append(errs, &Error{Policy: pol.name, Reasons: reasons})
		}
		if len(pol.gateways) == 0 && len(pol.services) == 0 {
			continue
		}
		compiled = append(compiled, pol)
	}
	slices.SortStableFunc(compiled, func(a, b *policy) int { return cmp.Compare(a.name, b.name) })
	for _, pol := range compiled {
		out.names = append(out.names, pol.name)
		for _, g := range pol.gateways {
			out.byGateway[g] = add(out.byGateway[g], pol)
		}
		for _, h := range pol.services {
			out.byService[h] = add(out.byService[h], pol)
		}
	}
	return out, errs
}

func add(a *applicable, p *policy) *applicable {
	if a == nil {
		a = &applicable{}
	}
	if p.deny {
		a.deny = append(a.deny, p)
	} else {
		a.allow = append(a.allow, p)
	}
	return a
}

// policy is one compiled WaypointPolicy.
type policy struct {
	name     string
	deny     bool
	gateways []gatewayKey
	services []string
	rules    []rule // ORed; none: the policy matches nothing
}

func (p *policy) matches(r *request) bool {
	for i := range p.rules {
		if p.rules[i].matches(r) {
			return true
		}
	}
	return false
}

func compilePolicy(wp *routeapi.WaypointPolicy) (*policy, []string) {
	p := &policy{name: wp.ResourceName()}
	var reasons []string
	for i, t := range wp.GetTargets() {
		switch k := t.GetKind().(type) {
		case *routeapi.PolicyTarget_Gateway:
			g := gatewayKey{k.Gateway.GetNamespace(), k.Gateway.GetName()}
			if g.namespace == "" || g.name == "" {
				reasons = append(reasons, fmt.Sprintf("target %d: a gateway needs a namespace and a name; ignored", i))
				continue
			}
			if !slices.Contains(p.gateways, g) {
				p.gateways = append(p.gateways, g)
			}
		case *routeapi.PolicyTarget_ServiceHostname:
			h := strings.ToLower(k.ServiceHostname)
			if h == "" {
				reasons = append(reasons, fmt.Sprintf("target %d: empty service hostname; ignored", i))
				continue
			}
			if !slices.Contains(p.services, h) {
				p.services = append(p.services, h)
			}
		default:
			reasons = append(reasons, fmt.Sprintf("target %d: neither a gateway nor a service; ignored", i))
		}
	}
	if len(p.gateways) == 0 && len(p.services) == 0 {
		return p, append(reasons, "no usable target; the policy applies to nothing")
	}
	switch wp.GetAction() {
	case routeapi.PolicyAction_POLICY_ACTION_ALLOW:
	case routeapi.PolicyAction_POLICY_ACTION_DENY:
		p.deny = true
	default:
		p.deny = true
		reasons = append(reasons, fmt.Sprintf("unknown action %d; applied as DENY (fails closed)", wp.GetAction()))
	}
	for i, pr := range wp.GetRules() {
		var c compiler
		r := c.rule(pr)
		switch {
		case len(c.problems) == 0:
			p.rules = append(p.rules, r)
		case p.deny:
			p.rules = append(p.rules, r)
			reasons = append(reasons, fmt.Sprintf("rule %d: %s; ignored, so the DENY rule denies more (fails closed)", i, strings.Join(c.problems, ", ")))
		default:
			reasons = append(reasons, fmt.Sprintf("rule %d: %s; the ALLOW rule is left out (fails closed)", i, strings.Join(c.problems, ", ")))
		}
	}
	return p, reasons
}
