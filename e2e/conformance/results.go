package conformance

import (
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
)

// Outcome is what became of one test in a run.
type Outcome string

// The outcomes, as the suite counts them.
const (
	Passed       Outcome = "PASS"
	Failed       Outcome = "FAIL"
	NotSupported Outcome = "NOT SUPPORTED" // needs a feature the run does not support; not run
	Skipped      Outcome = "SKIPPED"       // left out by -run-test or -skip-tests
)

// Result is one mesh test's outcome.
type Result struct {
	Test     string
	Profiles []suite.ConformanceProfileName // none: counts toward no profile
	Outcome  Outcome
	Duration time.Duration
	// Detail: for NOT SUPPORTED the missing features; for FAIL what
	// istiod-lite wrote in the status of the test's routes, which tells a
	// route the control plane refused from a failure in the data path.
	Detail string
}

// NewResult classifies a test from what its *testing.T said and the
// features the suite ran with (a test needing others was not run).
func NewResult(test suite.ConformanceTest, supported suite.FeaturesSet, failed, skipped bool, took time.Duration) Result {
	r := Result{Test: test.ShortName, Profiles: ProfilesOf(test), Duration: took}
	switch missing := missingFeatures(test, supported); {
	case len(missing) > 0:
		r.Outcome = NotSupported
		var names []string
		for _, f := range missing {
			names = append(names, string(f))
		}
		r.Detail = "needs " + strings.Join(names, ", ")
	case failed:
		r.Outcome = Failed
	case skipped:
		r.Outcome = Skipped
	default:
		r.Outcome = Passed
	}
	return r
}

// RouteStatus is the status of one parentRef of one of a test's routes.
type RouteStatus struct {
	Kind, Name string // "HTTPRoute", "mesh-split"
	// Parent is the parentRef's name ("" when the route has no status yet).
	Parent     string
	Conditions []metav1.Condition
	// Err says why the route could not be read.
	Err string
}

// DescribeRoutes sums up routes' status in a line: "routes Accepted and
// resolved" when every condition is as it should be (PartiallyInvalid
// absent or False, every other condition True), otherwise each route's
// conditions that are not, or that it has no status.
func DescribeRoutes(routes []RouteStatus) string {
	if len(routes) == 0 {
		return "no routes"
	}
	var bad []string
	for _, r := range routes {
		id := r.Kind + "/" + r.Name
		if r.Err != "" {
			bad = append(bad, id+": "+r.Err)
			continue
		}
		if r.Parent == "" {
			bad = append(bad, id+": no status")
			continue
		}
		var conds []string
		for _, c := range r.Conditions {
			healthy := metav1.ConditionTrue
			if c.Type == "PartiallyInvalid" {
				healthy = metav1.ConditionFalse
			}
			if c.Status != healthy {
				conds = append(conds, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
			}
		}
		if len(conds) > 0 {
			bad = append(bad, fmt.Sprintf("%s (parent %s): %s", id, r.Parent, strings.Join(conds, ", ")))
		}
	}
	if len(bad) == 0 {
		return "routes Accepted and resolved"
	}
	return strings.Join(bad, "; ")
}

// Run is what the summary's heading says about a run.
type Run struct {
	Implementation confv1.Implementation
	Date           string
	GatewayAPI     string                 // "v1.6.3 (experimental)"
	Profiles       []confv1.ProfileReport // in the order to show
	Took           time.Duration
}

// WriteSummary writes a Markdown summary of a run: each profile's verdict
// from the suite's report, then one row per mesh test, those that count
// toward no profile included (the suite's report leaves them out).
func WriteSummary(w io.Writer, run Run, results []Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- Written by `make conformance` (e2e/conformance); do not edit. -->\n")
	fmt.Fprintf(&b, "# Gateway API mesh conformance: results\n\n")
	fmt.Fprintf(&b, "%s %s, Gateway API %s, %s, run in %s. The suite's own report: [report.yaml](report.yaml).\n\n",
		run.Implementation.Project, run.Implementation.Version, run.GatewayAPI, run.Date, run.Took.Round(time.Second))
	if len(run.Profiles) > 0 {
		b.WriteString("| profile | verdict |\n|---|---|\n")
		for _, p := range run.Profiles {
			fmt.Fprintf(&b, "| %s | %s |\n", p.Name, p.Summary)
		}
		b.WriteString("\n")
	}
	b.WriteString("| test | profiles | result | time | detail |\n|---|---|---|---|---|\n")
	count := map[Outcome]int{}
	for _, r := range results {
		count[r.Outcome]++
		var ps []string
		for _, p := range r.Profiles {
			ps = append(ps, string(p))
		}
		prof := strings.Join(ps, ", ")
		if prof == "" {
			prof = "none"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.Test, prof, r.Outcome, r.Duration.Round(time.Second), strings.ReplaceAll(r.Detail, "|", `\|`))
	}
	fmt.Fprintf(&b, "\n%d tests: %d passed, %d failed, %d not supported, %d skipped.\n",
		len(results), count[Passed], count[Failed], count[NotSupported], count[Skipped])
	_, err := io.WriteString(w, b.String())
	return err
}
