package proxy

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// waypoint/README.md documents every flag, metric and port; keep it so.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var facts []string
	newFlagSet(&Options{}, func(string) string { return "" }).VisitAll(func(f *flag.Flag) {
		facts = append(facts, "`--"+f.Name+"`")
	})
	facts = append(facts, metricOpened, metricClosed, metricSent, metricReceived, metricRequests,
		"15008", "15020", "15021", "/healthz/ready", "/stats/prometheus", "tunnel closed")
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %s", f)
		}
	}
}
