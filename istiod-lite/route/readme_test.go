package route

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The README lists the API's names, the defaults and the golden cases;
// keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := []string{
		KindHTTPRoute, KindGRPCRoute, ConditionResolvedWaypoints, ReasonMissingUseWaypointLabel, LabelUseWaypoint,
		defaultDomainSuffix, string(DefaultControllerName), string(reasonConflicted), "AllowCrossNamespaceBackends",
		"-update", "PartiallyInvalid", "Dropped Rule", "TestMeshConformance", "BenchmarkCompile",
	}
	cases, _ := filepath.Glob("testdata/*.yaml")
	if len(cases) < 12 {
		t.Errorf("only %d golden cases", len(cases))
	}
	for _, c := range cases {
		facts = append(facts, "`"+strings.TrimSuffix(filepath.Base(c), ".yaml")+"`")
	}
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}
