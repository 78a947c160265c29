package l4bench

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/ambientlite/mesh/internal/golden"
)

func TestPercentile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p, want float64
	}{
		{0, 1}, {50, 5.5}, {90, 9.1}, {99, 9.91}, {100, 10},
	} {
		if got := percentile(s, tc.p); !near(got, tc.want) {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("no samples: %v, want 0", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("one sample: %v, want 7", got)
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Ratio(130, 100), "1.30×"},
		{Ratio(1, 0), "n/a"},
		{Ratio(0, 5), "n/a"},
		{Num(1234567.891, 1), "1,234,567.9"},
		{Num(-1234, 0), "-1,234"},
		{Num(999, 0), "999"},
		{Millis(0.000170), "0.170 ms"},
		{MiB(12 << 20), "12.0 MiB"},
		{mbps(&bulkResult{Bytes: 800e6, Seconds: 2}), "400 MB/s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if got := Per1k(0.12, 2000); !near(got, 0.06) {
		t.Errorf("Per1k(0.12 cores, 2,000/s) = %v, want 0.06", got)
	}
	if got := connRate(&HTTPResult{Sockets: 5000, Seconds: 2}); got != 2500 {
		t.Errorf("connRate = %v, want 2500", got)
	}
}

// sampleReport is a run with every kind of row: measured paths, a peer
// that is not installed, a failed measurement.
func sampleReport() *Report {
	lat := func(p50, p90, p99 float64) *HTTPResult {
		return &HTTPResult{Requests: 10000, Seconds: 10, QPS: 1000, P50: p50 / 1e3, P90: p90 / 1e3, P99: p99 / 1e3, Max: 2 * p99 / 1e3}
	}
	conn := func(perSec float64) *HTTPResult {
		return &HTTPResult{Requests: int64(perSec * 5), Sockets: int64(perSec * 5), Seconds: 5, QPS: perSec}
	}
	bulk := func(mbps float64) *bulkResult { return &bulkResult{Bytes: int64(mbps * 5e6), Seconds: 5} }
	return &Report{
		Machine: []string{"date: 2026-11-26 00:00 UTC", "machine: 2 × test CPU"},
		Settings: Settings{QPS: 1000, Connections: 16, Payload: 1024, LatencySeconds: 10, ConnConcurrency: 8, ConnSeconds: 5,
			ThroughputSeconds: 5, TargetCPUPer1k: targetCPUPer1k, TargetRSSMiB: targetRSSMiB, TargetAddedP90Secs: targetAddedP90ms / 1e3},
		Paths: []PathResult{
			{Name: "direct", Latency: lat(0.08, 0.12, 0.30), Connect: conn(4000), Throughput: bulk(900)},
			{Name: "ztunnel", Latency: lat(0.20, 0.26, 0.70), Connect: conn(2000), Throughput: bulk(300),
				Procs: []ProcResult{
					{Name: "ztunnel (client node)", LatencyCores: 0.05, ConnectCores: 0.4, ThroughputCores: 0.6, IdleRSS: 9 << 20, LatencyRSS: 14 << 20, LatencyAnon: 5 << 20, PeakRSS: 20 << 20},
					{Name: "ztunnel (server node)", LatencyCores: 0.07, ConnectCores: 0.5, ThroughputCores: 0.7, IdleRSS: 9 << 20, LatencyRSS: 15 << 20, LatencyAnon: 6 << 20, PeakRSS: 22 << 20},
				}},
			{Name: "haproxy", Latency: lat(0.18, 0.25, 0.60), Connect: conn(800), Throughput: bulk(250),
				Errors: []string{"throughput: sink acknowledged 3 of 4 blocks"},
				Procs: []ProcResult{
					{Name: "haproxy (client side)", LatencyCores: 0.04, ConnectCores: 0.6, ThroughputCores: 0.5, IdleRSS: 8 << 20, LatencyRSS: 16 << 20, LatencyAnon: 7 << 20, PeakRSS: 16 << 20},
					{Name: "haproxy (server side)", LatencyCores: 0.04, ConnectCores: 0.7, ThroughputCores: 0.5, IdleRSS: 8 << 20, LatencyRSS: 20 << 20, LatencyAnon: 8 << 20, PeakRSS: 21 << 20},
				}},
			{Name: "stunnel", Skipped: "stunnel is not installed (Debian package stunnel4; bench/install-peers.sh installs it)"},
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
	r := sampleReport()
	got := map[string]string{}
	for _, tg := range r.targets() {
		got[tg[0]] = tg[2]
	}
	want := map[string]string{
		"throughput ≥ the HAProxy pair's":                "met",        // 300 vs 250 MB/s
		"added p90 ≤ 0.1 ms":                             "**missed**", // +0.14 ms
		"CPU ≤ 0.06 cores per 1,000 req/s, each ztunnel": "**missed**", // the server node's 0.07
		"RSS ≤ 20 MiB at 1,000 req/s, each ztunnel":      "met",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}
