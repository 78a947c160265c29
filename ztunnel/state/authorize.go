package state

import (
	"net/netip"

	"github.com/ambientlite/mesh/internal/hbone"
)

// ConnInfo is an inbound connection to authorize.
type ConnInfo struct {
	// SourceIdentity is the peer's verified identity (HBONE); the zero
	// value is a connection without identity (plaintext on 15006).
	SourceIdentity hbone.Identity
	// Source is the original client (the forwarded for= of an HBONE tunnel,
	// the TCP peer of a plaintext connection).
	Source netip.AddrPort
	// Destination is the destination workload's ip:port.
	Destination netip.AddrPort
	// Workload is the destination workload. When nil it is looked up by
	// Destination's address on Config.Network.
	Workload *Workload
}

// Reason says why Check decided as it did.
type Reason uint8

const (
	// ReasonNoAllowPolicy: no DENY policy matched and no ALLOW policy
	// applies: allowed.
	ReasonNoAllowPolicy Reason = iota
	// ReasonAllowPolicy: an ALLOW policy matched: allowed.
	ReasonAllowPolicy
	// ReasonDenyPolicy: a DENY policy matched: denied.
	ReasonDenyPolicy
	// ReasonNotAllowed: ALLOW policies apply and none matched: denied.
	ReasonNotAllowed
	// ReasonUnknownDestination: no workload holds the destination
	// address: denied.
	ReasonUnknownDestination
)

var reasonNames = [...]string{"no allow policy", "allow policy matched", "deny policy matched", "no allow policy matched", "unknown destination workload"}

func (r Reason) String() string { return reasonNames[r] }

// Verdict is the outcome of Check.
type Verdict struct {
	Allowed bool
	// Policy is the key ("<ns>/<name>") of the policy that decided:
	// the DENY policy that matched, or the first ALLOW policy that matched.
	// Empty otherwise.
	Policy string
	Reason Reason
	// DryRun lists the dry-run policies that matched (they are not
	// enforced; ztunnel logs them).
	DryRun []string
}

// Authorize is Check's decision and deciding policy.
func (s *Store) Authorize(c ConnInfo) (allowed bool, policy string) {
	v := s.Check(c)
	return v.Allowed, v.Policy
}

// Check applies ztunnel's L4 authorization (assert_rbac in src/state.rs)
// to an inbound connection: the policies that apply to the destination
// workload are the NAMESPACE policies of its namespace, the GLOBAL ones and
// those it names in authorization_policies (names not held are skipped).
// Dry-run policies are only reported. If any DENY policy matches, deny;
// else if no ALLOW policy applies, allow; else allow only if one matches.
//
// PeerAuthentication STRICT is not a separate check: Istio (and
// istiod-lite) send it as a DENY policy named by the workloads it covers
// (istio-system/istio_converted_static_strict, or a
// <ns>/converted_peer_authentication_<name> policy with port exceptions),
// whose rule is not_principals: [presence]. A plaintext connection has no
// principal, so that rule matches it and the connection is denied.
func (s *Store) Check(c ConnInfo) Verdict {
	v := s.cur.Load()
	c.Source = netip.AddrPortFrom(c.Source.Addr().Unmap(), c.Source.Port())
	c.Destination = netip.AddrPortFrom(c.Destination.Addr().Unmap(), c.Destination.Port())
	w := c.Workload
	if w == nil {
		w = v.workloadAt(addrKey(s.cfg.Network, c.Destination.Addr()))
		if w == nil {
			return Verdict{Reason: ReasonUnknownDestination}
		}
	}
	conn := Conn{SourceIdentity: c.SourceIdentity, Source: c.Source, Destination: c.Destination}
	pe := peer{c: &conn}

	var out Verdict
	var allowPolicies int
	var allowMatch *Policy
	denied := false
	// One pass in ztunnel's order: the first DENY match decides; ALLOW
	// matches only count if no DENY matches.
	v.policiesFor(w, func(p *Policy) {
		if denied {
			return
		}
		if p.DryRun {
			if p.matches(&pe) {
				out.DryRun = append(out.DryRun, p.Key())
			}
			return
		}
		switch p.Action {
		case Deny:
			if p.matches(&pe) {
				denied = true
				out.Policy = p.Key()
			}
		case Allow:
			allowPolicies++
			if allowMatch == nil && p.matches(&pe) {
				allowMatch = p
			}
		}
	})
	switch {
	case denied:
		out.Reason = ReasonDenyPolicy
	case allowPolicies == 0:
		out.Allowed, out.Reason = true, ReasonNoAllowPolicy
	case allowMatch != nil:
		out.Allowed, out.Reason, out.Policy = true, ReasonAllowPolicy, allowMatch.Key()
	default:
		out.Reason = ReasonNotAllowed
	}
	return out
}
