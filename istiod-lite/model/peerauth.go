package model

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"istio.io/istio/pkg/workloadapi/security"
)

const (
	// StaticStrictPolicyName is the DENY-plaintext policy Istio sends, in the
	// root namespace, as soon as any PeerAuthentication exists; workloads
	// whose effective mode is STRICT name it in authorization_policies.
	StaticStrictPolicyName = "istio_converted_static_strict"
	// ConvertedPeerAuthenticationPrefix prefixes the name of the policy a
	// workload PeerAuthentication with port-level mTLS is converted to.
	// ('_' cannot occur in Kubernetes names, so neither name can clash.)
	ConvertedPeerAuthenticationPrefix = "converted_peer_authentication_"

	kindPeerAuthentication = "PeerAuthentication"
)

// PeerAuthentication is a security.istio.io PeerAuthentication (v1 and
// v1beta1 share the spec message), with the object fields the translation
// needs.
type PeerAuthentication struct {
	Namespace string
	Name      string
	// Generation is metadata.generation, for the status writer.
	Generation int64
	// CreationTimestamp settles conflicts as in Istio: of two namespace-wide
	// (or two matching workload) policies the oldest wins; ties go to the
	// first by name.
	CreationTimestamp time.Time
	// Spec is the decoded spec; a CR without one is an empty spec (mode
	// UNSET). Nil means the informer could not decode it: it is reported
	// and read as mode STRICT for the whole namespace (fails closed).
	Spec *securityv1beta1.PeerAuthentication
}

type mtlsMode = securityv1beta1.PeerAuthentication_MutualTLS_Mode

const (
	modeUnset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
	modeDisable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
	modePermissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	modeStrict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
)

// peerAuth is a checked PeerAuthentication.
type peerAuth struct {
	namespace, name string
	created         time.Time
	// selector is empty for a namespace-wide policy (mesh-wide in the root
	// namespace): Istio treats a selector without labels as none.
	selector map[string]string
	mode     mtlsMode
	// ports holds valid port-level modes, only for policies with a selector.
	ports map[uint32]mtlsMode
}

func (p *peerAuth) namespaceWide() bool { return len(p.selector) == 0 }

// peerAuthentication checks a PeerAuthentication, or returns nil when it
// is skipped (a selector that selects no pod).
func (b *builder) peerAuthentication(p *PeerAuthentication) *peerAuth {
	report := func(format string, args ...any) {
		b.problem(kindPeerAuthentication, p.Namespace, p.Name, fmt.Sprintf(format, args...))
	}
	out := &peerAuth{namespace: p.Namespace, name: p.Name, created: p.CreationTimestamp}
	spec := p.Spec
	if spec == nil {
		report("no spec (it could not be decoded): read as mode STRICT for the whole namespace (fails closed)")
		out.mode = modeStrict
		return out
	}
	if reason := selectorProblem(spec.GetSelector().GetMatchLabels()); reason != "" {
		report("%s; the policy selects no pod and is ignored", reason)
		return nil
	}
	out.selector = spec.GetSelector().GetMatchLabels()
	out.mode = checkedMode(spec.GetMtls().GetMode(), "mtls.mode", report)
	if len(spec.GetPortLevelMtls()) > 0 {
		if out.namespaceWide() {
			report("portLevelMtls needs a selector (a namespace-wide PeerAuthentication cannot have it); portLevelMtls ignored, as Istio does")
		} else {
			out.ports = map[uint32]mtlsMode{}
			for port, m := range spec.GetPortLevelMtls() {
				if port == 0 || port > 65535 {
					report("portLevelMtls port %d is not in 1-65535; ignored", port)
					continue
				}
				out.ports[port] = checkedMode(m.GetMode(), fmt.Sprintf("portLevelMtls[%d].mode", port), report)
			}
		}
	}
	if out.namespace == b.cfg.RootNamespace && !out.namespaceWide() {
		report("a PeerAuthentication with a selector in the root namespace %q has no effect on ztunnel (as in Istio)", b.cfg.RootNamespace)
	}
	return out
}

// checkedMode returns m, or STRICT (fails closed) for a value that is not a
// known mode.
func checkedMode(m mtlsMode, at string, report func(string, ...any)) mtlsMode {
	switch m {
	case modeUnset, modeDisable, modePermissive, modeStrict:
		return m
	}
	report("%s %d is not an mTLS mode; read as STRICT (fails closed)", at, m)
	return modeStrict
}

// olderPeerAuth returns the policy that wins a conflict: the oldest, the
// first by name on a tie (callers go in name order).
func olderPeerAuth(cur, p *peerAuth) *peerAuth {
	if cur == nil || p.created.Before(cur.created) {
		return p
	}
	return cur
}

// namespacePeerAuths returns the winning namespace-wide policy of namespace
// (nil in the root namespace) and the mesh-wide one.
func (b *builder) namespacePeerAuths(namespace string) (ns, mesh *peerAuth) {
	for _, p := range b.peerAuths {
		if !p.namespaceWide() {
			continue
		}
		switch p.namespace {
		case b.cfg.RootNamespace:
			mesh = olderPeerAuth(mesh, p)
		case namespace:
			ns = olderPeerAuth(ns, p)
		}
	}
	return ns, mesh
}

// inheritedStrict reports whether the mode a workload inherits is STRICT:
// the namespace policy's mode unless it is UNSET (or absent), then the
// mesh policy's; no policy at all is PERMISSIVE.
func inheritedStrict(ns, mesh *peerAuth) bool {
	if ns != nil && ns.mode != modeUnset {
		return ns.mode == modeStrict
	}
	return mesh != nil && mesh.mode == modeStrict
}

// hasPortMode reports whether any port-level mode of p is one of modes.
func (p *peerAuth) hasPortMode(modes ...mtlsMode) bool {
	for _, m := range p.ports {
		if slices.Contains(modes, m) {
			return true
		}
	}
	return false
}

// peerAuthenticationPolicies names the converted PeerAuthentication
// policies in effect for a workload, as Istio's
// convertedSelectorPeerAuthentications decides: the static STRICT policy
// when the effective mode is STRICT, or the workload policy's converted
// form when its port-level modes make exceptions. The workload policy is
// the oldest selector policy of the namespace matching the labels (none in
// the root namespace).
func (b *builder) peerAuthenticationPolicies(namespace string, lbls map[string]string) []string {
	ns, mesh := b.namespacePeerAuths(namespace)
	var wl *peerAuth
	for _, p := range b.peerAuths {
		if p.namespace == namespace && namespace != b.cfg.RootNamespace && !p.namespaceWide() && selects(p.selector, lbls) {
			wl = olderPeerAuth(wl, p)
		}
	}
	strict := inheritedStrict(ns, mesh)
	converted := false
	if wl != nil {
		switch wl.mode {
		case modeStrict:
			strict = true
			if wl.hasPortMode(modePermissive, modeDisable) {
				strict, converted = false, true
			}
		case modePermissive, modeDisable:
			strict = false
			converted = wl.hasPortMode(modeStrict)
		default: // UNSET: inherits, port-level modes make the exceptions
			if strict {
				// Istio looks only for PERMISSIVE here: a DISABLE port under
				// an inherited STRICT stays STRICT for ztunnel.
				if wl.hasPortMode(modePermissive) {
					strict, converted = false, true
				}
			} else {
				converted = wl.hasPortMode(modeStrict)
			}
		}
	}
	var names []string
	if strict {
		names = append(names, b.cfg.RootNamespace+"/"+StaticStrictPolicyName)
	}
	if converted {
		names = append(names, wl.namespace+"/"+ConvertedPeerAuthenticationPrefix+wl.name)
	}
	slices.Sort(names)
	return names
}

// convertPeerAuthentication is Istio's convertPeerAuthentication: a
// workload PeerAuthentication (selector, not in the root namespace) with
// port-level modes becomes a DENY policy that refuses plaintext where its
// effective mode is STRICT. Others convert to nothing: the static STRICT
// policy covers them.
func (b *builder) convertPeerAuthentication(p *peerAuth) *security.Authorization {
	if p.namespace == b.cfg.RootNamespace || p.namespaceWide() || len(p.ports) == 0 {
		return nil
	}
	ns, mesh := b.namespacePeerAuths(p.namespace)
	parentStrict := inheritedStrict(ns, mesh)
	// strictByDefault: ports without a port-level mode are STRICT.
	strictByDefault := p.mode == modeStrict || (p.mode == modeUnset && parentStrict)

	var groups []*security.Group
	var clauses []*security.Rules // one group, ANDed: deny plaintext except on exempt ports
	if p.mode == modeStrict {
		clauses = append(clauses, plaintextClause(nil))
	}
	exempt := false
	for _, port := range slices.Sorted(maps.Keys(p.ports)) {
		switch p.ports[port] {
		case modeStrict:
			if strictByDefault {
				continue
			}
			// A group of its own (groups are ORed): plaintext to this port.
			groups = append(groups, &security.Group{Rules: []*security.Rules{plaintextClause([]uint32{port})}})
		case modePermissive, modeDisable:
			if !strictByDefault {
				continue
			}
			exempt = true
			clauses = append(clauses, &security.Rules{Matches: []*security.Match{{NotDestinationPorts: []uint32{port}}}})
		}
	}
	if p.mode == modeStrict && !exempt {
		return nil
	}
	if len(clauses) == 0 && len(groups) == 0 {
		return nil
	}
	if parentStrict && exempt {
		// Merge the inherited STRICT into this policy: the workload names
		// this policy instead of the static one, since a second DENY could
		// not be overridden by these exceptions. (With mode STRICT the
		// clause is already there; Istio adds it again, and so do we.)
		clauses = append(clauses, plaintextClause(nil))
	}
	if len(clauses) > 0 {
		groups = append(groups, &security.Group{Rules: clauses})
	}
	return &security.Authorization{
		Name:      ConvertedPeerAuthenticationPrefix + p.name,
		Namespace: p.namespace,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_DENY,
		Groups:    groups,
	}
}

// staticStrictPolicy denies plaintext (no peer identity) to the workloads
// that name it.
func staticStrictPolicy(rootNamespace string) *security.Authorization {
	return &security.Authorization{
		Name:      StaticStrictPolicyName,
		Namespace: rootNamespace,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_DENY,
		Groups:    []*security.Group{{Rules: []*security.Rules{plaintextClause(nil)}}},
	}
}

// plaintextClause matches connections without a peer identity, to ports
// when given.
func plaintextClause(ports []uint32) *security.Rules {
	return &security.Rules{Matches: []*security.Match{{
		NotPrincipals: []*security.StringMatch{{
			MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}},
		}},
		DestinationPorts: ports,
	}}}
}
