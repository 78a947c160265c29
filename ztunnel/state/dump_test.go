package state

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/istio/istioctl/pkg/writer/ztunnel/configdump"
	"istio.io/istio/pkg/workloadapi/security"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func dumpStore(t *testing.T) *Store {
	strict := policy("istio-system", "istio_converted_static_strict", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
		group(clause(&security.Match{NotPrincipals: []*security.StringMatch{presence()}})))
	allow := policy("shop", "allow", security.Scope_NAMESPACE, security.Action_ALLOW,
		group(
			clause(&security.Match{Principals: []*security.StringMatch{prefix("cluster.local/ns/shop/")}, NotNamespaces: []*security.StringMatch{exact("evil")}},
				&security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "frontend", ServiceAccount: "ui"}}}),
			clause(&security.Match{DestinationPorts: []uint32{8080}, SourceIps: []*security.Address{cidr("10.244.0.0/16")}, NotDestinationIps: []*security.Address{cidr("fd00::1/128")}}),
		))
	return storeWith(t, Config{}, meshAddresses(), strict, allow)
}

// The dump keeps ztunnel's JSON shape: testdata/dump.golden, rewritten by
// go test -run TestSnapshotGolden -update.
func TestSnapshotGolden(t *testing.T) {
	got, err := json.MarshalIndent(dumpStore(t).Snapshot(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const golden = "testdata/dump.golden"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got), go test -update to accept:\n%s", golden, diff)
	}
	if got := string(mustJSON(t, New(Config{}).Snapshot())); got != `{"workloads":[],"services":[],"policies":[]}` {
		t.Errorf("empty dump = %s", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// istioctl ztunnel-config reads our dump as it reads ztunnel's.
func TestIstioctlReadsDump(t *testing.T) {
	dump := mustJSON(t, dumpStore(t).Snapshot())
	var out bytes.Buffer
	w := &configdump.ConfigWriter{Stdout: &out, FullDump: dump}
	if err := w.Prime(dump); err != nil {
		t.Fatal(err)
	}
	if err := w.PrintWorkloadSummary(configdump.WorkloadFilter{}); err != nil {
		t.Fatal(err)
	}
	if err := w.PrintServiceSummary(configdump.ServiceFilter{}); err != nil {
		t.Fatal(err)
	}
	if err := w.PrintPolicySummary(configdump.PolicyFilter{}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"reviews-0", "10.244.0.40", "HBONE", "TCP", // workloads
		"reviews", "10.96.0.40", "1/2", // services: healthy/all endpoints
		"istio_converted_static_strict", "Deny", "shop", // policies
	} {
		if !strings.Contains(text, want) {
			t.Errorf("istioctl output lacks %q:\n%s", want, text)
		}
	}
	t.Log("\n" + text)
}
