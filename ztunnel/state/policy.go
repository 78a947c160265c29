package state

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"istio.io/istio/pkg/workloadapi/security"

	"github.com/ambientlite/mesh/internal/hbone"
)

// Scope says which workloads a policy applies to.
type Scope uint8

const (
	// ScopeGlobal policies apply to every workload (istiod sends those of
	// the root namespace with this scope).
	ScopeGlobal Scope = iota
	// ScopeNamespace policies apply to every workload of their namespace.
	ScopeNamespace
	// ScopeWorkloadSelector policies apply to the workloads that name them
	// in authorization_policies.
	ScopeWorkloadSelector
)

var scopeNames = [...]string{"Global", "Namespace", "WorkloadSelector"}

func (s Scope) String() string { return scopeNames[s] }

// MarshalText writes ztunnel's names: Global, Namespace, WorkloadSelector.
func (s Scope) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Action is what a matching policy does.
type Action uint8

const (
	Allow Action = iota
	Deny
)

func (a Action) String() string {
	if a == Deny {
		return "Deny"
	}
	return "Allow"
}

// MarshalText writes "Allow" or "Deny".
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Policy is an istio.security.Authorization as ztunnel reads it
// (src/rbac.rs). A *Policy handed out by the Store is shared: treat it as
// read-only.
type Policy struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     Scope  `json:"scope"`
	Action    Action `json:"action"`
	// Rules are the policy's groups: a policy matches when any rule
	// matches; a rule when all its clauses match; a clause when any of its
	// matches matches. A policy without rules matches nothing, a rule
	// without clauses and a clause without matches match everything, and a
	// Match with no field set never matches (it is skipped).
	Rules [][][]*Match `json:"rules"`
	// DryRun policies are evaluated but never enforced.
	DryRun bool `json:"dryRun"`

	key string // Key, computed once
}

// Key is "<namespace>/<name>", how workloads name the policy and how
// ztunnel reports it.
func (p *Policy) Key() string {
	if p.key != "" {
		return p.key
	}
	return p.Namespace + "/" + p.Name
}

// Match is one alternative of a clause: every field set must match (a
// positive list when any entry matches, a not_ list when none does).
type Match struct {
	Namespaces          []StringMatch         `json:"namespaces,omitempty"`
	NotNamespaces       []StringMatch         `json:"notNamespaces,omitempty"`
	ServiceAccounts     []ServiceAccountMatch `json:"serviceAccounts,omitempty"`
	NotServiceAccounts  []ServiceAccountMatch `json:"notServiceAccounts,omitempty"`
	Principals          []StringMatch         `json:"principals,omitempty"`
	NotPrincipals       []StringMatch         `json:"notPrincipals,omitempty"`
	SourceIPs           []netip.Prefix        `json:"sourceIps,omitempty"`
	NotSourceIPs        []netip.Prefix        `json:"notSourceIps,omitempty"`
	DestinationIPs      []netip.Prefix        `json:"destinationIps,omitempty"`
	NotDestinationIPs   []netip.Prefix        `json:"notDestinationIps,omitempty"`
	DestinationPorts    []uint16              `json:"destinationPorts,omitempty"`
	NotDestinationPorts []uint16              `json:"notDestinationPorts,omitempty"`
}

// empty reports whether no field is set: such a Match never matches.
func (m *Match) empty() bool {
	return len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 &&
		len(m.ServiceAccounts) == 0 && len(m.NotServiceAccounts) == 0 &&
		len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.SourceIPs) == 0 && len(m.NotSourceIPs) == 0 &&
		len(m.DestinationIPs) == 0 && len(m.NotDestinationIPs) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0
}

// MatchKind is the form of a StringMatch.
type MatchKind uint8

const (
	Exact MatchKind = iota
	Prefix
	Suffix
	// Presence matches any non-empty value.
	Presence
)

// StringMatch matches a namespace or a principal.
type StringMatch struct {
	Kind  MatchKind
	Value string
}

// matches is ztunnel's StringMatch::matches.
func (m StringMatch) matches(s string) bool {
	switch m.Kind {
	case Prefix:
		return strings.HasPrefix(s, m.Value)
	case Suffix:
		return strings.HasSuffix(s, m.Value)
	case Presence:
		return s != ""
	default:
		return s == m.Value
	}
}

// MarshalJSON writes {"Exact": "v"}, {"Prefix": "v"}, {"Suffix": "v"} or
// {"Presence": []}, as ztunnel's config dump.
func (m StringMatch) MarshalJSON() ([]byte, error) {
	switch m.Kind {
	case Prefix:
		return json.Marshal(map[string]string{"Prefix": m.Value})
	case Suffix:
		return json.Marshal(map[string]string{"Suffix": m.Value})
	case Presence:
		return []byte(`{"Presence":[]}`), nil
	default:
		return json.Marshal(map[string]string{"Exact": m.Value})
	}
}

// ServiceAccountMatch matches a peer's namespace and service account
// exactly (any trust domain); a connection without identity never matches.
type ServiceAccountMatch struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// convertPolicy reads an Authorization as ztunnel does
// (TryFrom<XdsRbac> in src/rbac.rs): an unknown scope or action rejects
// the resource; a string match without a form and an address that is not
// a valid prefix are dropped from their list (so a Match may end up
// empty, and then never matches); ports are truncated to 16 bits.
func convertPolicy(x *security.Authorization) (*Policy, error) {
	p := &Policy{Name: x.GetName(), Namespace: x.GetNamespace(), DryRun: x.GetDryRun(), Rules: [][][]*Match{},
		key: x.GetNamespace() + "/" + x.GetName()}
	switch x.GetScope() {
	case security.Scope_GLOBAL:
		p.Scope = ScopeGlobal
	case security.Scope_NAMESPACE:
		p.Scope = ScopeNamespace
	case security.Scope_WORKLOAD_SELECTOR:
		p.Scope = ScopeWorkloadSelector
	default:
		return nil, fmt.Errorf("unknown scope %v", x.GetScope())
	}
	switch x.GetAction() {
	case security.Action_ALLOW:
		p.Action = Allow
	case security.Action_DENY:
		p.Action = Deny
	default:
		return nil, fmt.Errorf("unknown action %v", x.GetAction())
	}
	for _, g := range x.GetGroups() {
		rule := make([][]*Match, 0, len(g.GetRules()))
		for _, r := range g.GetRules() {
			clause := make([]*Match, 0, len(r.GetMatches()))
			for _, m := range r.GetMatches() {
				clause = append(clause, convertMatch(m))
			}
			rule = append(rule, clause)
		}
		p.Rules = append(p.Rules, rule)
	}
	return p, nil
}

func convertMatch(m *security.Match) *Match {
	return &Match{
		Namespaces:          stringMatches(m.GetNamespaces()),
		NotNamespaces:       stringMatches(m.GetNotNamespaces()),
		ServiceAccounts:     serviceAccounts(m.GetServiceAccounts()),
		NotServiceAccounts:  serviceAccounts(m.GetNotServiceAccounts()),
		Principals:          stringMatches(m.GetPrincipals()),
		NotPrincipals:       stringMatches(m.GetNotPrincipals()),
		SourceIPs:           prefixes(m.GetSourceIps()),
		NotSourceIPs:        prefixes(m.GetNotSourceIps()),
		DestinationIPs:      prefixes(m.GetDestinationIps()),
		NotDestinationIPs:   prefixes(m.GetNotDestinationIps()),
		DestinationPorts:    ports16(m.GetDestinationPorts()),
		NotDestinationPorts: ports16(m.GetNotDestinationPorts()),
	}
}

func stringMatches(in []*security.StringMatch) []StringMatch {
	var out []StringMatch
	for _, s := range in {
		switch t := s.GetMatchType().(type) {
		case *security.StringMatch_Exact:
			out = append(out, StringMatch{Exact, t.Exact})
		case *security.StringMatch_Prefix:
			out = append(out, StringMatch{Prefix, t.Prefix})
		case *security.StringMatch_Suffix:
			out = append(out, StringMatch{Suffix, t.Suffix})
		case *security.StringMatch_Presence:
			out = append(out, StringMatch{Kind: Presence})
		}
	}
	return out
}

func serviceAccounts(in []*security.ServiceAccountMatch) []ServiceAccountMatch {
	var out []ServiceAccountMatch
	for _, s := range in {
		out = append(out, ServiceAccountMatch{Namespace: s.GetNamespace(), ServiceAccount: s.GetServiceAccount()})
	}
	return out
}

func prefixes(in []*security.Address) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range in {
		ip, ok := netip.AddrFromSlice(a.GetAddress())
		if !ok || a.GetLength() > uint32(ip.BitLen()) {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, int(a.GetLength())))
	}
	return out
}

func ports16(in []uint32) []uint16 {
	var out []uint16
	for _, p := range in {
		out = append(out, uint16(p))
	}
	return out
}

// Conn is what a policy is matched against: an inbound connection as the
// destination's ztunnel sees it.
type Conn struct {
	// SourceIdentity is the peer's verified identity; the zero value means
	// a connection without identity (plaintext).
	SourceIdentity hbone.Identity
	// Source is the original client's address.
	Source netip.AddrPort
	// Destination is the destination workload's ip:port.
	Destination netip.AddrPort
}

// peer is a connection being matched. ztunnel compares principals with
// the identity's "spiffe://" stripped; the principal is matched as its
// parts, "<td>/ns/<ns>/sa/<sa>", without building the string.
type peer struct {
	c *Conn
}

// matchPrincipal is StringMatch.matches on the peer's principal; false for
// a connection without identity (ztunnel: nothing to strip "spiffe://"
// from, so not even presence matches).
func (p *peer) matchPrincipal(m StringMatch) bool {
	id := p.c.SourceIdentity
	if id.IsZero() {
		return false
	}
	parts := [5]string{id.TrustDomain, "/ns/", id.Namespace, "/sa/", id.ServiceAccount}
	n := 0
	for _, s := range parts {
		n += len(s)
	}
	switch m.Kind {
	case Presence:
		return n > 0
	case Exact:
		return n == len(m.Value) && partsHavePrefix(parts[:], m.Value)
	case Prefix:
		return n >= len(m.Value) && partsHavePrefix(parts[:], m.Value)
	default: // Suffix
		return n >= len(m.Value) && partsHaveSuffix(parts[:], m.Value)
	}
}

// partsHavePrefix reports whether the concatenation of parts starts with s.
func partsHavePrefix(parts []string, s string) bool {
	for _, p := range parts {
		if len(s) == 0 {
			return true
		}
		k := min(len(p), len(s))
		if p[:k] != s[:k] {
			return false
		}
		s = s[k:]
	}
	return len(s) == 0
}

// partsHaveSuffix reports whether the concatenation of parts ends with s.
func partsHaveSuffix(parts []string, s string) bool {
	for i := len(parts) - 1; i >= 0; i-- {
		if len(s) == 0 {
			return true
		}
		p := parts[i]
		k := min(len(p), len(s))
		if p[len(p)-k:] != s[len(s)-k:] {
			return false
		}
		s = s[:len(s)-k]
	}
	return len(s) == 0
}

// Matches reports whether c matches the policy's rules, with ztunnel's
// semantics (Authorization::matches in src/rbac.rs). It does not look at
// Action or DryRun.
func (p *Policy) Matches(c Conn) bool {
	c.Source = netip.AddrPortFrom(c.Source.Addr().Unmap(), c.Source.Port())
	c.Destination = netip.AddrPortFrom(c.Destination.Addr().Unmap(), c.Destination.Port())
	pe := peer{c: &c}
	return p.matches(&pe)
}

func (p *Policy) matches(pe *peer) bool {
	for _, rule := range p.Rules {
		ruleMatch := true
		for _, clause := range rule {
			if !clauseMatches(clause, pe) {
				ruleMatch = false
				break
			}
		}
		if ruleMatch {
			return true
		}
	}
	return false
}

// clauseMatches: any non-empty Match matching; an empty clause always
// matches.
func clauseMatches(clause []*Match, pe *peer) bool {
	if len(clause) == 0 {
		return true
	}
	for _, m := range clause {
		if !m.empty() && m.matches(pe) {
			return true
		}
	}
	return false
}

func (m *Match) matches(pe *peer) bool {
	c := pe.c
	src, dst := c.Source.Addr(), c.Destination.Addr()
	return both(m.DestinationIPs, m.NotDestinationIPs, func(p netip.Prefix) bool { return p.Contains(dst) }) &&
		both(m.SourceIPs, m.NotSourceIPs, func(p netip.Prefix) bool { return p.Contains(src) }) &&
		both(m.DestinationPorts, m.NotDestinationPorts, func(p uint16) bool { return p == c.Destination.Port() }) &&
		both(m.ServiceAccounts, m.NotServiceAccounts, func(sa ServiceAccountMatch) bool {
			id := c.SourceIdentity
			return !id.IsZero() && id.Namespace == sa.Namespace && id.ServiceAccount == sa.ServiceAccount
		}) &&
		both(m.Principals, m.NotPrincipals, pe.matchPrincipal) &&
		both(m.Namespaces, m.NotNamespaces, func(s StringMatch) bool {
			return s.matches(c.SourceIdentity.Namespace)
		})
}

// both is ztunnel's matches_internal: the positive list (if any) must have
// a match and the negative list (if any) must have none.
func both[T any](positive, negative []T, match func(T) bool) bool {
	if len(positive) > 0 && !anyOf(positive, match) {
		return false
	}
	return len(negative) == 0 || !anyOf(negative, match)
}

func anyOf[T any](list []T, match func(T) bool) bool {
	for _, v := range list {
		if match(v) {
			return true
		}
	}
	return false
}
