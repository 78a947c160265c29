package route

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/ambientlite/mesh/internal/routeapi"

	"github.com/ambientlite/mesh/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenNow is Config.Now in the golden cases.
var goldenNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestGolden compiles each testdata/<case>.yaml and compares the result
// (tables as protojson, statuses, problems; rendered as YAML) with
// testdata/<case>.golden.
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
			res := Compile(Config{Now: goldenNow}, loadSnapshot(t, in))
			checkInvariants(t, res)
			got := render(t, res)
			golden.Check(t, strings.TrimSuffix(in, ".yaml")+".golden", got, *update)
		})
	}
}

// TestCompileDeterministic checks that the order of the input objects does
// not change the output.
func TestCompileDeterministic(t *testing.T) {
	for _, in := range []string{"testdata/path_precedence.yaml", "testdata/consumer_producer.yaml", "testdata/grpc_route.yaml"} {
		snap := loadSnapshot(t, in)
		want := render(t, Compile(Config{Now: goldenNow}, snap))
		slices.Reverse(snap.Services)
		slices.Reverse(snap.HTTPRoutes)
		slices.Reverse(snap.GRPCRoutes)
		slices.Reverse(snap.Namespaces)
		slices.Reverse(snap.ReferenceGrants)
		if diff := cmp.Diff(string(want), string(render(t, Compile(Config{Now: goldenNow}, snap)))); diff != "" {
			t.Errorf("%s: output depends on input order (-first +reversed):\n%s", in, diff)
		}
	}
}

// checkInvariants checks what the waypoint relies on, for every case.
func checkInvariants(t *testing.T, res *Result) {
	t.Helper()
	for i, tbl := range res.Tables {
		if i > 0 && res.Tables[i-1].ResourceName() >= tbl.ResourceName() {
			t.Errorf("tables not sorted by resource name at %s", tbl.ResourceName())
		}
		if len(tbl.Addresses) == 0 {
			t.Errorf("%s: no addresses", tbl.ResourceName())
		}
		rules := 0
		for j, p := range tbl.Ports {
			if j > 0 && tbl.Ports[j-1].Port >= p.Port {
				t.Errorf("%s: ports not sorted at %d", tbl.ResourceName(), p.Port)
			}
			sets := p.Consumers
			if p.Producer != nil {
				sets = append([]*routeapi.RuleSet{p.Producer}, sets...)
				if p.Producer.Namespace != "" {
					t.Errorf("%s:%d: producer set has namespace %q", tbl.ResourceName(), p.Port, p.Producer.Namespace)
				}
			}
			for k, rs := range p.Consumers {
				if rs.Namespace == "" || (k > 0 && p.Consumers[k-1].Namespace >= rs.Namespace) {
					t.Errorf("%s:%d: consumer sets unnamed or not sorted at %q", tbl.ResourceName(), p.Port, rs.Namespace)
				}
			}
			for _, rs := range sets {
				rules += len(rs.Rules)
				if len(rs.Matches) == 0 {
					t.Errorf("%s:%d: empty rule set", tbl.ResourceName(), p.Port)
				}
				for _, m := range rs.Matches {
					if int(m.Rule) >= len(rs.Rules) {
						t.Errorf("%s:%d: match selects rule %d of %d", tbl.ResourceName(), p.Port, m.Rule, len(rs.Rules))
					}
				}
				for _, r := range rs.Rules {
					if r.Action == nil {
						t.Errorf("%s:%d: rule %v has no action", tbl.ResourceName(), p.Port, r.Origin)
					}
					for _, b := range r.GetForward().GetBackends() {
						if b.Weight == 0 || b.Target == nil {
							t.Errorf("%s:%d: backend %v has no weight or target", tbl.ResourceName(), p.Port, b)
						}
					}
				}
			}
		}
		if rules == 0 {
			t.Errorf("%s: a table without rules", tbl.ResourceName())
		}
	}
	for _, st := range res.Statuses {
		for _, p := range st.Parents {
			if p.ControllerName != DefaultControllerName {
				t.Errorf("%s %s/%s: controllerName %q", st.Kind, st.Namespace, st.Name, p.ControllerName)
			}
			for _, c := range p.Conditions {
				if c.ObservedGeneration != st.Generation || c.Reason == "" {
					t.Errorf("%s %s/%s: condition %s: observedGeneration %d, reason %q", st.Kind, st.Namespace, st.Name, c.Type, c.ObservedGeneration, c.Reason)
				}
			}
		}
	}
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// loadSnapshot reads multi-document Kubernetes YAML into a Snapshot.
// ReferenceGrants may be v1 or v1beta1.
func loadSnapshot(tb testing.TB, path string) Snapshot {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, gatewayv1.Install, gatewayv1beta1.Install} {
		if err := add(scheme); err != nil {
			tb.Fatal(err)
		}
	}
	decode := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode
	var snap Snapshot
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := decode([]byte(doc), nil, nil)
		if err != nil {
			tb.Fatalf("%s: document %d: %v", path, i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			snap.Namespaces = append(snap.Namespaces, o)
		case *corev1.Service:
			snap.Services = append(snap.Services, o)
		case *gatewayv1.HTTPRoute:
			snap.HTTPRoutes = append(snap.HTTPRoutes, o)
		case *gatewayv1.GRPCRoute:
			snap.GRPCRoutes = append(snap.GRPCRoutes, o)
		case *gatewayv1beta1.ReferenceGrant:
			snap.ReferenceGrants = append(snap.ReferenceGrants, o)
		case *gatewayv1.ReferenceGrant:
			snap.ReferenceGrants = append(snap.ReferenceGrants, (*gatewayv1beta1.ReferenceGrant)(o))
		default:
			tb.Fatalf("%s: document %d: unexpected %T", path, i, obj)
		}
	}
	return snap
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

// render writes a Result as YAML: tables (protojson with proto field
// names), statuses and problems.
func render(t *testing.T, res *Result) []byte {
	t.Helper()
	doc := struct {
		Tables   []any         `json:"tables"`
		Statuses []RouteStatus `json:"statuses"`
		Problems []Problem     `json:"problems"`
	}{Tables: []any{}, Statuses: res.Statuses, Problems: res.Problems}
	for _, tbl := range res.Tables {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(tbl)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
		doc.Tables = append(doc.Tables, v)
	}
	if doc.Statuses == nil {
		doc.Statuses = []RouteStatus{}
	}
	if doc.Problems == nil {
		doc.Problems = []Problem{}
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.JSONToYAML(js)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
