package xdsclient

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The README states wire facts, defaults and metric names; keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"AggregatedDiscoveryService/DeltaAggregatedResources",
		DefaultRootCertFile, DefaultTokenFile, "`" + DefaultClusterID + "`",
		"`" + metaName + "`", "`" + metaNamespace + "`", "`" + metaInstanceIPs + "`", "`" + metaNodeName + "`",
		metricTerminations, metricMessages, metricMessageBytes, metricConnected, metricResponses,
		reasonConnectionError, reasonError, reasonReconnect, reasonComplete,
		string(StateStopped), string(StateConnecting), string(StateConnected), string(StateBackoff),
		"`Initial` 100 ms, `Max` 15 s, `Jitter` 0.2, `ResetAfter` 10 s",
		"200 MiB", "30 s / 10 s",
	} {
		if !strings.Contains(string(b), f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
	if DefaultBackoffInitial != 100*time.Millisecond || DefaultBackoffMax != 15*time.Second ||
		DefaultBackoffJitter != 0.2 || DefaultBackoffResetAfter != 10*time.Second ||
		DefaultMaxMessageSize != 200<<20 || DefaultKeepalive != 30*time.Second || DefaultKeepaliveTimeout != 10*time.Second {
		t.Error("defaults changed: update README.md and this test")
	}
}
