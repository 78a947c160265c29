package l4bench

import (
	"fmt"
	"io"
	"strings"
)

// Report is one run's results, rendered as markdown by Write.
type Report struct {
	Machine  []string // notes on the machine and the run, one per line
	Settings Settings
	Paths    []PathResult // direct first, then ztunnel and the peers
}

// Settings are the load parameters the numbers depend on.
type Settings struct {
	QPS                float64
	Connections        int
	Payload            int
	LatencySeconds     float64
	ConnConcurrency    int
	ConnSeconds        float64
	ThroughputSeconds  float64
	TargetCPUPer1k     float64 // cores per 1,000 req/s, per ztunnel
	TargetRSSMiB       float64 // per ztunnel at 1,000 req/s
	TargetAddedP90Secs float64
}

// PathResult is what was measured on one path. A nil measurement was not
// taken (see Skipped and Errors).
type PathResult struct {
	Name       string
	Skipped    string   // why the path was not measured at all
	Errors     []string // measurements that failed
	Latency    *HTTPResult
	Connect    *HTTPResult
	Throughput *bulkResult
	Procs      []ProcResult // the path's proxy processes, client side first
}

// ProcResult is the cost of one proxy process.
type ProcResult struct {
	Name string // e.g. "ztunnel (client node)"
	// LatencyCores is the CPU used during the fixed-rate phase, in cores
	// (CPU seconds per second).
	LatencyCores float64
	// ConnectCores is the CPU used during the connection-rate phase.
	ConnectCores float64
	// ThroughputCores is the CPU used during the single-stream phase.
	ThroughputCores float64
	// IdleRSS is VmRSS once set up, before any load.
	IdleRSS int64
	// LatencyRSS is the largest VmRSS sampled during the fixed-rate phase,
	// LatencyAnon the largest RssAnon.
	LatencyRSS, LatencyAnon int64
	// PeakRSS is VmHWM at the end of the run (after the throughput phase).
	PeakRSS int64
}

func (p *PathResult) measured() bool { return p.Skipped == "" }

// Per1k returns cores per 1,000 (requests or connections) per second.
func Per1k(cores, rate float64) float64 {
	if rate <= 0 {
		return 0
	}
	return cores / (rate / 1000)
}

// pair sums a path's processes into one row.
func (p *PathResult) pair() ProcResult {
	var s ProcResult
	for _, pr := range p.Procs {
		s.LatencyCores += pr.LatencyCores
		s.ConnectCores += pr.ConnectCores
		s.ThroughputCores += pr.ThroughputCores
		s.IdleRSS += pr.IdleRSS
		s.LatencyRSS += pr.LatencyRSS
		s.LatencyAnon += pr.LatencyAnon
		s.PeakRSS += pr.PeakRSS
	}
	return s
}

func (r *Report) path(name string) *PathResult {
	for i := range r.Paths {
		if r.Paths[i].Name == name && r.Paths[i].measured() {
			return &r.Paths[i]
		}
	}
	return nil
}

// Write renders the report as markdown.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	for _, m := range r.Machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "- load: fortio, %s req/s over %d keep-alive connections, %d-byte POST bodies echoed back, %s measured per path; "+
		"new connections: fortio without keep-alive, %d concurrent, as fast as possible, %s; throughput: one TCP stream, %s\n\n",
		Num(s.QPS, 0), s.Connections, s.Payload, secs(s.LatencySeconds), s.ConnConcurrency, secs(s.ConnSeconds), secs(s.ThroughputSeconds))

	direct := r.path("direct")
	b.WriteString("| path | throughput, 1 stream | × direct | p50 | p90 | p99 | added p90 | req/s | new conn/s | × direct |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for i := range r.Paths {
		p := &r.Paths[i]
		if !p.measured() {
			fmt.Fprintf(&b, "| %s | not measured: %s | | | | | | | | |\n", p.Name, p.Skipped)
			continue
		}
		cells := []string{p.Name}
		if p.Throughput != nil {
			cells = append(cells, mbps(p.Throughput), Ratio(rate(p.Throughput), rateOf(direct)))
		} else {
			cells = append(cells, "–", "–")
		}
		if l := p.Latency; l != nil {
			added := "–"
			if direct != nil && direct.Latency != nil && p != direct {
				added = fmt.Sprintf("%+.3f ms", (l.P90-direct.Latency.P90)*1e3)
			}
			reqs := Num(l.QPS, 0)
			if l.Errors > 0 {
				reqs += fmt.Sprintf(" (%d errors)", l.Errors)
			}
			cells = append(cells, Millis(l.P50), Millis(l.P90), Millis(l.P99), added, reqs)
		} else {
			cells = append(cells, "–", "–", "–", "–", "–")
		}
		if c := p.Connect; c != nil {
			conns := Num(connRate(c), 0)
			if c.Errors > 0 {
				conns += fmt.Sprintf(" (%d errors)", c.Errors)
			}
			var d float64
			if direct != nil && direct.Connect != nil {
				d = connRate(direct.Connect)
			}
			cells = append(cells, conns, Ratio(connRate(c), d))
		} else {
			cells = append(cells, "–", "–")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}

	fmt.Fprintf(&b, "\nProxy processes (CPU from /proc/<pid>/stat over each measured window; RSS: VmRSS before any load and the largest sampled during the %s req/s phase, with its anonymous part (RssAnon: without the executable's pages); peak: VmHWM at the end of the run):\n\n", Num(s.QPS, 0))
	b.WriteString("| process | cores at " + Num(s.QPS, 0) + " req/s | cores per 1,000 req/s | RSS idle | RSS at " + Num(s.QPS, 0) + " req/s | peak RSS | cores per 1,000 new conn/s | CPU seconds per GB streamed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for i := range r.Paths {
		p := &r.Paths[i]
		if !p.measured() || len(p.Procs) == 0 {
			continue
		}
		rows := p.Procs
		if len(p.Procs) > 1 {
			sum := p.pair()
			sum.Name = p.Name + " pair"
			rows = append(rows[:len(rows):len(rows)], sum)
		}
		for _, pr := range rows {
			var qps, cps float64
			if p.Latency != nil {
				qps = p.Latency.QPS
			}
			if p.Connect != nil {
				cps = connRate(p.Connect)
			}
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %s | %s (anon %s) | %s | %.3f | %.2f |\n", pr.Name, pr.LatencyCores, Per1k(pr.LatencyCores, qps),
				MiB(pr.IdleRSS), MiB(pr.LatencyRSS), MiB(pr.LatencyAnon), MiB(pr.PeakRSS), Per1k(pr.ConnectCores, cps), perGB(pr.ThroughputCores, p.Throughput))
		}
	}

	b.WriteString("\nRatios, ztunnel's number over the other path's (same run, same namespaces and veth; throughput and new conn/s: higher is better; p90, CPU and RSS: lower is better):\n\n")
	for _, l := range r.ratios() {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	b.WriteString("\nTargets (issue #4):\n\n")
	b.WriteString("| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t[0], t[1], t[2])
	}
	for i := range r.Paths {
		for _, e := range r.Paths[i].Errors {
			fmt.Fprintf(&b, "\nerror on %s: %s\n", r.Paths[i].Name, e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ratios are the comparison lines: ztunnel against direct and each peer.
func (r *Report) ratios() []string {
	zt := r.path("ztunnel")
	if zt == nil {
		return []string{"ztunnel not measured: no ratio"}
	}
	var out []string
	others := []*PathResult{r.path("direct")}
	for i := range r.Paths {
		if n := r.Paths[i].Name; n != "direct" && n != "ztunnel" {
			others = append(others, r.path(n))
		}
	}
	for _, o := range others {
		if o == nil {
			continue
		}
		var parts []string
		if zt.Throughput != nil && o.Throughput != nil {
			parts = append(parts, "throughput "+Ratio(rate(zt.Throughput), rate(o.Throughput)))
		}
		if zt.Latency != nil && o.Latency != nil {
			parts = append(parts, "p90 "+Ratio(zt.Latency.P90, o.Latency.P90))
		}
		if zt.Connect != nil && o.Connect != nil {
			parts = append(parts, "new conn/s "+Ratio(connRate(zt.Connect), connRate(o.Connect)))
		}
		z, p := zt.pair(), o.pair()
		if len(o.Procs) > 0 && zt.Latency != nil && o.Latency != nil {
			parts = append(parts,
				"CPU per 1,000 req/s "+Ratio(Per1k(z.LatencyCores, zt.Latency.QPS), Per1k(p.LatencyCores, o.Latency.QPS)),
				"RSS "+Ratio(float64(z.LatencyRSS), float64(p.LatencyRSS)))
		}
		if len(o.Procs) > 0 && zt.Throughput != nil && o.Throughput != nil {
			parts = append(parts, "CPU per GB streamed "+Ratio(perGB(z.ThroughputCores, zt.Throughput), perGB(p.ThroughputCores, o.Throughput)))
		}
		if len(parts) > 0 {
			out = append(out, fmt.Sprintf("ztunnel/%s: %s", o.Name, strings.Join(parts, ", ")))
		}
	}
	return out
}

// targets are issue #4's targets, each {target, measured, verdict}.
func (r *Report) targets() [][3]string {
	s := r.Settings
	zt, hap, direct := r.path("ztunnel"), r.path("haproxy"), r.path("direct")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	var out [][3]string
	if zt != nil && zt.Throughput != nil && hap != nil && hap.Throughput != nil {
		z, h := rate(zt.Throughput), rate(hap.Throughput)
		out = append(out, [3]string{"throughput ≥ the HAProxy pair's", fmt.Sprintf("%s vs %s (%s)", mbps(zt.Throughput), mbps(hap.Throughput), Ratio(z, h)), verdict(z >= h)})
	} else {
		out = append(out, [3]string{"throughput ≥ the HAProxy pair's", "not measured", ""})
	}
	if zt != nil && zt.Latency != nil && direct != nil && direct.Latency != nil {
		added := zt.Latency.P90 - direct.Latency.P90
		out = append(out, [3]string{fmt.Sprintf("added p90 ≤ %s ms", Num(s.TargetAddedP90Secs*1e3, 1)), fmt.Sprintf("%+.3f ms", added*1e3), verdict(added <= s.TargetAddedP90Secs)})
	} else {
		out = append(out, [3]string{"added p90", "not measured", ""})
	}
	if zt != nil && zt.Latency != nil && len(zt.Procs) > 0 {
		var cpu, rss []string
		cpuOK, rssOK := true, true
		for _, p := range zt.Procs {
			c := Per1k(p.LatencyCores, zt.Latency.QPS)
			m := float64(p.LatencyRSS) / (1 << 20)
			cpu = append(cpu, fmt.Sprintf("%s %.3f", p.Name, c))
			rss = append(rss, fmt.Sprintf("%s %.1f MiB (anon %s)", p.Name, m, MiB(p.LatencyAnon)))
			cpuOK = cpuOK && c <= s.TargetCPUPer1k
			rssOK = rssOK && m <= s.TargetRSSMiB
		}
		out = append(out,
			[3]string{fmt.Sprintf("CPU ≤ %s cores per 1,000 req/s, each ztunnel", Num(s.TargetCPUPer1k, 2)), strings.Join(cpu, "; "), verdict(cpuOK)},
			[3]string{fmt.Sprintf("RSS ≤ %s MiB at 1,000 req/s, each ztunnel", Num(s.TargetRSSMiB, 0)), strings.Join(rss, "; "), verdict(rssOK)})
	}
	return out
}

// perGB is CPU seconds per 10⁹ bytes streamed; 0 when unknown.
func perGB(cores float64, b *bulkResult) float64 {
	if r := rate(b); r > 0 {
		return cores / (r / 1e9)
	}
	return 0
}

func rate(b *bulkResult) float64 {
	if b == nil || b.Seconds <= 0 {
		return 0
	}
	return float64(b.Bytes) / b.Seconds
}

func rateOf(p *PathResult) float64 {
	if p == nil {
		return 0
	}
	return rate(p.Throughput)
}

// connRate is new connections per second: fortio's socket count over the
// run (one per request without keep-alive).
func connRate(h *HTTPResult) float64 {
	if h == nil || h.Seconds <= 0 {
		return 0
	}
	return float64(h.Sockets) / h.Seconds
}

// Ratio formats a/b as "1.30×"; "n/a" when either is unknown.
func Ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func mbps(b *bulkResult) string { return Num(rate(b)/1e6, 0) + " MB/s" }

// Millis formats seconds as milliseconds, "0.170 ms".
func Millis(seconds float64) string { return fmt.Sprintf("%.3f ms", seconds*1e3) }

// MiB formats bytes in mebibytes, "12.0 MiB".
func MiB(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

func secs(s float64) string { return Num(s, 0) + " s" }

// Num formats v with prec decimals and a thousands separator.
func Num(v float64, prec int) string {
	s := fmt.Sprintf("%.*f", prec, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var g []string
	for len(intPart) > 3 {
		g = append([]string{intPart[len(intPart)-3:]}, g...)
		intPart = intPart[:len(intPart)-3]
	}
	g = append([]string{intPart}, g...)
	out := strings.Join(g, ",")
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}
