package l7bench

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambientlite/mesh/bench/l4bench"
	"github.com/ambientlite/mesh/internal/golden"
)

// sampleReport is a run with every kind of row: measured paths, a peer that
// is not installed, a failed measurement.
func sampleReport() *Report {
	lat := func(p50, p90, p99 float64) *l4bench.HTTPResult {
		return &l4bench.HTTPResult{Requests: 10000, Seconds: 10, QPS: 1000, P50: p50 / 1e3, P90: p90 / 1e3, P99: p99 / 1e3, Max: 2 * p99 / 1e3}
	}
	sat := func(rate float64) *l4bench.HTTPResult {
		return &l4bench.HTTPResult{Requests: int64(rate * 10), Seconds: 10, QPS: rate}
	}
	zt := func(name string, lc, sc float64) ProcResult {
		return ProcResult{Name: name, LatencyCores: lc, SaturationCores: sc, IdleRSS: 16 << 20, LatencyRSS: 19 << 20, LatencyAnon: 6 << 20, PeakRSS: 21 << 20}
	}
	return &Report{
		Machine:  []string{"date: 2026-11-26 00:00 UTC", "machine: 2 × test CPU"},
		Settings: Settings{QPS: 1000, Connections: 16, Payload: 1024, LatencySeconds: 10, SaturationSeconds: 10, WaypointLogLevel: "info"},
		Paths: []PathResult{
			{Name: "direct", Hops: "none", Latency: lat(0.1, 0.2, 0.5), Saturation: sat(10000), V1: 130000},
			{Name: "ztunnel", Hops: "ztunnel → ztunnel", Latency: lat(0.3, 0.6, 1.5), Saturation: sat(5000), V1: 72000,
				Procs: []ProcResult{zt("ztunnel (client node)", 0.2, 0.5), zt("ztunnel (server node)", 0.2, 0.5)}},
			{Name: "waypoint", Hops: "ztunnel → waypoint → ztunnel", Latency: lat(0.8, 1.6, 4), Saturation: sat(2400), V1: 31500, V2: 3500,
				Procs: []ProcResult{zt("ztunnel (client node)", 0.2, 0.4),
					{Name: "waypoint", L7: true, LatencyCores: 0.3, SaturationCores: 0.6, IdleRSS: 20 << 20, LatencyRSS: 30 << 20, LatencyAnon: 13 << 20, PeakRSS: 33 << 20,
						LatencySched: l4bench.SchedStat{Run: 3 * time.Second, Wait: 15 * time.Second, Slices: 70000}},
					zt("ztunnel (server node)", 0.2, 0.4)}},
			{Name: "haproxy", Hops: "HAProxy", Latency: lat(0.4, 0.9, 2), Saturation: sat(7000), V1: 90000, V2: 10000,
				Errors: []string{"saturation: fortio: no request completed"},
				Procs:  []ProcResult{{Name: "haproxy (L7)", L7: true, LatencyCores: 0.15, SaturationCores: 0.5, IdleRSS: 14 << 20, LatencyRSS: 15 << 20, LatencyAnon: 4 << 20, PeakRSS: 15 << 20}}},
			{Name: "haproxy-mtls", Skipped: "haproxy is not installed (Debian package haproxy; bench/install-peers.sh installs it)"},
		},
	}
}

func TestReportGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().Write(&b); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "report.md.golden"), b.Bytes(), *update)
}

func TestTargets(t *testing.T) {
	got := map[string]string{}
	for _, tg := range sampleReport().targets() {
		got[tg[0]] = tg[2]
	}
	want := map[string]string{
		"waypoint CPU ≤ 0.25 cores per 1,000 req/s":              "**missed**", // 0.3
		"waypoint RSS ≤ 60 MiB at 1,000 req/s":                   "met",        // 30 MiB
		"waypoint requests per core > haproxy's L7 process":      "**missed**", // 2,400/0.6 = 4,000 vs 7,000/0.5 = 14,000
		"waypoint requests per core > haproxy-mtls's L7 process": "",           // not measured
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, g, v, got)
		}
	}
}

func TestCheckSplit(t *testing.T) {
	measured := &l4bench.HTTPResult{QPS: 1000}
	for _, tc := range []struct {
		name   string
		v1, v2 int64
		ok     bool
	}{
		{"direct", 1000, 0, true},
		{"ztunnel", 1000, 3, false},
		{"ztunnel", 0, 0, false},
		{"waypoint", 900, 100, true},
		{"waypoint", 1000, 0, false},  // the route was bypassed
		{"waypoint", 500, 500, false}, // the Service without its route
		{"haproxy-mtls", 905, 95, true},
	} {
		err := checkSplit(&PathResult{Name: tc.name, Latency: measured, V1: tc.v1, V2: tc.v2})
		if (err == nil) != tc.ok {
			t.Errorf("%s, %d/%d: err = %v, want ok %v", tc.name, tc.v1, tc.v2, err, tc.ok)
		}
	}
}
