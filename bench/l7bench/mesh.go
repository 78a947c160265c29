package l7bench

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/routeapi"
	"github.com/ambientlite/mesh/istiod-lite/model"
	"github.com/ambientlite/mesh/istiod-lite/route"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

//go:embed mesh.yaml
var meshYAML []byte

// meshResources are the xDS resources of the benchmark's mesh, by type URL
// then resource name, as istiod-lite's pipeline stores them: the workloads
// and Services (istio.workload.Address), the L4 policies
// (istio.security.Authorization, none here) and the compiled routes
// (ambientlite.route.v1.ServiceRoutes).
type meshResources map[string]map[string]proto.Message

// compileMesh translates mesh.yaml with istiod-lite's translation
// (model.Build) and route compiler (route.Compile), default settings. A
// problem in either is an error: the benchmark's mesh must translate
// cleanly.
func compileMesh() (meshResources, error) {
	snap, routes, err := decodeMesh(meshYAML)
	if err != nil {
		return nil, err
	}
	view := model.Build(model.Config{}, snap)
	compiled := route.Compile(route.Config{}, route.Snapshot{Namespaces: snap.Namespaces, Services: snap.Services, HTTPRoutes: routes})
	var problems []string
	for _, p := range append(view.Problems, compiled.Problems...) {
		problems = append(problems, fmt.Sprintf("%s %s/%s: %s", p.Ref.Kind, p.Ref.Namespace, p.Ref.Name, p.Reason))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("mesh.yaml does not translate cleanly: %s", strings.Join(problems, "; "))
	}
	res := meshResources{xds.AddressType: {}, xds.AuthorizationType: {}, routeapi.TypeURL: {}}
	for _, w := range view.Workloads {
		res[xds.AddressType][w.GetUid()] = &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	}
	for _, s := range view.Services {
		res[xds.AddressType][model.ServiceResourceName(s)] = &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
	}
	for _, a := range view.Authorizations {
		res[xds.AuthorizationType][model.AuthorizationResourceName(a)] = a
	}
	for _, t := range compiled.Tables {
		res[routeapi.TypeURL][t.ResourceName()] = t
	}
	return res, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeMesh reads multi-document Kubernetes YAML into the translation's
// snapshot and the HTTPRoutes.
func decodeMesh(data []byte) (model.Snapshot, []*gatewayv1.HTTPRoute, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, gatewayv1.Install} {
		if err := add(scheme); err != nil {
			return model.Snapshot{}, nil, err
		}
	}
	decode := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode
	var snap model.Snapshot
	var routes []*gatewayv1.HTTPRoute
	for i, doc := range docSeparator.Split(string(data), -1) {
		if isBlank(doc) {
			continue
		}
		obj, _, err := decode([]byte(doc), nil, nil)
		if err != nil {
			return model.Snapshot{}, nil, fmt.Errorf("mesh.yaml document %d: %w", i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			snap.Namespaces = append(snap.Namespaces, o)
		case *corev1.Pod:
			snap.Pods = append(snap.Pods, o)
		case *corev1.Service:
			snap.Services = append(snap.Services, o)
		case *discoveryv1.EndpointSlice:
			snap.EndpointSlices = append(snap.EndpointSlices, o)
		case *gatewayv1.Gateway:
			snap.Gateways = append(snap.Gateways, o)
		case *gatewayv1.HTTPRoute:
			routes = append(routes, o)
		default:
			return model.Snapshot{}, nil, fmt.Errorf("mesh.yaml document %d: unexpected %T", i, obj)
		}
	}
	return snap, routes, nil
}

// isBlank reports whether a YAML document holds only comments and space.
func isBlank(doc string) bool {
	for l := range strings.SplitSeq(doc, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}
