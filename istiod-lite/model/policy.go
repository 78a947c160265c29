package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"istio.io/istio/pkg/workloadapi/security"
)

const (
	// AnnotationDryRun on an AuthorizationPolicy asks for it to be evaluated
	// but not enforced. ztunnel policies in dry-run are not sent (Istio's
	// default: AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY is off).
	AnnotationDryRun = "istio.io/dry-run"

	kindAuthorizationPolicy = "AuthorizationPolicy"
)

// AuthorizationPolicy is a security.istio.io AuthorizationPolicy. Versions
// v1 and v1beta1 share one spec message (istio.io/api/security/v1 only
// aliases v1beta1), so an informer protojson-unmarshals the object's spec
// into Spec whatever its apiVersion.
type AuthorizationPolicy struct {
	Namespace string
	Name      string
	// Generation is metadata.generation, for the status writer.
	Generation int64
	// Annotations are the object's annotations; AnnotationDryRun is read.
	Annotations map[string]string
	// Spec is the decoded spec. Nil reads as an empty spec, as a CR without
	// one does in Istio: an ALLOW policy with no rules, which denies every
	// connection it covers. An informer that cannot decode a spec should
	// still pass the object, with a nil Spec, so that what it was meant to
	// protect fails closed; the nil Spec is reported as a Problem.
	Spec *securityv1beta1.AuthorizationPolicy
}

// AuthorizationResourceName is the istio.security.Authorization resource
// name of a policy, "<namespace>/<name>": how Istio names the resource and
// how ztunnel and Workload.authorization_policies refer to it.
func AuthorizationResourceName(a *security.Authorization) string {
	return a.GetNamespace() + "/" + a.GetName()
}

// authzPolicy is a translated AuthorizationPolicy.
type authzPolicy struct {
	out *security.Authorization
	// selected: the policy has a selector, so ztunnel applies it only to the
	// workloads that name it in authorization_policies: those whose labels
	// include selector, in its namespace (every namespace from the root one).
	selected bool
	selector map[string]string
}

// authorizationPolicy translates an AuthorizationPolicy without targetRefs
// (isWaypointPolicy is false) the way Istio's convertAuthorizationPolicy
// does for ztunnel, or returns nil when ztunnel gets nothing from it
// (dry-run, unsupported actions, unusable selectors).
func (b *builder) authorizationPolicy(p *AuthorizationPolicy) *authzPolicy {
	report := func(format string, args ...any) {
		b.problem(kindAuthorizationPolicy, p.Namespace, p.Name, fmt.Sprintf(format, args...))
	}
	spec := p.Spec
	if spec == nil {
		report("no spec (it could not be decoded): read as an empty spec, an ALLOW policy without rules, which denies every connection it covers")
		spec = &securityv1beta1.AuthorizationPolicy{}
	}
	if v := p.Annotations[AnnotationDryRun]; v != "" {
		dry, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			report("annotation %s=%q is not a boolean; the policy is enforced", AnnotationDryRun, v)
		case dry:
			report("dry-run policies (%s) are not sent to ztunnel; the policy has no effect", AnnotationDryRun)
			return nil
		}
	}
	sel := spec.GetSelector()
	if reason := selectorProblem(sel.GetMatchLabels()); reason != "" {
		report("%s; the policy selects no pod and is not sent", reason)
		return nil
	}
	out := &security.Authorization{Name: p.Name, Namespace: p.Namespace}
	switch {
	case sel != nil:
		out.Scope = security.Scope_WORKLOAD_SELECTOR
	case p.Namespace == b.cfg.RootNamespace:
		out.Scope = security.Scope_GLOBAL
	default:
		out.Scope = security.Scope_NAMESPACE
	}
	switch spec.GetAction() {
	case securityv1beta1.AuthorizationPolicy_ALLOW:
		out.Action = security.Action_ALLOW
	case securityv1beta1.AuthorizationPolicy_DENY:
		out.Action = security.Action_DENY
	default:
		report("ztunnel does not enforce action %s (only ALLOW and DENY); the policy is not sent", spec.GetAction())
		return nil
	}
	for i, r := range spec.GetRules() {
		g, issues := translateRule(out.Action, r, p.Namespace)
		if reason := issues.reason(i, out.Action); reason != "" {
			report("%s", reason)
		}
		if g != nil {
			out.Groups = append(out.Groups, g)
		}
	}
	return &authzPolicy{out: out, selected: sel != nil, selector: sel.GetMatchLabels()}
}

// selectorProblem applies Istio's validation of workload selectors: no
// empty label key, no wildcard. Such a selector matches no pod (Kubernetes
// labels cannot carry either).
func selectorProblem(matchLabels map[string]string) string {
	keys := make([]string, 0, len(matchLabels))
	for k := range matchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := matchLabels[k]
		if k == "" {
			return fmt.Sprintf("selector has an empty label key (value %q)", v)
		}
		if strings.Contains(k, "*") || strings.Contains(v, "*") {
			return fmt.Sprintf("selector label %s=%s has a wildcard, which selectors do not support", k, v)
		}
	}
	return ""
}

// selects reports whether a workload with labels lbls is selected by a
// policy selector: every selector label is present with the same value. An
// empty selector selects every workload.
func selects(selector, lbls map[string]string) bool {
	for k, v := range selector {
		if got, ok := lbls[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ruleIssues is what ztunnel cannot enforce in one rule.
type ruleIssues struct {
	// unsupported are attributes ztunnel does not see: HTTP ones, which
	// only a waypoint enforces, and source trust domains.
	unsupported []string
	// invalid describes malformed fields, which Istio's validation rejects.
	invalid []string
}

func (r *ruleIssues) unsupportedIf(present bool, attr string) {
	if present && !slices.Contains(r.unsupported, attr) {
		r.unsupported = append(r.unsupported, attr)
	}
}

func (r *ruleIssues) invalidf(format string, args ...any) {
	r.invalid = append(r.invalid, fmt.Sprintf(format, args...))
}

func (r *ruleIssues) empty() bool { return len(r.unsupported) == 0 && len(r.invalid) == 0 }

// reason is the Problem text for ztunnel's rule i, or "" when nothing was
// dropped.
func (r *ruleIssues) reason(i int, action security.Action) string {
	return r.describe(i, action == security.Action_ALLOW, ztunnelWords)
}

// enforcerWords are the words a rule's Problem uses for who enforces it.
type enforcerWords struct {
	unsupported string // "uses attributes <unsupported> (a, b)"
	hint        string // appended when attributes are unsupported
}

var ztunnelWords = enforcerWords{
	unsupported: "ztunnel does not enforce",
	hint:        "; enforce HTTP attributes in a waypoint (targetRefs)",
}

// describe is the Problem text for rule i of an ALLOW (allow) or DENY
// policy, or "" when nothing was dropped.
func (r *ruleIssues) describe(i int, allow bool, w enforcerWords) string {
	if r.empty() {
		return ""
	}
	var parts []string
	if len(r.unsupported) > 0 {
		slices.Sort(r.unsupported)
		parts = append(parts, fmt.Sprintf("uses attributes %s (%s)", w.unsupported, strings.Join(r.unsupported, ", ")))
	}
	if len(r.invalid) > 0 {
		parts = append(parts, "is invalid: "+strings.Join(r.invalid, "; "))
	}
	var effect string
	if allow {
		effect = "the ALLOW rule is omitted, so less traffic is allowed than written (fails closed)"
	} else {
		effect = "those parts are ignored, so the DENY rule denies more traffic than written (fails closed)"
	}
	if len(r.unsupported) > 0 {
		effect += w.hint
	}
	return fmt.Sprintf("rule %d %s; %s", i, strings.Join(parts, " and "), effect)
}

// translateRule turns one AuthorizationPolicy rule into a ztunnel Group:
// a clause for `to` (its operations ORed), one for `from` (its sources
// ORed) and one per `when` condition, all ANDed, in that order (Istio's
// handleRule).
//
// What ztunnel cannot enforce never makes enforcement weaker. In an ALLOW
// policy the whole rule is omitted, as Istio does for HTTP attributes
// (nil Group). In a DENY policy the unenforceable attribute, condition or
// malformed field is ignored, so the rule matches more connections.
func translateRule(action security.Action, r *securityv1beta1.Rule, namespace string) (*security.Group, ruleIssues) {
	var issues ruleIssues
	if r == nil {
		issues.invalidf("the rule is null")
		if action == security.Action_ALLOW {
			return nil, issues
		}
		return &security.Group{}, issues // nothing left to narrow it: matches every connection
	}
	var clauses []*security.Rules
	if len(r.GetTo()) > 0 {
		ms := make([]*security.Match, 0, len(r.GetTo()))
		for j, to := range r.GetTo() {
			ms = append(ms, operationMatch(to, fmt.Sprintf("to[%d]", j), &issues))
		}
		clauses = appendClause(clauses, ms)
	}
	if len(r.GetFrom()) > 0 {
		ms := make([]*security.Match, 0, len(r.GetFrom()))
		for j, from := range r.GetFrom() {
			ms = append(ms, sourceMatch(from, namespace, fmt.Sprintf("from[%d]", j), &issues))
		}
		clauses = appendClause(clauses, ms)
	}
	for j, c := range r.GetWhen() {
		if m := conditionMatch(c, fmt.Sprintf("when[%d]", j), &issues); m != nil {
			clauses = appendClause(clauses, []*security.Match{m})
		}
	}
	if action == security.Action_ALLOW && !issues.empty() {
		return nil, issues
	}
	return &security.Group{Rules: clauses}, issues
}

// appendClause adds a clause whose matches are ORed, unless one of them is
// empty. A match is empty only when every field of its from/to entry was
// dropped (unsupported or malformed), and ztunnel skips empty matches: the
// clause would never match and a DENY rule would silently stop denying.
// Leaving the clause out makes it match every connection instead, which
// for DENY fails closed. (ALLOW rules with dropped parts are omitted whole.)
func appendClause(clauses []*security.Rules, matches []*security.Match) []*security.Rules {
	for _, m := range matches {
		if proto.Size(m) == 0 {
			return clauses
		}
	}
	return append(clauses, &security.Rules{Matches: matches})
}

// operationMatch translates a `to` entry. Only ports reach ztunnel.
func operationMatch(to *securityv1beta1.Rule_To, at string, issues *ruleIssues) *security.Match {
	m := &security.Match{}
	op := to.GetOperation()
	if op == nil {
		issues.invalidf("%s has no operation", at)
		return m
	}
	issues.unsupportedIf(len(op.GetHosts()) > 0, "hosts")
	issues.unsupportedIf(len(op.GetNotHosts()) > 0, "notHosts")
	issues.unsupportedIf(len(op.GetMethods()) > 0, "methods")
	issues.unsupportedIf(len(op.GetNotMethods()) > 0, "notMethods")
	issues.unsupportedIf(len(op.GetPaths()) > 0, "paths")
	issues.unsupportedIf(len(op.GetNotPaths()) > 0, "notPaths")
	if proto.Size(op) == 0 {
		issues.invalidf("%s.operation is empty", at)
	}
	m.DestinationPorts, _ = ports(op.GetPorts(), at+".operation.ports", issues)
	m.NotDestinationPorts, _ = ports(op.GetNotPorts(), at+".operation.notPorts", issues)
	return m
}

// checkSource returns from's source, having recorded what neither ztunnel
// nor a waypoint evaluates (request principals, remote IP blocks, trust
// domains) and a missing or empty source; nil when there is none.
func checkSource(from *securityv1beta1.Rule_From, at string, issues *ruleIssues) *securityv1beta1.Source {
	s := from.GetSource()
	if s == nil {
		issues.invalidf("%s has no source", at)
		return nil
	}
	issues.unsupportedIf(len(s.GetRequestPrincipals()) > 0, "requestPrincipals")
	issues.unsupportedIf(len(s.GetNotRequestPrincipals()) > 0, "notRequestPrincipals")
	issues.unsupportedIf(len(s.GetRemoteIpBlocks()) > 0, "remoteIpBlocks")
	issues.unsupportedIf(len(s.GetNotRemoteIpBlocks()) > 0, "notRemoteIpBlocks")
	issues.unsupportedIf(len(s.GetTrustDomains()) > 0, "trustDomains")
	issues.unsupportedIf(len(s.GetNotTrustDomains()) > 0, "notTrustDomains")
	if proto.Size(s) == 0 {
		issues.invalidf("%s.source is empty", at)
	}
	return s
}

// sourceMatch translates a `from` entry.
func sourceMatch(from *securityv1beta1.Rule_From, namespace, at string, issues *ruleIssues) *security.Match {
	m := &security.Match{}
	s := checkSource(from, at, issues)
	if s == nil {
		return m
	}
	at += ".source."
	m.Principals, _ = stringMatches(s.GetPrincipals(), at+"principals", issues)
	m.NotPrincipals, _ = stringMatches(s.GetNotPrincipals(), at+"notPrincipals", issues)
	m.Namespaces, _ = stringMatches(s.GetNamespaces(), at+"namespaces", issues)
	m.NotNamespaces, _ = stringMatches(s.GetNotNamespaces(), at+"notNamespaces", issues)
	m.ServiceAccounts, _ = serviceAccountMatches(s.GetServiceAccounts(), namespace, at+"serviceAccounts", issues)
	m.NotServiceAccounts, _ = serviceAccountMatches(s.GetNotServiceAccounts(), namespace, at+"notServiceAccounts", issues)
	m.SourceIps, _ = addresses(s.GetIpBlocks(), at+"ipBlocks", issues)
	m.NotSourceIps, _ = addresses(s.GetNotIpBlocks(), at+"notIpBlocks", issues)
	return m
}

// Condition keys ztunnel enforces (Istio's l4WhenAttributes).
const (
	attrSourceIP        = "source.ip"
	attrSourceNamespace = "source.namespace"
	attrSourcePrincipal = "source.principal"
	attrDestinationIP   = "destination.ip"
	attrDestinationPort = "destination.port"
)

// httpConditionKey reports whether key is a valid AuthorizationPolicy
// condition that ztunnel cannot evaluate (Istio's attribute list minus the
// L4 ones).
func httpConditionKey(key string) bool {
	switch key {
	case "remote.ip", "source.serviceAccount", "source.trustDomain", "connection.sni",
		"request.auth.principal", "request.auth.audiences", "request.auth.presenter":
		return true
	}
	for _, prefix := range []string{"request.headers[", "request.auth.claims[", "experimental.envoy.filters."} {
		if strings.HasPrefix(key, prefix) {
			return true
		}
	}
	return false
}

// conditionMatch translates a `when` condition, or returns nil when it is
// dropped (unsupported or malformed).
func conditionMatch(c *securityv1beta1.Condition, at string, issues *ruleIssues) *security.Match {
	if c == nil {
		issues.invalidf("%s is null", at)
		return nil
	}
	key := c.GetKey()
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		issues.invalidf("%s (%s) has neither values nor notValues", at, key)
		return nil
	}
	m := &security.Match{}
	var ok, notOK bool
	switch key {
	case attrSourceIP:
		m.SourceIps, ok = addresses(c.GetValues(), at+".values", issues)
		m.NotSourceIps, notOK = addresses(c.GetNotValues(), at+".notValues", issues)
	case attrDestinationIP:
		m.DestinationIps, ok = addresses(c.GetValues(), at+".values", issues)
		m.NotDestinationIps, notOK = addresses(c.GetNotValues(), at+".notValues", issues)
	case attrDestinationPort:
		m.DestinationPorts, ok = ports(c.GetValues(), at+".values", issues)
		m.NotDestinationPorts, notOK = ports(c.GetNotValues(), at+".notValues", issues)
	case attrSourceNamespace:
		m.Namespaces, ok = stringMatches(c.GetValues(), at+".values", issues)
		m.NotNamespaces, notOK = stringMatches(c.GetNotValues(), at+".notValues", issues)
	case attrSourcePrincipal:
		m.Principals, ok = stringMatches(c.GetValues(), at+".values", issues)
		m.NotPrincipals, notOK = stringMatches(c.GetNotValues(), at+".notValues", issues)
	default:
		if httpConditionKey(key) {
			issues.unsupportedIf(true, key)
		} else {
			issues.invalidf("%s has unknown key %q", at, key)
		}
		return nil
	}
	if !ok || !notOK {
		return nil // a partly malformed condition is dropped whole
	}
	return m
}

// ports parses port numbers. On a malformed value it records it and
// returns nil, false: the caller drops the whole field.
func ports(vals []string, at string, issues *ruleIssues) ([]uint32, bool) {
	var out []uint32
	for _, v := range vals {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			issues.invalidf("%s: %q is not a port number (0-65535)", at, v)
			return nil, false
		}
		out = append(out, uint32(p))
	}
	return out, true
}

// addresses parses IPs and CIDR ranges as Istio sends them: the address as
// written (host bits kept) with the prefix length, or the full length for a
// single IP.
func addresses(vals []string, at string, issues *ruleIssues) ([]*security.Address, bool) {
	var out []*security.Address
	for _, v := range vals {
		p, ok := parseAddress(v, at, issues)
		if !ok {
			return nil, false
		}
		out = append(out, &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())})
	}
	return out, true
}

// parseAddress parses an IP or a CIDR range (host bits kept); a single IP
// is a range of its full length. On a malformed value it records it.
func parseAddress(v, at string, issues *ruleIssues) (netip.Prefix, bool) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			issues.invalidf("%s: %q is not a CIDR range", at, v)
			return netip.Prefix{}, false
		}
		return p, true
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		issues.invalidf("%s: %q is not an IP address", at, v)
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// stringMatches turns Istio's match strings into StringMatches: "*" is
// presence, "*x" a suffix, "x*" a prefix, anything else exact.
func stringMatches(vals []string, at string, issues *ruleIssues) ([]*security.StringMatch, bool) {
	var out []*security.StringMatch
	for _, v := range vals {
		sm := &security.StringMatch{}
		switch {
		case v == "":
			issues.invalidf("%s: empty value", at)
			return nil, false
		case v == "*":
			sm.MatchType = &security.StringMatch_Presence{Presence: &emptypb.Empty{}}
		case strings.HasPrefix(v, "*"):
			sm.MatchType = &security.StringMatch_Suffix{Suffix: v[1:]}
		case strings.HasSuffix(v, "*"):
			sm.MatchType = &security.StringMatch_Prefix{Prefix: v[:len(v)-1]}
		default:
			sm.MatchType = &security.StringMatch_Exact{Exact: v}
		}
		out = append(out, sm)
	}
	return out, true
}

// serviceAccountMatches parses "namespace/name" or "name" (in the policy's
// namespace), with Istio's validation: no wildcard, no empty part.
func serviceAccountMatches(vals []string, namespace, at string, issues *ruleIssues) ([]*security.ServiceAccountMatch, bool) {
	var out []*security.ServiceAccountMatch
	for _, v := range vals {
		ns, sa, found := strings.Cut(v, "/")
		if !found {
			ns, sa = namespace, v
		}
		if strings.Contains(v, "*") || ns == "" || sa == "" || strings.Contains(sa, "/") {
			issues.invalidf("%s: %q is not a service account (\"name\" or \"namespace/name\", no wildcard)", at, v)
			return nil, false
		}
		out = append(out, &security.ServiceAccountMatch{Namespace: ns, ServiceAccount: sa})
	}
	return out, true
}

// workloadPolicies is a pod's authorization_policies, as Istio's
// buildWorkloadPolicies lists them: the selector policies of its namespace
// and of the root namespace whose selector it matches, sorted by resource
// name, then the converted PeerAuthentication policies in effect for it.
// Policies without a selector are not listed: ztunnel applies them by
// scope (GLOBAL, NAMESPACE).
func (b *builder) workloadPolicies(namespace string, lbls map[string]string) []string {
	var names []string
	for _, ap := range b.authz {
		ns := ap.out.GetNamespace()
		if ap.selected && (ns == namespace || ns == b.cfg.RootNamespace) && selects(ap.selector, lbls) {
			names = append(names, AuthorizationResourceName(ap.out))
		}
	}
	slices.Sort(names)
	return append(names, b.peerAuthenticationPolicies(namespace, lbls)...)
}

// indexPolicies translates the Snapshot's AuthorizationPolicies and reads
// its PeerAuthentications. Objects are taken in namespace/name order; a
// second object with the same name is reported and ignored.
func (b *builder) indexPolicies(snap Snapshot) {
	aps := slices.DeleteFunc(slices.Clone(snap.AuthorizationPolicies), func(p *AuthorizationPolicy) bool { return p == nil })
	slices.SortStableFunc(aps, func(x, y *AuthorizationPolicy) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for i, p := range aps {
		if i > 0 && aps[i-1].Namespace == p.Namespace && aps[i-1].Name == p.Name {
			b.problem(kindAuthorizationPolicy, p.Namespace, p.Name, "duplicate object in the snapshot; ignored")
			continue
		}
		if isWaypointPolicy(p) {
			// targetRefs attach the policy to a waypoint (or a Service's
			// waypoint); ztunnel never sees it.
			if wp := b.waypointPolicy(p); wp != nil {
				b.waypointPols = append(b.waypointPols, wp)
			}
			continue
		}
		if ap := b.authorizationPolicy(p); ap != nil {
			b.authz = append(b.authz, ap)
		}
	}
	pas := slices.DeleteFunc(slices.Clone(snap.PeerAuthentications), func(p *PeerAuthentication) bool { return p == nil })
	b.anyPeerAuth = len(pas) > 0
	slices.SortStableFunc(pas, func(x, y *PeerAuthentication) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for i, p := range pas {
		if i > 0 && pas[i-1].Namespace == p.Namespace && pas[i-1].Name == p.Name {
			b.problem(kindPeerAuthentication, p.Namespace, p.Name, "duplicate object in the snapshot; ignored")
			continue
		}
		if pa := b.peerAuthentication(p); pa != nil {
			b.peerAuths = append(b.peerAuths, pa)
		}
	}
}

// authorizations is every istio.security.Authorization resource, sorted
// by resource name.
func (b *builder) authorizations() []*security.Authorization {
	var out []*security.Authorization
	for _, ap := range b.authz {
		out = append(out, ap.out)
	}
	for _, pa := range b.peerAuths {
		if a := b.convertPeerAuthentication(pa); a != nil {
			out = append(out, a)
		}
	}
	if b.anyPeerAuth {
		out = append(out, staticStrictPolicy(b.cfg.RootNamespace))
	}
	slices.SortFunc(out, func(x, y *security.Authorization) int {
		return cmp.Compare(AuthorizationResourceName(x), AuthorizationResourceName(y))
	})
	return out
}
