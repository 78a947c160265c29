package state

// The control plane's output, read by the data plane: istiod-lite's
// model.Build (imported by this test only) translates testdata/mesh.yaml, the
// Store reads the resources through its xdsclient handlers, and the policy
// matrix and destinations are what users of Istio would expect of those
// Kubernetes objects.

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/xdsclient"
	"github.com/ambientlite/mesh/istiod-lite/model"
)

var yamlDocSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// loadSnapshot reads multi-document Kubernetes YAML as istiod-lite's
// informers would: core and Gateway API objects with the API machinery,
// security.istio.io specs with protojson.
func loadSnapshot(t testing.TB, path string) model.Snapshot {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, gatewayv1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decode := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode
	var snap model.Snapshot
	for i, doc := range yamlDocSeparator.Split(string(data), -1) {
		js, err := yaml.ToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if strings.TrimSpace(string(js)) == "null" {
			continue // comments only
		}
		var head struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
			Spec            json.RawMessage   `json:"spec"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		m := head.Metadata
		switch head.Kind {
		case "AuthorizationPolicy":
			p := &model.AuthorizationPolicy{Namespace: m.Namespace, Name: m.Name, Annotations: m.Annotations, Spec: &securityv1beta1.AuthorizationPolicy{}}
			if err := protojson.Unmarshal(head.Spec, p.Spec); err != nil {
				t.Fatalf("document %d: %v", i, err)
			}
			snap.AuthorizationPolicies = append(snap.AuthorizationPolicies, p)
			continue
		case "PeerAuthentication":
			p := &model.PeerAuthentication{Namespace: m.Namespace, Name: m.Name, Spec: &securityv1beta1.PeerAuthentication{}}
			if err := protojson.Unmarshal(head.Spec, p.Spec); err != nil {
				t.Fatalf("document %d: %v", i, err)
			}
			snap.PeerAuthentications = append(snap.PeerAuthentications, p)
			continue
		}
		obj, _, err := decode(js, nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
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
		default:
			t.Fatalf("document %d: unexpected %T", i, obj)
		}
	}
	return snap
}

// storeFromModel translates path with model.Build and feeds the result to
// a Store through its xdsclient handlers, as the config server names and
// sends the resources.
func storeFromModel(t testing.TB, path string) (*Store, *model.View) {
	t.Helper()
	v := model.Build(model.Config{}, loadSnapshot(t, path))
	for _, p := range v.Problems {
		t.Errorf("model problem: %+v", p)
	}
	var addrs, pols []xdsclient.Resource
	add := func(list *[]xdsclient.Resource, name string, msg *anypb.Any, err error) {
		if err != nil {
			t.Fatal(err)
		}
		*list = append(*list, xdsclient.Resource{Name: name, Version: "1", Any: msg})
	}
	for _, w := range v.Workloads {
		a, err := anypb.New(wAddr(w))
		add(&addrs, w.GetUid(), a, err)
	}
	for _, s := range v.Services {
		a, err := anypb.New(sAddr(s))
		add(&addrs, model.ServiceResourceName(s), a, err)
	}
	for _, p := range v.Authorizations {
		a, err := anypb.New(p)
		add(&pols, model.AuthorizationResourceName(p), a, err)
	}
	s := New(Config{Node: "node-a"})
	if err := s.AddressHandler()(addrs, nil); err != nil {
		t.Fatalf("addresses: %v", err)
	}
	if err := s.AuthorizationHandler()(pols, nil); err != nil {
		t.Fatalf("authorizations: %v", err)
	}
	return s, v
}

func TestControlPlanePolicyMatrix(t *testing.T) {
	s, v := storeFromModel(t, "testdata/mesh.yaml")
	// Every policy a workload names was sent.
	for _, w := range v.Workloads {
		for _, name := range w.GetAuthorizationPolicies() {
			if s.Policy(name) == nil {
				t.Errorf("workload %s names policy %s, not held", w.GetName(), name)
			}
		}
	}
	plaintext := hbone.Identity{}
	tests := []struct {
		name   string
		from   hbone.Identity
		src    string
		to     string
		allow  bool
		policy string
	}{
		{"same namespace", id("shop", "cart"), "10.244.0.10", "10.244.0.20:8080", true, "shop/allow-same-namespace"},
		{"frontend to web by principal prefix", id("frontend", "ui"), "10.244.2.10", "10.244.0.20:8080", true, "shop/web-allow-frontend"},
		{"frontend to web, other port", id("frontend", "ui"), "10.244.2.10", "10.244.0.20:9999", false, ""},
		{"frontend to cart", id("frontend", "ui"), "10.244.2.10", "10.244.0.10:9080", false, ""},
		{"cart to db", id("shop", "cart"), "10.244.0.10", "10.244.0.30:15432", true, "shop/allow-same-namespace"},
		{"web to db: deny beats the namespace allow", id("shop", "web"), "10.244.0.20", "10.244.0.30:15432", false, "shop/db-only-cart"},
		{"plaintext to db: the selector deny comes first", plaintext, "10.244.9.1", "10.244.0.30:15432", false, "shop/db-only-cart"},
		{"plaintext to a STRICT namespace", plaintext, "10.244.9.1", "10.244.0.20:8080", false, "istio-system/" + model.StaticStrictPolicyName},
		{"plaintext to cart's PERMISSIVE port, allowed by source IP", plaintext, "10.244.9.1", "10.244.0.10:9090", true, "shop/cart-admin-legacy"},
		{"plaintext to cart's STRICT port", plaintext, "10.244.9.1", "10.244.0.10:9080", false, "shop/" + model.ConvertedPeerAuthenticationPrefix + "cart-admin"},
		{"mTLS to cart's admin port from elsewhere", id("frontend", "ui"), "10.244.2.10", "10.244.0.10:9090", false, ""},
		{"global deny, no other policy", id("evil", "x"), "10.244.8.1", "10.244.3.10:8080", false, "istio-system/deny-evil"},
		{"global deny in a namespace with policies", id("evil", "x"), "10.244.8.1", "10.244.0.20:8080", false, "istio-system/deny-evil"},
		{"no policy", id("frontend", "ui"), "10.244.2.10", "10.244.3.10:8080", true, ""},
		{"no policy, plaintext (PERMISSIVE)", plaintext, "10.244.9.1", "10.244.3.10:8080", true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			allowed, pol := s.Authorize(ConnInfo{
				SourceIdentity: tc.from,
				Source:         ap(tc.src + ":40000"),
				Destination:    ap(tc.to),
			})
			if allowed != tc.allow || pol != tc.policy {
				t.Errorf("Authorize = %v, %q; want %v, %q", allowed, pol, tc.allow, tc.policy)
			}
		})
	}
}

func TestControlPlaneDestinations(t *testing.T) {
	s, _ := storeFromModel(t, "testdata/mesh.yaml")
	cart := s.SourceWorkload(addr("10.244.0.10"))
	if cart == nil || cart.Name != "cart-0" || cart.Protocol != HBONE {
		t.Fatalf("SourceWorkload(cart-0) = %+v", cart)
	}
	tests := []struct {
		dialed string
		want   dest
	}{
		// web-1 is not Ready: never picked.
		{"10.96.0.20:80", dest{"direct", "HBONE", "10.244.0.20:15008", "10.244.0.20:8080", "web-0", "web.shop", "spiffe://cluster.local/ns/shop/sa/web"}},
		// A named target port, resolved per pod by the control plane.
		{"10.96.0.30:5432", dest{"direct", "HBONE", "10.244.0.30:15008", "10.244.0.30:15432", "db-0", "db.shop", "spiffe://cluster.local/ns/shop/sa/db"}},
		// A namespace waypoint: HBONE to the waypoint pod, authority = VIP:port.
		{"10.96.3.10:80", dest{"waypoint", "HBONE", "10.244.3.100:15008", "10.96.3.10:80", "waypoint-0", "inventory.store", "spiffe://cluster.local/ns/store/sa/waypoint"}},
		// Service waypoints are for service traffic: the pod IP goes direct.
		{"10.244.3.10:8080", dest{"direct", "HBONE", "10.244.3.10:15008", "10.244.3.10:8080", "inv-0", "", "spiffe://cluster.local/ns/store/sa/inventory"}},
		// Out of the mesh: plain TCP.
		{"10.96.9.1:80", dest{"direct", "TCP", "10.244.9.1:8080", "", "old-0", "old.legacy", "spiffe://cluster.local/ns/legacy/sa/old"}},
		{"1.1.1.1:443", dest{Kind: "passthrough", Address: "1.1.1.1:443"}},
	}
	for _, tc := range tests {
		t.Run(tc.dialed, func(t *testing.T) {
			a := ap(tc.dialed)
			d, err := s.DestinationFor(cart.Network, a.Addr(), a.Port(), cart)
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(d); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if got := len(s.WorkloadsOnNode("node-b")); got != 1 {
		t.Errorf("node-b has %d workloads, want 1 (web-1)", got)
	}
}
