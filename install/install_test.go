package install

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ambientlite/mesh/crds"
	"github.com/ambientlite/mesh/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The chart's crds/ folder is a copy of package crds: one source of truth.
func TestChartCRDsAreTheCRDsPackage(t *testing.T) {
	want := ChartCRDs(crds.GatewayAPIExperimental, crds.Security)
	entries, err := fs.ReadDir(chartFiles, chartDir+"/crds")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if diff := cmp.Diff(wantNames, got); diff != "" {
		t.Fatalf("chart crds/ files (-want +got), run go generate ./install/...:\n%s", diff)
	}
	for name, data := range want {
		b, err := ChartFile("crds/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, data) {
			t.Errorf("chart crds/%s differs from package crds: run go generate ./install/...", name)
		}
	}
}

// install/manifests is the chart rendered with its defaults.
func TestManifestsUpToDate(t *testing.T) {
	r, err := RenderChart(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := Manifests(r)
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if diff := cmp.Diff(ManifestNames(), names); diff != "" {
		t.Errorf("manifest files (-want +got):\n%s", diff)
	}
	onDisk, _ := filepath.Glob("manifests/*.yaml")
	for i := range onDisk {
		onDisk[i] = filepath.Base(onDisk[i])
	}
	if diff := cmp.Diff(names, onDisk); diff != "" {
		t.Errorf("install/manifests holds other files than the chart renders (-rendered +on disk), run go generate ./install/...:\n%s", diff)
	}
	for name, data := range got {
		b, err := os.ReadFile(filepath.Join("manifests", name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(b), string(data)); diff != "" {
			t.Errorf("manifests/%s is stale, run go generate ./install/... (-on disk +rendered):\n%s", name, diff)
		}
	}
}

// Each testdata/<case>.values.yaml renders to <case>.golden: the CRDs by
// kind and name (their text is package crds'), then every template document
// as rendered, then NOTES.txt.
func TestRenderGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".values.yaml")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			vals := Values{}
			if err := vals.MergeYAML(in); err != nil {
				t.Fatal(err)
			}
			r, err := RenderChart(vals)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			for _, d := range r.CRDs {
				fmt.Fprintf(&b, "# %s: %s %s\n", d.Source, d.Object.GetKind(), d.Object.GetName())
			}
			for _, d := range r.Templates {
				fmt.Fprintf(&b, "--- # %s\n%s", d.Source, d.YAML)
			}
			fmt.Fprintf(&b, "--- # NOTES.txt\n%s", r.Notes)
			golden.Check(t, filepath.Join("testdata", name+".golden"), b.Bytes(), *update)
		})
	}
}

// Bad values are refused with a message naming the key.
func TestRenderRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  string
		want string
	}{
		{"unknown key", "cni.binDIr=/usr/lib/cni", "binDIr"},
		{"unknown top-level key", "pilot.replicaCount=3", "pilot"},
		{"log level", "global.logLevel=verbose", "/global/logLevel"},
		{"pull policy", "global.imagePullPolicy=Sometimes", "/global/imagePullPolicy"},
		{"relative CNI dir", "cni.confDir=etc/cni", "/cni/confDir"},
		{"no replicas", "istiod.replicas=0", "/istiod/replicas"},
		{"resource typo", "ztunnel.resources.limit.cpu=1", "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Values{}
			if err := v.Set(tc.set); err != nil {
				t.Fatal(err)
			}
			_, err := Render(v)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "invalid values") {
				t.Fatalf("Render(--set %s) = %v, want an invalid-values error naming %q", tc.set, err, tc.want)
			}
		})
	}
}

// --set and -f merge as with helm, and rendering leaves the caller's values
// alone.
func TestValues(t *testing.T) {
	v := Values{}
	if err := v.MergeYAML([]byte("global: {hub: registry.example/mesh, tag: v1}\ncni: {binDir: /a}\n")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"cni.binDir=/usr/lib/cni,cni.confDir=/var/lib/ambient-lite/cluster/cni", "global.tag=2"} {
		if err := v.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	before := fmt.Sprint(v)
	r, err := RenderChart(v)
	if err != nil {
		t.Fatal(err)
	}
	if after := fmt.Sprint(v); after != before {
		t.Errorf("RenderChart changed the values: %s → %s", before, after)
	}
	ds := find(t, r, "DaemonSet", "ztunnel")
	for _, want := range []string{
		"image: registry.example/mesh/ztunnel:2\n", // an int, as helm --set makes it
		"--cni-bin-dir=/usr/lib/cni", "--cni-conf-dir=/var/lib/ambient-lite/cluster/cni",
		"path: /usr/lib/cni,", "mountPath: /var/lib/ambient-lite/cluster/cni}",
	} {
		if !strings.Contains(ds.YAML, want) {
			t.Errorf("ztunnel DaemonSet lacks %q:\n%s", want, ds.YAML)
		}
	}
	if err := v.SetString("global.tag=1.10"); err != nil {
		t.Fatal(err)
	}
	r, err = RenderChart(v)
	if err != nil {
		t.Fatal(err)
	}
	if ds := find(t, r, "DaemonSet", "ztunnel"); !strings.Contains(ds.YAML, "ztunnel:1.10\n") {
		t.Errorf("--set-string global.tag=1.10: image not tagged 1.10:\n%s", ds.YAML)
	}
	if err := v.Set("a.b"); err == nil {
		t.Error("--set a.b (no value) accepted")
	}
}

// Objects come CRDs first, then in install order: the Namespace before
// anything in it, RBAC before workloads, the GatewayClass after its CRD.
func TestInstallOrder(t *testing.T) {
	objs, err := Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		if k := o.GetKind(); len(kinds) == 0 || kinds[len(kinds)-1] != k {
			kinds = append(kinds, k)
		}
	}
	want := []string{
		// The Gateway API bundle in its own order, then security.istio.io.
		"CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "CustomResourceDefinition",
		"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"Service", "Deployment", "DaemonSet", "PodDisruptionBudget", "GatewayClass",
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("kinds in order (-want +got):\n%s", diff)
	}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" && !strings.HasSuffix(o.GetName(), ".gateway.networking.k8s.io") &&
			!strings.HasSuffix(o.GetName(), ".gateway.networking.x-k8s.io") && !strings.HasSuffix(o.GetName(), ".security.istio.io") {
			t.Errorf("unexpected CRD %s", o.GetName())
		}
	}
}

// Every value in values.yaml is documented in the README.
func TestREADMEDocumentsValues(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	def, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range leafKeys("", def) {
		if !bytes.Contains(readme, []byte("`"+k+"`")) {
			t.Errorf("README.md does not document value `%s`", k)
		}
	}
	for _, f := range append(ManifestNames(), "go generate ./install/...", "-update", "values.schema.json") {
		if !bytes.Contains(readme, []byte(f)) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}

func leafKeys(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		key := strings.TrimPrefix(prefix+"."+k, ".")
		if sub, ok := v.(map[string]any); ok && !strings.HasSuffix(key, "resources") {
			out = append(out, leafKeys(key, sub)...)
			continue
		}
		out = append(out, key)
	}
	slices.Sort(out)
	return out
}

func find(t *testing.T, r *Rendered, kind, name string) Doc {
	t.Helper()
	for _, d := range r.Templates {
		if d.Object.GetKind() == kind && d.Object.GetName() == name {
			return d
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return Doc{}
}
