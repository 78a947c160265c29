//go:build e2e

package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayconformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/flags"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"

	"github.com/ambientlite/mesh/e2e/cluster"
	"github.com/ambientlite/mesh/e2e/mesh"
)

// kube is the running local cluster.
var kube cluster.Config

// TestMain brings the local cluster up (a no-op when it is up) and makes
// sure the mesh's images and the echo-advanced image the suite's mesh
// manifests run are loaded.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	c, err := cluster.Up(ctx, cluster.Config{StateDir: os.Getenv("AMBIENT_LITE_STATE_DIR")}, os.Stdout)
	if err == nil {
		err = cluster.EnsureImages(ctx, c, os.Stdout, "istiod-lite", "ztunnel", "waypoint", "echo-advanced")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance: cannot bring up the local cluster:", err)
		os.Exit(1)
	}
	kube = c
	os.Exit(m.Run())
}

// timeouts are the suite's defaults, the consistency window among them
// (30 s, the most the conformance rules allow), but for the poll interval
// of object status: ten times a second only fills the log and loads the
// two cores. Requests keep the suite's own pace.
func timeouts() config.TimeoutConfig {
	tc := config.DefaultTimeoutConfig()
	tc.DefaultPollInterval = time.Second
	return tc
}

// TestMeshConformance runs every mesh test of the Gateway API conformance
// suite v1.6.3 against the mesh, with the suite's namespaces enrolled and a
// waypoint in each, and writes the suite's report (report.yaml) and a
// summary of every test (results.md) beside this file. A failing
// conformance test fails it.
//
// The suite's own flags work after -args (-run-test=MeshBasic, -debug,
// -cleanup-base-resources=false, -timeout-config-overrides=...); a run
// whose flags change the tests, features or profiles only logs its report.
func TestMeshConformance(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	ctx := t.Context()
	if err := mesh.Install(ctx, kube); err != nil {
		t.Fatalf("install the mesh: %v", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kube.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, gatewayv1.Install, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	clientOpts := client.Options{Scheme: scheme}
	c, err := client.New(rc, clientOpts)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	deleteLeftovers(t, cs, MeshNamespaces)

	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			SupportedFeatures:    SupportedFeatures,
			ConformanceProfiles:  Profiles,
			NamespaceLabels:      NamespaceLabels,
			CleanupBaseResources: true,
			CleanupTestResources: true,
			TimeoutConfig:        timeouts(),
			Mode:                 flags.DefaultMode,
			Implementation: confv1.Implementation{
				Organization: "ambientlite",
				Project:      "ambient-lite",
				URL:          "https://example.invalid/ambient-lite",
				Version:      version(t),
				Contact:      []string{"@ambientlite/maintainers"},
			},
		},
		Client:        c,
		ClientOptions: clientOpts,
		Clientset:     cs,
		RestConfig:    rc,
		ManifestFS:    []fs.FS{&gatewayconformance.Manifests},
	}
	flags.ApplyAll(&opts.ConfigurableOptions)
	full := Declared(opts.ConfigurableOptions)
	s, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("new conformance suite: %v", err)
	}

	rec := &recorder{ran: map[string]ran{}}
	tests := rec.instrument(Tests())
	start := time.Now()
	s.Setup(t, tests)
	createWaypoints(t, opts.TimeoutConfig)
	t.Logf("setup (manifests applied, pods ready, waypoints Programmed): %v", time.Since(start).Round(time.Second))
	// The report can be had only once Run's own cleanup has marked the
	// suite idle: a cleanup registered before Run runs after it (and before
	// Setup's, which deletes the namespaces).
	t.Cleanup(func() { writeReport(t, s, rec.results(Tests(), s.SupportedFeatures), start, full) })
	if err := s.Run(t, tests); err != nil {
		t.Fatal(err)
	}
}

// writeReport logs the suite's report and the summary of every test and,
// after a full run, writes them to report.yaml and results.md beside this
// file.
func writeReport(t *testing.T, s *suite.ConformanceTestSuite, results []Result, start time.Time, full bool) {
	report, err := s.Report()
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	// The suite lists profiles in map order; sorted, the file changes only
	// when a result does.
	slices.SortFunc(report.ProfileReports, func(a, b confv1.ProfileReport) int { return strings.Compare(a.Name, b.Name) })
	var summary bytes.Buffer
	if err := WriteSummary(&summary, Run{
		Implementation: report.Implementation,
		Date:           report.Date,
		GatewayAPI:     report.GatewayAPIVersion + " (" + report.GatewayAPIChannel + ")",
		Profiles:       report.ProfileReports,
		Took:           time.Since(start),
	}, results); err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s\n%s", raw, summary.String())
	if !full {
		t.Logf("the suite's flags changed what runs (tests, features or profiles): report.yaml and results.md are left as they were")
		return
	}
	dir := filepath.Join(kube.ModuleRoot, "e2e", "conformance")
	for name, b := range map[string][]byte{"report.yaml": raw, "results.md": summary.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %s and %s", filepath.Join(dir, "report.yaml"), filepath.Join(dir, "results.md"))
}

// version is `git describe --always --dirty` of the module.
func version(t *testing.T) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", "describe", "--always", "--dirty")
	cmd.Dir = kube.ModuleRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git describe (the report's implementation version): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// deleteLeftovers deletes the suite's namespaces when an earlier run left
// them (killed, or -cleanup-base-resources=false) and waits until they are
// gone, so that every run starts from pods of the images loaded now.
func deleteLeftovers(t *testing.T, cs kubernetes.Interface, namespaces []string) {
	t.Helper()
	ctx := t.Context()
	for _, ns := range namespaces {
		err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		switch {
		case err == nil:
			t.Logf("deleting namespace %s left by an earlier run", ns)
		case !apierrors.IsNotFound(err):
			t.Fatalf("delete namespace %s left by an earlier run: %v", ns, err)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, ns := range namespaces {
			if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("namespaces %v left by an earlier run are not gone after 3 minutes: %v", namespaces, err)
	}
}

// createWaypoints creates the Gateway WaypointName of class istio-waypoint
// in each mesh namespace (as `ambientctl waypoint apply` would) and waits
// until istiod-lite says it is Programmed. Deleting the namespaces, as the
// suite does when it ends, deletes them.
func createWaypoints(t *testing.T, tc config.TimeoutConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), tc.GatewayMustHaveCondition+time.Minute)
	defer cancel()
	var gws strings.Builder
	for _, ns := range MeshNamespaces {
		fmt.Fprintf(&gws, `---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: %s
  namespace: %s
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
`, WaypointName, ns)
	}
	if _, err := kube.Kubectl(ctx, strings.NewReader(gws.String()), "apply", "-f", "-"); err != nil {
		t.Fatalf("create the waypoints: %v", err)
	}
	for _, ns := range MeshNamespaces {
		if _, err := kube.Kubectl(ctx, nil, "-n", ns, "wait", "--for=condition=Programmed", "gateway/"+WaypointName,
			fmt.Sprintf("--timeout=%ds", int(tc.GatewayMustHaveCondition.Seconds()))); err != nil {
			out, _ := kube.Kubectl(context.Background(), nil, "-n", ns, "get", "gateway,deployment,pods", "-o", "wide")
			t.Fatalf("waypoint of %s not Programmed: %v\n%s", ns, err, out)
		}
	}
}

// recorder keeps what became of each test it instrumented.
type recorder struct {
	ran map[string]ran // by ShortName; tests run one after the other
}

type ran struct {
	failed, skipped bool
	took            time.Duration
	routes          string // DescribeRoutes of a failed test's routes
}

// instrument returns copies of tests whose Test notes how long it took,
// whether it failed and, when it did, the status of its routes — read in a
// cleanup that runs before the suite deletes the test's manifests.
func (r *recorder) instrument(tests []suite.ConformanceTest) []suite.ConformanceTest {
	for i := range tests {
		test, body := tests[i], tests[i].Test
		tests[i].Test = func(t *testing.T, s *suite.ConformanceTestSuite) {
			start := time.Now()
			t.Cleanup(func() {
				got := ran{failed: t.Failed(), skipped: t.Skipped(), took: time.Since(start)}
				if got.failed {
					got.routes = DescribeRoutes(routeStatus(s.Client, test))
				}
				r.ran[test.ShortName] = got
			})
			body(t, s)
		}
	}
	return tests
}

// results returns one Result per test, in order; a test that never reached
// its body was not supported or was skipped.
func (r *recorder) results(tests []suite.ConformanceTest, supported suite.FeaturesSet) []Result {
	var out []Result
	for _, test := range tests {
		got, ok := r.ran[test.ShortName]
		if !ok {
			out = append(out, NewResult(test, supported, false, true, 0))
			continue
		}
		res := NewResult(test, supported, got.failed, got.skipped, got.took)
		if res.Outcome == Failed {
			res.Detail = got.routes
		}
		out = append(out, res)
	}
	return out
}

// routeStatus reads the status of the HTTPRoutes and GRPCRoutes of a
// test's manifests.
func routeStatus(c client.Client, test suite.ConformanceTest) []RouteStatus {
	var out []RouteStatus
	for _, m := range test.Manifests {
		b, err := fs.ReadFile(gatewayconformance.Manifests, m)
		if err != nil {
			return append(out, RouteStatus{Kind: "manifest", Name: m, Err: err.Error()})
		}
		dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return append(out, RouteStatus{Kind: "manifest", Name: m, Err: err.Error()})
			}
			key := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
			var parents []gatewayv1.RouteParentStatus
			switch u.GetKind() {
			case "HTTPRoute":
				var hr gatewayv1.HTTPRoute
				if err := c.Get(context.Background(), key, &hr); err != nil {
					out = append(out, RouteStatus{Kind: u.GetKind(), Name: key.Name, Err: err.Error()})
					continue
				}
				parents = hr.Status.Parents
			case "GRPCRoute":
				var gr gatewayv1.GRPCRoute
				if err := c.Get(context.Background(), key, &gr); err != nil {
					out = append(out, RouteStatus{Kind: u.GetKind(), Name: key.Name, Err: err.Error()})
					continue
				}
				parents = gr.Status.Parents
			default:
				continue
			}
			if len(parents) == 0 {
				out = append(out, RouteStatus{Kind: u.GetKind(), Name: key.Name})
			}
			for _, p := range parents {
				out = append(out, RouteStatus{Kind: u.GetKind(), Name: key.Name, Parent: string(p.ParentRef.Name), Conditions: p.Conditions})
			}
		}
	}
	return out
}
