package proxy

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// waypoint/README.md documents every flag, metric, label, response flag,
// limit and port; keep it so.
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
		metricHTTPRequests, metricHTTPDuration, metricHTTPReqBytes, metricHTTPRespBytes,
		metricRetries, metricMirrors, metricTCPFailed, metricRouteUpdates, metricRouteProblems, metricPanics,
		"15008", "15020", "15021", "/healthz/ready", "/stats/prometheus", "tunnel closed", "`request`")
	for _, l := range requestLabels {
		facts = append(facts, "`"+l+"`")
	}
	for _, f := range []string{flagNoRoute, flagNoHealthy, flagUpstreamConnect, flagUpstreamReset, flagTimeout,
		flagRetryLimit, flagDownstream, flagInvalidBackend, flagTooLarge, flagDenied, flagInternal} {
		facts = append(facts, "`"+f+"`")
	}
	// Limits and their defaults.
	facts = append(facts, "64 KiB", "60 KiB", "1 GiB", "100 ms", "1 h")
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %s", f)
		}
	}
}
