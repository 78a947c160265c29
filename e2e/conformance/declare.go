// Package conformance runs the upstream Gateway API mesh conformance suite
// (sigs.k8s.io/gateway-api/conformance v1.6.3) against Ambient Lite in the
// local cluster: every mesh test of the suite, those of the profiles
// MESH-HTTP and MESH-GRPC and those that count toward no profile. The run
// is the e2e-tagged test in conformance_test.go (`make conformance`); this
// file declares what the run claims (profiles, supported features, how the
// suite's namespaces join the mesh) and results.go renders what it found,
// so that both are unit-tested without a cluster.
package conformance

import (
	"slices"

	meshtests "sigs.k8s.io/gateway-api/conformance/tests/mesh"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// Profiles are the conformance profiles the report is written for.
var Profiles = []suite.ConformanceProfileName{
	suite.MeshHTTPConformanceProfileName,
	suite.MeshGRPCConformanceProfileName,
}

// SupportedFeatures are the features Ambient Lite claims: what
// istiod-lite/route compiles into the waypoint's route tables (see its
// README) and the waypoint applies. A mesh test needing a feature missing
// here is not run and is reported NOT_SUPPORTED (unsupported, below, says
// which and why); nothing is skipped by name.
var SupportedFeatures = []features.FeatureName{
	// Core of both profiles (a profile implies them; listed for the reader).
	features.SupportMesh,
	features.SupportHTTPRoute,
	features.SupportGRPCRoute,

	// Mesh extended features (both profiles' extended set).
	features.SupportMeshClusterIPMatching, // ztunnel hands the waypoint the Service VIP; tables are picked by VIP:port, never by Host
	features.SupportMeshConsumerRoute,     // routes in another namespace apply to that namespace's clients only
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,

	// HTTPRoute extended features. The first five are what the mesh tests
	// that count toward no profile need; the others no mesh test uses (they
	// gate Gateway tests only, which this run does not include) and are
	// declared because the route compiler claims them.
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportHTTPRouteCORS,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteRetry,
	features.SupportHTTPRouteRetryConnectionError,
	features.SupportHTTPRouteNamedRouteRule,
}

// unsupported lists the features of mesh tests that SupportedFeatures
// leaves out on purpose, with the reason; the unit tests keep the two in
// step with the suite's tests. Empty: every mesh test of v1.6.3 runs.
var unsupported = map[features.FeatureName]string{}

// WaypointName is the waypoint Gateway (class istio-waypoint) the run
// creates in each of MeshNamespaces and that NamespaceLabels point the
// namespaces' Services at.
const WaypointName = "waypoint"

// NamespaceLabels are added by the suite to the namespaces it creates
// (its namespace-labels option): enrolled in the mesh, their Services'
// traffic sent through the namespace's waypoint.
var NamespaceLabels = map[string]string{
	"istio.io/dataplane-mode": "ambient",
	"istio.io/use-waypoint":   WaypointName,
}

// MeshNamespaces are the namespaces of the suite's mesh manifests
// (mesh/manifests.yaml), each of which gets a waypoint.
var MeshNamespaces = []string{suite.MeshNamespace, suite.MeshConsumerNamespace}

// Tests returns every mesh test of the suite, in the suite's order: the
// profiles' and those that count toward none.
func Tests() []suite.ConformanceTest {
	return slices.Clone(meshtests.MeshConformanceTests)
}

// ProfilesOf returns the profiles of Profiles that test counts toward, as
// the suite's report decides it: those whose core and extended features
// hold all of the test's features. None for a test needing a feature
// outside both profiles.
func ProfilesOf(test suite.ConformanceTest) []suite.ConformanceProfileName {
	var out []suite.ConformanceProfileName
	for _, p := range []suite.ConformanceProfile{suite.MeshHTTPConformanceProfile, suite.MeshGRPCConformanceProfile} {
		if !slices.Contains(Profiles, p.Name) {
			continue
		}
		all := true
		for _, f := range test.Features {
			if !p.CoreFeatures.Has(f) && !p.ExtendedFeatures.Has(f) {
				all = false
			}
		}
		if all {
			out = append(out, p.Name)
		}
	}
	return out
}

// missingFeatures returns the features test needs that supported lacks,
// in the test's order.
func missingFeatures(test suite.ConformanceTest, supported suite.FeaturesSet) []features.FeatureName {
	var out []features.FeatureName
	for _, f := range test.Features {
		if !supported.Has(f) {
			out = append(out, f)
		}
	}
	return out
}

// Declared reports whether o, after the suite's flags, still runs what this
// package declares — every mesh test, with SupportedFeatures and Profiles —
// so that its report may replace the one kept in the repository.
func Declared(o suite.ConfigurableOptions) bool {
	return o.RunTest == "" && len(o.SkipTests) == 0 && len(o.ExemptFeatures) == 0 &&
		!o.EnableAllSupportedFeatures && !o.SkipProvisionalTests &&
		slices.Equal(o.SupportedFeatures, SupportedFeatures) && slices.Equal(o.ConformanceProfiles, Profiles)
}
