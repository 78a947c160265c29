package waypoint

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// configs are the Configs of the golden cases; a case not named here uses
// the defaults.
var configs = map[string]Config{
	"custom-config": {
		Image:           "registry.example.com/mesh/waypoint:1.2.3",
		ImagePullPolicy: corev1.PullAlways,
		XDSAddress:      "istiod-lite.mesh-system.svc:15012",
		CAAddress:       "ca.mesh-system.svc:15012",
		TrustDomain:     "example.org",
		DomainSuffix:    "corp.example",
		LogLevel:        "debug",
		Resources:       &corev1.ResourceRequirements{},
	},
}

func readGateway(t *testing.T, path string) *gatewayv1.Gateway {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gw := &gatewayv1.Gateway{}
	if err := yaml.UnmarshalStrict(b, gw); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return gw
}

// TestGolden renders each testdata/<case>.yaml Gateway into the
// ServiceAccount, Service and Deployment it becomes and compares them with
// testdata/<case>.golden. Run with -update to accept a change.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			gw := readGateway(t, in)
			v := check(gw)
			if !v.accepted {
				t.Fatalf("case Gateway not accepted: %s", v.message)
			}
			objs, err := render(gw, *v.mesh, configs[name].withDefaults())
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			for i, o := range []any{objs.serviceAccount, objs.service, objs.deployment} {
				b, err := yaml.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				if i > 0 {
					out.WriteString("---\n")
				}
				out.Write(b)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if d := cmp.Diff(string(want), out.String()); d != "" {
				t.Errorf("%s differs (-want +got; run with -update to accept):\n%s", golden, d)
			}
		})
	}
}

// TestRenderSurvivesRoundTrip guards against a hot loop: what we apply,
// once stored as the typed object the API server keeps (which drops zero
// values and empty fields), must still cover what we apply — otherwise every
// reconcile would see a difference and write again.
func TestRenderSurvivesRoundTrip(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.yaml")
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		gw := readGateway(t, in)
		v := check(gw)
		objs, err := render(gw, *v.mesh, configs[name].withDefaults())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			applied any
			stored  any
		}{
			{objs.serviceAccount, &corev1.ServiceAccount{}},
			{objs.service, &corev1.Service{}},
			{objs.deployment, &appsv1.Deployment{}},
		} {
			b, err := json.Marshal(c.applied)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, c.stored); err != nil {
				t.Fatal(err)
			}
			ok, err := covers(c.stored, c.applied)
			if err != nil || !ok {
				t.Errorf("%s: stored %T does not cover what was applied (err %v)", name, c.stored, err)
			}
		}
	}
}

func TestRenderHashFollowsInput(t *testing.T) {
	gw := readGateway(t, "testdata/default.yaml")
	v := check(gw)
	hashes := func(gw *gatewayv1.Gateway, cfg Config) [3]string {
		o, err := render(gw, *v.mesh, cfg.withDefaults())
		if err != nil {
			t.Fatal(err)
		}
		return [3]string{
			o.serviceAccount.Annotations[AnnotationConfigHash],
			o.service.Annotations[AnnotationConfigHash],
			o.deployment.Annotations[AnnotationConfigHash],
		}
	}
	base := hashes(gw, Config{})
	if again := hashes(gw, Config{}); again != base {
		t.Fatalf("hash not stable: %v vs %v", base, again)
	}
	if img := hashes(gw, Config{Image: "other:1"}); img[2] == base[2] || img[1] != base[1] {
		t.Errorf("image change: deployment hash must change and service hash must not: %v vs %v", base, img)
	}
	relabeled := gw.DeepCopy()
	relabeled.Labels["team"] = "b"
	if r := hashes(relabeled, Config{}); r[0] == base[0] || r[1] == base[1] || r[2] == base[2] {
		t.Errorf("label change must change every hash: %v vs %v", base, r)
	}
}

func TestServicePortName(t *testing.T) {
	for in, want := range map[string]string{
		"mesh":                         "mesh",
		"hbone.mesh":                   "hbone-mesh",
		"status-port":                  "mesh-15008",
		strings.Repeat("a", 70):        strings.Repeat("a", 63),
		strings.Repeat("a", 62) + ".b": strings.Repeat("a", 62),
	} {
		if got := servicePortName(gatewayv1.SectionName(in)); got != want {
			t.Errorf("servicePortName(%q) = %q, want %q", in, got, want)
		}
	}
}
