package xds

import (
	"os"
	"strings"
	"testing"
)

// The README documents wire facts, defaults and metric names; keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, f := range []string{
		AddressType, AuthorizationType,
		metricConnected, metricPushes, metricPushLatency, metricNACKs,
		"DefaultDebounce", "DefaultDebounceMax", "100 ms", "1 s",
		"initial_resource_versions", "removed_resources", "system_version_info",
	} {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}
