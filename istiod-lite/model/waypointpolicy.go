package model

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// What a waypoint policy's targetRefs may name (Istio's allowed targetRef
// kinds; the group of a core kind is "" or "core").
const (
	groupGatewayAPI  = "gateway.networking.k8s.io"
	groupIstioNet    = "networking.istio.io"
	kindGateway      = "Gateway"
	kindGatewayClass = "GatewayClass"
	kindService      = "Service"
	kindServiceEntry = "ServiceEntry"
)

// waypointWords are the Problem words for rules a waypoint cannot evaluate.
var waypointWords = enforcerWords{unsupported: "a waypoint does not evaluate"}

// waypointPol is a translated waypoint AuthorizationPolicy.
type waypointPol struct {
	out *routeapi.WaypointPolicy
	// services are its Service targets that exist, with the field that
	// names them, for the check that they use a waypoint (which needs the
	// translated Services).
	services []serviceTarget
}

type serviceTarget struct {
	at  string // "targetRefs[1]"
	ref nsName
}

// isWaypointPolicy reports whether an AuthorizationPolicy attaches to
// waypoints (targetRef or targetRefs) rather than to ztunnels. A nil Spec
// is ztunnel's: whatever it meant, it fails closed there.
func isWaypointPolicy(p *AuthorizationPolicy) bool {
	return p.Spec != nil && (len(p.Spec.GetTargetRefs()) > 0 || p.Spec.GetTargetRef() != nil)
}

// waypointPolicy translates an AuthorizationPolicy with targetRefs into a
// WaypointPolicy, as Istio builds a waypoint's RBAC filters, or returns nil
// when no waypoint gets it (dry-run, AUDIT, no usable target).
func (b *builder) waypointPolicy(p *AuthorizationPolicy) *waypointPol {
	report := func(format string, args ...any) {
		b.problem(kindAuthorizationPolicy, p.Namespace, p.Name, fmt.Sprintf(format, args...))
	}
	spec := p.Spec
	if v := p.Annotations[AnnotationDryRun]; v != "" {
		dry, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			report("annotation %s=%q is not a boolean; the policy is enforced", AnnotationDryRun, v)
		case dry:
			report("dry-run policies (%s) are not served to waypoints; the policy has no effect", AnnotationDryRun)
			return nil
		}
	}
	if spec.GetSelector() != nil {
		report("both selector and targetRefs are set, only one may be; the targetRefs make it a waypoint policy and ztunnel does not enforce it")
	}

	out := &routeapi.WaypointPolicy{Name: p.Name, Namespace: p.Namespace}
	wp := &waypointPol{out: out}
	// Istio's GetTargetRefs: targetRefs, else the deprecated targetRef.
	refs := spec.GetTargetRefs()
	at := func(i int) string { return fmt.Sprintf("targetRefs[%d]", i) }
	if len(refs) == 0 {
		refs = []*typev1beta1.PolicyTargetReference{spec.GetTargetRef()}
		at = func(int) string { return "targetRef" }
	} else if spec.GetTargetRef() != nil {
		report("both targetRef and targetRefs are set, only one may be; targetRef is ignored (as in Istio)")
	}
	for i, ref := range refs {
		t, svc := b.policyTarget(p.Namespace, at(i), ref, report)
		if t == nil || slices.ContainsFunc(out.Targets, func(o *routeapi.PolicyTarget) bool { return proto.Equal(o, t) }) {
			continue
		}
		out.Targets = append(out.Targets, t)
		if svc != nil {
			wp.services = append(wp.services, serviceTarget{at: at(i), ref: *svc})
		}
	}
	if len(out.Targets) == 0 {
		report("no usable targetRef; the policy is not served to any waypoint")
		return nil
	}

	switch spec.GetAction() {
	case securityv1beta1.AuthorizationPolicy_ALLOW:
		out.Action = routeapi.PolicyAction_POLICY_ACTION_ALLOW
	case securityv1beta1.AuthorizationPolicy_DENY:
		out.Action = routeapi.PolicyAction_POLICY_ACTION_DENY
		if len(spec.GetRules()) == 0 {
			report("a DENY policy without rules denies nothing (Istio's validation rejects it); add a rule {} to deny every request")
		}
	case securityv1beta1.AuthorizationPolicy_CUSTOM:
		// As Istio does when a CUSTOM provider is unusable: deny what the
		// rules would have sent to the external authorizer.
		out.Action = routeapi.PolicyAction_POLICY_ACTION_DENY
		report("action CUSTOM (provider %q) needs an external authorizer, which waypoints do not have; served as a DENY of the requests its rules match (fails closed)",
			spec.GetProvider().GetName())
	case securityv1beta1.AuthorizationPolicy_AUDIT:
		report("waypoints do not implement action AUDIT (no audit log); the policy is not served")
		return nil
	default:
		report("waypoints do not enforce action %s (only ALLOW, DENY and, as DENY, CUSTOM); the policy is not served", spec.GetAction())
		return nil
	}
	allow := out.Action == routeapi.PolicyAction_POLICY_ACTION_ALLOW
	for i, r := range spec.GetRules() {
		pr, issues := translateWaypointRule(allow, r, p.Namespace)
		if reason := issues.describe(i, allow, waypointWords); reason != "" {
			report("%s", reason)
		}
		if pr != nil {
			out.Rules = append(out.Rules, pr)
		}
	}
	return wp
}

// policyTarget resolves one targetRef as Istio's ShouldAttachPolicy does for
// waypoints: a Gateway or a Service in the policy's own namespace. It
// returns nil for a target that can never apply (reported), and the
// Service's name for a Service that exists.
func (b *builder) policyTarget(namespace, at string, ref *typev1beta1.PolicyTargetReference, report func(string, ...any)) (*routeapi.PolicyTarget, *nsName) {
	group := ref.GetGroup()
	if group == "core" {
		group = ""
	}
	kind, name := ref.GetKind(), ref.GetName()
	what := kind + " " + name
	if group != "" {
		what = kind + "." + group + " " + name
	}
	switch {
	case name == "":
		report("%s (%s) has no name; that target is ignored", at, kind)
		return nil, nil
	case ref.GetNamespace() != "" && ref.GetNamespace() != namespace:
		report("%s (%s) names namespace %q: cross-namespace targets are not supported, as in Istio; that target is ignored", at, what, ref.GetNamespace())
		return nil, nil
	}
	key := nsName{namespace, name}
	switch {
	case group == groupGatewayAPI && kind == kindGateway:
		switch gw := b.gateways[key]; {
		case gw == nil:
			report("%s: Gateway %s/%s does not exist; the policy applies to it once it does", at, namespace, name)
		case gw.Spec.GatewayClassName != WaypointGatewayClass:
			report("%s: Gateway %s/%s is of class %q, not a waypoint (%q); no waypoint enforces the policy for it",
				at, namespace, name, gw.Spec.GatewayClassName, WaypointGatewayClass)
		}
		return &routeapi.PolicyTarget{Kind: &routeapi.PolicyTarget_Gateway{Gateway: &routeapi.GatewayRef{Namespace: namespace, Name: name}}}, nil
	case group == "" && kind == kindService:
		t := &routeapi.PolicyTarget{Kind: &routeapi.PolicyTarget_ServiceHostname{ServiceHostname: ServiceHostname(name, namespace, b.cfg.DomainSuffix)}}
		if b.svcByName[key] == nil {
			report("%s: Service %s/%s does not exist; the policy applies to it once it does (and uses a waypoint)", at, namespace, name)
			return t, nil
		}
		return t, &key
	case group == groupGatewayAPI && kind == kindGatewayClass:
		report("%s (%s): policies for every waypoint of a GatewayClass are not supported; that target is ignored", at, what)
	case group == groupIstioNet && kind == kindServiceEntry:
		report("%s (%s): ServiceEntries are not supported; that target is ignored", at, what)
	default:
		report("%s (%s): a waypoint policy targets a Gateway (group %s) or a Service (core group); that target is ignored", at, what, groupGatewayAPI)
	}
	return nil, nil
}

// waypointPolicies checks that the Service targets have a waypoint
// (reported when they do not, as Istio's policy status does: the policy has
// no effect there) and returns the policies sorted by resource name.
func (b *builder) waypointPolicies(services []*workloadapi.Service) []*routeapi.WaypointPolicy {
	withWaypoint := map[nsName]bool{}
	for _, s := range services {
		withWaypoint[nsName{s.GetNamespace(), s.GetName()}] = s.GetWaypoint() != nil
	}
	var out []*routeapi.WaypointPolicy
	for _, wp := range b.waypointPols {
		for _, st := range wp.services {
			if !withWaypoint[st.ref] {
				b.problem(kindAuthorizationPolicy, wp.out.GetNamespace(), wp.out.GetName(), fmt.Sprintf(
					"%s: Service %s/%s has no usable waypoint (label %s, or see the Service's own problems); the policy has no effect on its traffic until it has one",
					st.at, st.ref.namespace, st.ref.name, LabelUseWaypoint))
			}
		}
		out = append(out, wp.out)
	}
	slices.SortFunc(out, func(x, y *routeapi.WaypointPolicy) int { return cmp.Compare(x.ResourceName(), y.ResourceName()) })
	return out
}

// translateWaypointRule turns one AuthorizationPolicy rule into a
// PolicyRule. What a waypoint cannot evaluate never weakens the policy: in
// an ALLOW policy the rule is omitted (nil); in a DENY policy the attribute,
// field or condition is ignored, so the rule matches more requests (an
// entry left empty matches every request).
func translateWaypointRule(allow bool, r *securityv1beta1.Rule, namespace string) (*routeapi.PolicyRule, ruleIssues) {
	var issues ruleIssues
	if r == nil {
		issues.invalidf("the rule is null")
		if allow {
			return nil, issues
		}
		return &routeapi.PolicyRule{}, issues // matches every request
	}
	out := &routeapi.PolicyRule{}
	for j, from := range r.GetFrom() {
		out.From = append(out.From, policySource(from, namespace, fmt.Sprintf("from[%d]", j), &issues))
	}
	for j, to := range r.GetTo() {
		out.To = append(out.To, policyOperation(to, fmt.Sprintf("to[%d]", j), &issues))
	}
	for j, c := range r.GetWhen() {
		if pc := policyCondition(c, namespace, fmt.Sprintf("when[%d]", j), &issues); pc != nil {
			out.When = append(out.When, pc)
		}
	}
	if allow && !issues.empty() {
		return nil, issues
	}
	return out, issues
}

// policySource translates a `from` entry.
func policySource(from *securityv1beta1.Rule_From, namespace, at string, issues *ruleIssues) *routeapi.PolicySource {
	out := &routeapi.PolicySource{}
	s := checkSource(from, at, issues)
	if s == nil {
		return out
	}
	at += ".source."
	out.Principals, _ = matchValues(s.GetPrincipals(), at+"principals", issues)
	out.NotPrincipals, _ = matchValues(s.GetNotPrincipals(), at+"notPrincipals", issues)
	out.Namespaces, _ = namespaceValues(s.GetNamespaces(), at+"namespaces", issues)
	out.NotNamespaces, _ = namespaceValues(s.GetNotNamespaces(), at+"notNamespaces", issues)
	out.IpBlocks, _ = cidrValues(s.GetIpBlocks(), at+"ipBlocks", issues)
	out.NotIpBlocks, _ = cidrValues(s.GetNotIpBlocks(), at+"notIpBlocks", issues)
	sas, _ := serviceAccountPrincipals(s.GetServiceAccounts(), namespace, at+"serviceAccounts", issues)
	if len(sas) > 0 && len(s.GetPrincipals()) > 0 {
		// Istio ANDs the two; one principals field cannot (and Istio's
		// validation rejects the combination). In a DENY rule the service
		// accounts are ignored.
		issues.invalidf("%s sets both principals and serviceAccounts, which Istio rejects (a waypoint cannot AND them)", strings.TrimSuffix(at, "."))
	} else {
		out.Principals = append(out.Principals, sas...)
	}
	notSAs, _ := serviceAccountPrincipals(s.GetNotServiceAccounts(), namespace, at+"notServiceAccounts", issues)
	out.NotPrincipals = append(out.NotPrincipals, notSAs...)
	return out
}

// policyOperation translates a `to` entry.
func policyOperation(to *securityv1beta1.Rule_To, at string, issues *ruleIssues) *routeapi.PolicyOperation {
	out := &routeapi.PolicyOperation{}
	op := to.GetOperation()
	if op == nil {
		issues.invalidf("%s has no operation", at)
		return out
	}
	if proto.Size(op) == 0 {
		issues.invalidf("%s.operation is empty", at)
	}
	at += ".operation."
	out.Hosts, _ = matchValues(op.GetHosts(), at+"hosts", issues)
	out.NotHosts, _ = matchValues(op.GetNotHosts(), at+"notHosts", issues)
	out.Methods, _ = matchValues(op.GetMethods(), at+"methods", issues)
	out.NotMethods, _ = matchValues(op.GetNotMethods(), at+"notMethods", issues)
	out.Paths, _ = pathValues(op.GetPaths(), at+"paths", issues)
	out.NotPaths, _ = pathValues(op.GetNotPaths(), at+"notPaths", issues)
	out.Ports, _ = ports(op.GetPorts(), at+"ports", issues)
	out.NotPorts, _ = ports(op.GetNotPorts(), at+"notPorts", issues)
	return out
}

// Condition keys only a waypoint evaluates (the others are ztunnel's too).
const (
	attrRequestHeaders       = "request.headers["
	attrSourceServiceAccount = "source.serviceAccount"
)

// policyCondition translates a `when` condition, or returns nil when it is
// dropped (not evaluated by waypoints, or malformed).
func policyCondition(c *securityv1beta1.Condition, namespace, at string, issues *ruleIssues) *routeapi.PolicyCondition {
	if c == nil {
		issues.invalidf("%s is null", at)
		return nil
	}
	key := c.GetKey()
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		issues.invalidf("%s (%s) has neither values nor notValues", at, key)
		return nil
	}
	out := &routeapi.PolicyCondition{Key: key}
	var parse func(vals []string, at string, issues *ruleIssues) ([]string, bool)
	switch {
	case key == attrSourceIP, key == attrDestinationIP:
		parse = cidrValues
	case key == attrDestinationPort:
		parse = portValues
	case key == attrSourceNamespace:
		parse = namespaceValues
	case key == attrSourcePrincipal:
		parse = matchValues
	case key == attrSourceServiceAccount:
		out.Key = attrSourcePrincipal
		parse = func(vals []string, at string, issues *ruleIssues) ([]string, bool) {
			return serviceAccountPrincipals(vals, namespace, at, issues)
		}
	case strings.HasPrefix(key, attrRequestHeaders):
		name, ok := strings.CutSuffix(strings.TrimPrefix(key, attrRequestHeaders), "]")
		name = strings.ToLower(name)
		switch {
		case !ok || name == "" || strings.ContainsAny(name, "[]"):
			issues.invalidf("%s has malformed key %q (want request.headers[<name>])", at, key)
			return nil
		case strings.HasPrefix(name, ":") && name != ":authority" && name != ":method":
			issues.unsupportedIf(true, key)
			return nil
		}
		out.Key = attrRequestHeaders + name + "]"
		parse = matchValues
	default:
		if httpConditionKey(key) {
			issues.unsupportedIf(true, key)
		} else {
			issues.invalidf("%s has unknown key %q", at, key)
		}
		return nil
	}
	var ok, notOK bool
	out.Values, ok = parse(c.GetValues(), at+".values", issues)
	out.NotValues, notOK = parse(c.GetNotValues(), at+".notValues", issues)
	if !ok || !notOK {
		return nil // a partly malformed condition is dropped whole
	}
	return out
}

// matchValues checks Istio match strings ("x", "x*", "*x", "*"): none may
// be empty. On a malformed value it records it and returns nil, false: the
// caller drops the whole field.
func matchValues(vals []string, at string, issues *ruleIssues) ([]string, bool) {
	for _, v := range vals {
		if v == "" {
			issues.invalidf("%s: empty value", at)
			return nil, false
		}
	}
	return slices.Clone(vals), true
}

// namespaceValues checks namespace match strings. Istio turns every '*' of
// a namespace into a regular-expression wildcard; a waypoint matches only a
// leading or trailing one, so any other is not evaluated.
func namespaceValues(vals []string, at string, issues *ruleIssues) ([]string, bool) {
	out, ok := matchValues(vals, at, issues)
	if !ok {
		return nil, false
	}
	for _, v := range vals {
		n := strings.Count(v, "*")
		if n > 1 || n == 1 && !strings.HasPrefix(v, "*") && !strings.HasSuffix(v, "*") {
			issues.unsupportedIf(true, fmt.Sprintf("%s %q: a '*' inside", at, v))
			return nil, false
		}
	}
	return out, true
}

// pathValues checks path match strings; Istio's path templates ("{*}",
// "{**}") are not evaluated by waypoints.
func pathValues(vals []string, at string, issues *ruleIssues) ([]string, bool) {
	out, ok := matchValues(vals, at, issues)
	if !ok {
		return nil, false
	}
	for _, v := range vals {
		if strings.ContainsAny(v, "{}") {
			issues.unsupportedIf(true, fmt.Sprintf("%s %q: path templates", at, v))
			return nil, false
		}
	}
	return out, true
}

// cidrValues parses IPs and CIDR ranges into canonical CIDRs (host bits
// masked, a single IP as /32 or /128).
func cidrValues(vals []string, at string, issues *ruleIssues) ([]string, bool) {
	var out []string
	for _, v := range vals {
		p, ok := parseAddress(v, at, issues)
		if !ok {
			return nil, false
		}
		out = append(out, p.Masked().String())
	}
	return out, true
}

// portValues parses port numbers into canonical decimal strings.
func portValues(vals []string, at string, issues *ruleIssues) ([]string, bool) {
	ps, ok := ports(vals, at, issues)
	if !ok {
		return nil, false
	}
	var out []string
	for _, p := range ps {
		out = append(out, strconv.FormatUint(uint64(p), 10))
	}
	return out, true
}

// serviceAccountPrincipals turns service accounts ("namespace/name", or
// "name" in the policy's namespace) into principals of any trust domain,
// "*/ns/<namespace>/sa/<name>".
func serviceAccountPrincipals(vals []string, namespace, at string, issues *ruleIssues) ([]string, bool) {
	sas, ok := serviceAccountMatches(vals, namespace, at, issues)
	if !ok {
		return nil, false
	}
	var out []string
	for _, sa := range sas {
		out = append(out, "*/ns/"+sa.GetNamespace()+"/sa/"+sa.GetServiceAccount())
	}
	return out, true
}
