package model

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/yaml"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestGolden translates each testdata/<case>.yaml and compares the result,
// as protojson, with testdata/<case>.golden.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.yaml cases")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			snap := loadSnapshot(t, in)
			v := Build(Config{}, snap)
			checkPolicyNames(t, v)
			got := renderView(t, v)
			golden.Check(t, strings.TrimSuffix(in, ".yaml")+".golden", got, *update)
		})
	}
}

// TestBuildDeterministic checks that input order does not change the output.
func TestBuildDeterministic(t *testing.T) {
	snap := loadSnapshot(t, "testdata/multiple_services.yaml")
	want := renderView(t, Build(Config{}, snap))
	reverse := func(n int, swap func(i, j int)) {
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			swap(i, j)
		}
	}
	reverse(len(snap.Pods), func(i, j int) { snap.Pods[i], snap.Pods[j] = snap.Pods[j], snap.Pods[i] })
	reverse(len(snap.Services), func(i, j int) { snap.Services[i], snap.Services[j] = snap.Services[j], snap.Services[i] })
	if diff := cmp.Diff(string(want), string(renderView(t, Build(Config{}, snap)))); diff != "" {
		t.Errorf("output depends on input order (-first +reversed):\n%s", diff)
	}
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// loadSnapshot reads multi-document Kubernetes YAML into a Snapshot.
// security.istio.io documents (AuthorizationPolicy, PeerAuthentication) are
// read as an informer would: metadata as Kubernetes JSON, spec with protojson.
func loadSnapshot(t *testing.T, path string) Snapshot {
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
	var snap Snapshot
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		if istioObject(t, path, i, doc, &snap) {
			continue
		}
		obj, _, err := decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
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
			t.Fatalf("%s: document %d: unexpected %T", path, i, obj)
		}
	}
	return snap
}

// istioObject adds doc to snap if it is a security.istio.io object.
func istioObject(t *testing.T, path string, i int, doc string, snap *Snapshot) bool {
	t.Helper()
	js, err := yaml.ToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("%s: document %d: %v", path, i, err)
	}
	var obj struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            json.RawMessage   `json:"spec"`
	}
	if err := json.Unmarshal(js, &obj); err != nil {
		t.Fatalf("%s: document %d: %v", path, i, err)
	}
	if obj.APIVersion != "security.istio.io/v1" && obj.APIVersion != "security.istio.io/v1beta1" {
		return false
	}
	spec := []byte(obj.Spec)
	if len(spec) == 0 || string(spec) == "null" {
		spec = []byte("{}")
	}
	m := obj.Metadata
	switch obj.Kind {
	case "AuthorizationPolicy":
		p := &AuthorizationPolicy{Namespace: m.Namespace, Name: m.Name, Generation: m.Generation, Annotations: m.Annotations,
			Spec: &securityv1beta1.AuthorizationPolicy{}}
		if err := protojson.Unmarshal(spec, p.Spec); err != nil {
			t.Fatalf("%s: document %d: spec: %v", path, i, err)
		}
		snap.AuthorizationPolicies = append(snap.AuthorizationPolicies, p)
	case "PeerAuthentication":
		p := &PeerAuthentication{Namespace: m.Namespace, Name: m.Name, Generation: m.Generation,
			CreationTimestamp: m.CreationTimestamp.Time, Spec: &securityv1beta1.PeerAuthentication{}}
		if err := protojson.Unmarshal(spec, p.Spec); err != nil {
			t.Fatalf("%s: document %d: spec: %v", path, i, err)
		}
		snap.PeerAuthentications = append(snap.PeerAuthentications, p)
	default:
		t.Fatalf("%s: document %d: unexpected %s %s", path, i, obj.APIVersion, obj.Kind)
	}
	return true
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// renderView writes a View as indented JSON with sorted keys: workloads,
// services, authorizations and waypoint policies (the last two omitted
// when there are none) as protojson (proto field names), then problems.
func renderView(t *testing.T, v *View) []byte {
	t.Helper()
	toJSON := func(m proto.Message) any {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var out any
		if err := d.Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	doc := struct {
		Workloads        []any     `json:"workloads"`
		Services         []any     `json:"services"`
		Authorizations   []any     `json:"authorizations,omitempty"`
		WaypointPolicies []any     `json:"waypoint_policies,omitempty"`
		Problems         []Problem `json:"problems"`
	}{Workloads: []any{}, Services: []any{}, Problems: v.Problems}
	for _, w := range v.Workloads {
		doc.Workloads = append(doc.Workloads, toJSON(w))
	}
	for _, s := range v.Services {
		doc.Services = append(doc.Services, toJSON(s))
	}
	for _, a := range v.Authorizations {
		doc.Authorizations = append(doc.Authorizations, toJSON(a))
	}
	for _, p := range v.WaypointPolicies {
		doc.WaypointPolicies = append(doc.WaypointPolicies, toJSON(p))
	}
	if doc.Problems == nil {
		doc.Problems = []Problem{}
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}
