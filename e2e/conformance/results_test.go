package conformance

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// meshTests are the 22 mesh tests of conformance v1.6.3 and the profiles
// each counts toward. A new suite version that adds, drops or moves one
// fails here, so that the declared features are looked at again.
var meshTests = map[string][]suite.ConformanceProfileName{
	"MeshBasic":                                 {suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName},
	"MeshGRPCRouteWeight":                       {suite.MeshGRPCConformanceProfileName},
	"MeshHTTPRouteMatching":                     {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteNamedRule":                    {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteQueryParamMatching":           {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteRedirectHostAndStatus":        {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteRedirectPath":                 {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteRedirectPort":                 {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteSchemeRedirect":               {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteBackendRequestHeaderModifier": {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteRequestHeaderModifier":        {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteRewritePath":                  {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteSimpleSameNamespace":          {suite.MeshHTTPConformanceProfileName},
	"MeshHTTPRouteWeight":                       {suite.MeshHTTPConformanceProfileName},
	"MeshTrafficSplit":                          {suite.MeshHTTPConformanceProfileName},
	// Counting toward no profile: they need HTTPRoute extended features
	// (response header modification, parentRef port, 303/307/308) that
	// the mesh profiles do not list.
	"MeshHTTPRoute303Redirect": nil,
	"MeshHTTPRoute307Redirect": nil,
	"MeshHTTPRoute308Redirect": nil,
	"MeshConsumerRoute":        nil,
	"MeshFrontend":             nil,
	"MeshFrontendHostname":     nil,
	"MeshPorts":                nil,
}

func TestTestsAndProfiles(t *testing.T) {
	got := map[string][]suite.ConformanceProfileName{}
	for _, test := range Tests() {
		if _, dup := got[test.ShortName]; dup {
			t.Errorf("test %s listed twice", test.ShortName)
		}
		got[test.ShortName] = ProfilesOf(test)
	}
	if diff := cmp.Diff(meshTests, got); diff != "" {
		t.Errorf("mesh tests → profiles (-want +got):\n%s", diff)
	}
}

// TestEveryMeshTestRuns: no mesh test is NOT_SUPPORTED unless a feature it
// needs is declared unsupported with a reason, and every such declaration
// is needed.
func TestEveryMeshTestRuns(t *testing.T) {
	needed := map[features.FeatureName]bool{}
	for _, test := range Tests() {
		for _, f := range missingFeatures(test, sets.New(SupportedFeatures...)) {
			needed[f] = true
			if unsupported[f] == "" {
				t.Errorf("%s needs %s, which SupportedFeatures lacks and unsupported does not explain", test.ShortName, f)
			}
		}
	}
	for f, why := range unsupported {
		if !needed[f] {
			t.Errorf("unsupported lists %s (%q), which SupportedFeatures declares or no mesh test needs", f, why)
		}
	}
}

func TestSupportedFeaturesAreKnown(t *testing.T) {
	known := features.SetsToNamesSet(features.AllFeatures)
	seen := map[features.FeatureName]bool{}
	for _, f := range SupportedFeatures {
		if !known.Has(f) {
			t.Errorf("%s is not a feature of gateway-api v1.6.3", f)
		}
		if seen[f] {
			t.Errorf("%s declared twice", f)
		}
		seen[f] = true
	}
	// The mesh has no Gateway of its own: none of the Gateway profile's
	// core features is claimed, so the suite never sets up Gateway tests.
	for _, f := range []features.FeatureName{features.SupportGateway, features.SupportReferenceGrant} {
		if seen[f] {
			t.Errorf("%s declared: the run would set up the Gateway tests' base manifests", f)
		}
	}
}

func TestNamespaceLabels(t *testing.T) {
	want := map[string]string{"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}
	if diff := cmp.Diff(want, NamespaceLabels); diff != "" {
		t.Errorf("namespace labels (-want +got):\n%s", diff)
	}
	if !slices.Equal(MeshNamespaces, []string{"gateway-conformance-mesh", "gateway-conformance-mesh-consumer"}) {
		t.Errorf("mesh namespaces: %v", MeshNamespaces)
	}
}

func TestDeclared(t *testing.T) {
	declared := suite.ConfigurableOptions{SupportedFeatures: SupportedFeatures, ConformanceProfiles: Profiles, Debug: true, CleanupBaseResources: false}
	if !Declared(declared) {
		t.Errorf("the declared run (debug and cleanup changed) is not Declared")
	}
	changes := map[string]func(*suite.ConfigurableOptions){
		"one test":        func(o *suite.ConfigurableOptions) { o.RunTest = "MeshBasic" },
		"skipped tests":   func(o *suite.ConfigurableOptions) { o.SkipTests = []string{"MeshPorts"} },
		"fewer features":  func(o *suite.ConfigurableOptions) { o.SupportedFeatures = SupportedFeatures[:3] },
		"exempt features": func(o *suite.ConfigurableOptions) { o.ExemptFeatures = SupportedFeatures[3:4] },
		"all features":    func(o *suite.ConfigurableOptions) { o.EnableAllSupportedFeatures = true },
		"other profiles":  func(o *suite.ConfigurableOptions) { o.ConformanceProfiles = Profiles[:1] },
		"no provisional":  func(o *suite.ConfigurableOptions) { o.SkipProvisionalTests = true },
	}
	for name, change := range changes {
		o := declared
		change(&o)
		if Declared(o) {
			t.Errorf("%s: Declared, want not", name)
		}
	}
}

func TestNewResult(t *testing.T) {
	test := func(fs ...features.FeatureName) suite.ConformanceTest {
		return suite.ConformanceTest{ShortName: "T", Features: fs}
	}
	http := test(features.SupportMesh, features.SupportHTTPRoute)
	tests := []struct {
		name            string
		test            suite.ConformanceTest
		failed, skipped bool
		want            Result
	}{
		{"passed", http, false, false, Result{Test: "T", Profiles: []suite.ConformanceProfileName{suite.MeshHTTPConformanceProfileName}, Outcome: Passed}},
		{"failed", http, true, false, Result{Test: "T", Profiles: []suite.ConformanceProfileName{suite.MeshHTTPConformanceProfileName}, Outcome: Failed}},
		{"skipped by name", http, false, true, Result{Test: "T", Profiles: []suite.ConformanceProfileName{suite.MeshHTTPConformanceProfileName}, Outcome: Skipped}},
		{"feature not declared", test(features.SupportMesh, features.SupportGateway, features.SupportTLSRoute), false, true,
			Result{Test: "T", Outcome: NotSupported, Detail: "needs Gateway, TLSRoute"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NewResult(tc.test, sets.New(SupportedFeatures...), tc.failed, tc.skipped, 0)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDescribeRoutes(t *testing.T) {
	cond := func(typ string, st metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason}
	}
	good := []metav1.Condition{cond("Accepted", "True", "Accepted"), cond("ResolvedRefs", "True", "ResolvedRefs"), cond("PartiallyInvalid", "False", "")}
	tests := []struct {
		name   string
		routes []RouteStatus
		want   string
	}{
		{"none", nil, "no routes"},
		{"all good", []RouteStatus{{Kind: "HTTPRoute", Name: "a", Parent: "echo", Conditions: good}, {Kind: "GRPCRoute", Name: "b", Parent: "echo", Conditions: good}}, "routes Accepted and resolved"},
		{"no status yet", []RouteStatus{{Kind: "HTTPRoute", Name: "a"}}, "HTTPRoute/a: no status"},
		{"unreadable", []RouteStatus{{Kind: "HTTPRoute", Name: "a", Err: "not found"}}, "HTTPRoute/a: not found"},
		{"refused and partial", []RouteStatus{
			{Kind: "HTTPRoute", Name: "a", Parent: "echo", Conditions: good},
			{Kind: "HTTPRoute", Name: "b", Parent: "echo-v1", Conditions: []metav1.Condition{cond("Accepted", "False", "NoMatchingParent"), cond("ResolvedRefs", "True", "ResolvedRefs")}},
			{Kind: "GRPCRoute", Name: "c", Parent: "echo", Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted"), cond("PartiallyInvalid", "True", "UnsupportedValue")}},
		}, "HTTPRoute/b (parent echo-v1): Accepted=False/NoMatchingParent; GRPCRoute/c (parent echo): PartiallyInvalid=True/UnsupportedValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DescribeRoutes(tc.routes); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestWriteSummary(t *testing.T) {
	run := Run{
		Implementation: confv1.Implementation{Project: "ambient-lite", Version: "v0.1-3-gabc"},
		Date:           "2026-11-26T01:00:00Z",
		GatewayAPI:     "v1.6.3 (experimental)",
		Took:           754 * time.Second,
		Profiles: []confv1.ProfileReport{
			{Name: "MESH-GRPC", Summary: "Core tests succeeded."},
			{Name: "MESH-HTTP", Summary: "Core tests failed with 2 test failures."},
		},
	}
	results := []Result{
		{Test: "MeshBasic", Profiles: []suite.ConformanceProfileName{"MESH-HTTP", "MESH-GRPC"}, Outcome: Passed, Duration: 2400 * time.Millisecond},
		{Test: "MeshPorts", Outcome: Failed, Duration: 31 * time.Second, Detail: "routes Accepted and resolved"},
		{Test: "MeshX", Profiles: []suite.ConformanceProfileName{"MESH-HTTP"}, Outcome: NotSupported, Detail: "needs A|B"},
	}
	var b strings.Builder
	if err := WriteSummary(&b, run, results); err != nil {
		t.Fatal(err)
	}
	want := "<!-- Written by `make conformance` (e2e/conformance); do not edit. -->\n" +
		"# Gateway API mesh conformance: results\n\n" +
		"ambient-lite v0.1-3-gabc, Gateway API v1.6.3 (experimental), 2026-11-26T01:00:00Z, run in 12m34s. The suite's own report: [report.yaml](report.yaml).\n\n" +
		"| profile | verdict |\n|---|---|\n" +
		"| MESH-GRPC | Core tests succeeded. |\n" +
		"| MESH-HTTP | Core tests failed with 2 test failures. |\n\n" +
		"| test | profiles | result | time | detail |\n|---|---|---|---|---|\n" +
		"| MeshBasic | MESH-HTTP, MESH-GRPC | PASS | 2s |  |\n" +
		"| MeshPorts | none | FAIL | 31s | routes Accepted and resolved |\n" +
		"| MeshX | MESH-HTTP | NOT SUPPORTED | 0s | needs A\\|B |\n" +
		"\n3 tests: 1 passed, 1 failed, 1 not supported, 0 skipped.\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}
