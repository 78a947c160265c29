package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The README lists the labels the translation reads and the golden cases;
// keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := []string{
		LabelDataplaneMode, LabelUseWaypoint, LabelUseWaypointNamespace, LabelWaypointFor,
		LabelGatewayName, LabelGatewayManaged, ManagedByMeshController, WaypointGatewayClass,
		LabelServiceWorkloadName, LabelCanonicalName, LabelCanonicalRevision, LabelTunnel,
		AnnotationAmbientRedirection, AnnotationSidecarStatus, "-update",
		AnnotationDryRun, StaticStrictPolicyName, ConvertedPeerAuthenticationPrefix, defaultRootNS,
		PodUID("<cluster>", "<ns>", "<name>"),
	}
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
	cases, _ := filepath.Glob("testdata/*.yaml")
	if len(cases) < 11 {
		t.Errorf("only %d golden cases", len(cases))
	}
}
