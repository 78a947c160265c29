package cli

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// ambientctl never links ztunnel's code; this reads ztunnel's own golden
// config dump (ztunnel/state/testdata/dump.golden, the "state" part of
// /config_dump) to check that the fields the tables show decode from what
// ztunnel writes.
func TestDecodesZtunnelStateDump(t *testing.T) {
	b, err := os.ReadFile("../../ztunnel/state/testdata/dump.golden")
	if err != nil {
		t.Skipf("ztunnel's dump golden not found: %v", err)
	}
	d, err := parseConfigDump([]byte(`{"state":` + string(b) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.State.Workloads) == 0 || len(d.State.Services) == 0 || len(d.State.Policies) == 0 {
		t.Fatalf("decoded %d workloads, %d services, %d policies; want some of each", len(d.State.Workloads), len(d.State.Services), len(d.State.Policies))
	}
	waypoints := 0
	for _, w := range d.State.Workloads {
		if w.UID == "" || w.Name == "" || w.Namespace == "" || w.Protocol == "" || w.Status == "" || len(w.IPs) == 0 {
			t.Errorf("workload decoded with an empty field: %+v", w)
		}
		if w.Waypoint != nil {
			waypoints++
			if w.Waypoint.Destination == "" || w.Waypoint.Port == 0 {
				t.Errorf("workload %s: waypoint %+v", w.Name, *w.Waypoint)
			}
		}
	}
	if waypoints == 0 {
		t.Error("no workload with a waypoint decoded")
	}
	for _, s := range d.State.Services {
		if s.Name == "" || s.Namespace == "" || s.Hostname == "" || len(s.VIPs) == 0 {
			t.Errorf("service decoded with an empty field: %+v", s)
		}
	}
	for _, p := range d.State.Policies {
		if p.Name == "" || p.Namespace == "" || p.Scope == "" || (p.Action != "Allow" && p.Action != "Deny") {
			t.Errorf("policy decoded with an empty field: %+v", p)
		}
	}
}

// The admin testdata decode completely: every ztunnel and istiod file is
// what the real endpoints send (captured from the local cluster and
// adapted), and the fields the commands read are set.
func TestAdminTestdataDecodes(t *testing.T) {
	for _, f := range []string{"ztunnel-node-a.json", "ztunnel-node-b.json", "ztunnel-node-b-pending.json"} {
		b, err := os.ReadFile("testdata/admin/" + f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := parseConfigDump(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Certificates) == 0 || len(d.XDS.Types) == 0 || d.XDS.Types[0].SystemVersion == "" || len(d.Pods) == 0 || d.Pods[0].Name == "" {
			t.Errorf("%s: decoded %+v", f, d)
		}
	}
	for _, f := range []string{"istiod-a.json", "istiod-b.json", "istiod-a-unhealthy.json"} {
		b, err := os.ReadFile("testdata/admin/" + f)
		if err != nil {
			t.Fatal(err)
		}
		var s syncz
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if s.Generation == 0 || len(s.Streams) == 0 {
			t.Fatalf("%s: decoded %+v", f, s)
		}
		for _, st := range s.Streams {
			if st.podKey() == "" || st.ConnectedAt.IsZero() || len(st.Types) == 0 || st.Types[0].LastAck.Equal(time.Time{}) {
				t.Errorf("%s: stream decoded %+v", f, st)
			}
		}
	}
}
