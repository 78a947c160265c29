package model

import (
	"cmp"
	"slices"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// Labels and annotations the translation reads.
const (
	LabelDataplaneMode                  = "istio.io/dataplane-mode"
	DataplaneModeAmbient                = "ambient"
	DataplaneModeNone                   = "none"
	LabelUseWaypoint                    = "istio.io/use-waypoint"
	LabelUseWaypointNamespace           = "istio.io/use-waypoint-namespace"
	LabelWaypointFor                    = "istio.io/waypoint-for"
	LabelGatewayName                    = "gateway.networking.k8s.io/gateway-name"
	LabelGatewayManaged                 = "gateway.istio.io/managed"
	ManagedByMeshController             = "istio.io-mesh-controller"
	WaypointGatewayClass                = "istio-waypoint"
	LabelServiceWorkloadName            = "service.istio.io/workload-name"
	LabelCanonicalName                  = "service.istio.io/canonical-name"
	LabelCanonicalRevision              = "service.istio.io/canonical-revision"
	LabelTunnel                         = "networking.istio.io/tunnel"
	AnnotationAmbientRedirection        = "ambient.istio.io/redirection"
	AnnotationSidecarStatus             = "sidecar.istio.io/status"
	waypointForService                  = "service"
	waypointForWorkload                 = "workload"
	waypointForAll                      = "all"
	waypointForNone                     = "none"
	hboneMTLSPort                uint32 = 15008
)

// Snapshot is the set of Kubernetes objects one translation reads. Objects
// may be in any order; nil entries are ignored.
type Snapshot struct {
	Namespaces     []*corev1.Namespace
	Pods           []*corev1.Pod
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Gateways       []*gatewayv1.Gateway
	// AuthorizationPolicies and PeerAuthentications are security.istio.io
	// objects (v1 or v1beta1), their specs decoded with protojson.
	AuthorizationPolicies []*AuthorizationPolicy
	PeerAuthentications   []*PeerAuthentication
}

// ObjectRef names the Kubernetes object a Problem is about.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Problem is something in an object that could not be translated. The object
// (or the part named in Reason) was skipped; the rest of the view is intact.
type Problem struct {
	Ref    ObjectRef `json:"ref"`
	Reason string    `json:"reason"`
}

// View is Istio's ambient view of a Snapshot. Workloads are sorted by uid,
// Services by "<namespace>/<hostname>", Authorizations (the
// istio.security.Authorization resources) and WaypointPolicies by
// "<namespace>/<name>", Problems by object then reason.
type View struct {
	Workloads      []*workloadapi.Workload
	Services       []*workloadapi.Service
	Authorizations []*security.Authorization
	// WaypointPolicies are the AuthorizationPolicies with targetRefs,
	// compiled for waypoints (internal/routeapi, policy.proto).
	WaypointPolicies []*routeapi.WaypointPolicy
	Problems         []Problem
}

// Build translates snap into Istio's ambient view under cfg. It never fails:
// objects that cannot be translated are reported in View.Problems.
func Build(cfg Config, snap Snapshot) *View {
	b := newBuilder(cfg.withDefaults(), snap)
	v := &View{}
	for _, s := range b.services {
		if ws := b.service(s); ws != nil {
			v.Services = append(v.Services, ws)
		}
	}
	for _, p := range snap.Pods {
		if p == nil {
			continue
		}
		if w := b.workload(p); w != nil {
			v.Workloads = append(v.Workloads, w)
		}
	}
	v.Authorizations = b.authorizations()
	v.WaypointPolicies = b.waypointPolicies(v.Services)
	slices.SortFunc(v.Workloads, func(a, b *workloadapi.Workload) int { return cmp.Compare(a.Uid, b.Uid) })
	slices.SortFunc(v.Services, func(a, b *workloadapi.Service) int {
		return cmp.Compare(ServiceResourceName(a), ServiceResourceName(b))
	})
	v.Problems = SortProblems(b.problems)
	return v
}

// SortProblems sorts problems by object then reason and drops duplicates.
func SortProblems(ps []Problem) []Problem {
	slices.SortFunc(ps, func(a, b Problem) int {
		return cmp.Or(
			cmp.Compare(a.Ref.Kind, b.Ref.Kind),
			cmp.Compare(a.Ref.Namespace, b.Ref.Namespace),
			cmp.Compare(a.Ref.Name, b.Ref.Name),
			cmp.Compare(a.Reason, b.Reason),
		)
	})
	return slices.Compact(ps)
}

// builder holds the indexes one Build computes up front.
type builder struct {
	cfg        Config
	namespaces map[string]*corev1.Namespace
	gateways   map[nsName]*gatewayv1.Gateway
	svcByName  map[nsName]*corev1.Service
	services   []*corev1.Service // translatable services, sorted by namespace/name
	// slicePods maps a pod (by namespace/name) to the services whose
	// EndpointSlices reference it through targetRef.
	slicePods map[nsName][]string
	// authz are the translated AuthorizationPolicies, by namespace/name;
	// peerAuths the checked PeerAuthentications, by namespace/name.
	authz       []*authzPolicy
	peerAuths   []*peerAuth
	anyPeerAuth bool // any PeerAuthentication at all: send the static STRICT policy
	// waypointPols are the translated waypoint (targetRefs) policies, by
	// namespace/name.
	waypointPols []*waypointPol
	problems     []Problem
}

type nsName struct{ namespace, name string }

func newBuilder(cfg Config, snap Snapshot) *builder {
	b := &builder{
		cfg:        cfg,
		namespaces: map[string]*corev1.Namespace{},
		gateways:   map[nsName]*gatewayv1.Gateway{},
		svcByName:  map[nsName]*corev1.Service{},
		slicePods:  map[nsName][]string{},
	}
	for _, ns := range snap.Namespaces {
		if ns != nil {
			b.namespaces[ns.Name] = ns
		}
	}
	for _, g := range snap.Gateways {
		if g != nil {
			b.gateways[nsName{g.Namespace, g.Name}] = g
		}
	}
	for _, s := range snap.Services {
		if s == nil {
			continue
		}
		b.svcByName[nsName{s.Namespace, s.Name}] = s
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			// Istio does not model ExternalName services in ambient: DNS goes
			// upstream and ztunnel handles the resolved address (services.go).
			continue
		}
		b.services = append(b.services, s)
	}
	slices.SortFunc(b.services, func(x, y *corev1.Service) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for _, es := range snap.EndpointSlices {
		if es == nil {
			continue
		}
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		for _, ep := range es.Endpoints {
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				ns := cmp.Or(r.Namespace, es.Namespace)
				if ns != es.Namespace {
					continue
				}
				k := nsName{ns, r.Name}
				if !slices.Contains(b.slicePods[k], svc) {
					b.slicePods[k] = append(b.slicePods[k], svc)
				}
			}
		}
	}
	b.indexPolicies(snap)
	return b
}

func (b *builder) problem(kind, namespace, name, reason string) {
	b.problems = append(b.problems, Problem{Ref: ObjectRef{Kind: kind, Namespace: namespace, Name: name}, Reason: reason})
}

// ServiceResourceName is the istio.workload.Address resource name of a
// service: "<namespace>/<hostname>".
func ServiceResourceName(s *workloadapi.Service) string {
	return s.GetNamespace() + "/" + s.GetHostname()
}

// ServiceHostname is the cluster DNS name of a Kubernetes Service.
func ServiceHostname(name, namespace, domainSuffix string) string {
	return name + "." + namespace + ".svc." + domainSuffix
}
