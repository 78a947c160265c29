package l4bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"fortio.org/fortio/fhttp"
	"fortio.org/fortio/periodic"
	"fortio.org/log"
)

// The "load" role runs in the client pod's namespace and prints, on stdout,
// "measuring" when the measured part starts and then one JSON line
// ("result {...}") when it is over, so that the bench samples the proxies'
// CPU over exactly that window.

// HTTPResult is what an HTTP load (fortio) measured; the load role prints it
// as JSON on its "result" line.
type HTTPResult struct {
	Requests int64   // completed, any status
	Errors   int64   // not 2xx, or failed
	Sockets  int64   // connections opened (one per request without keep-alive)
	Seconds  float64 // the measured run's duration
	QPS      float64 // achieved requests per second
	// Latency percentiles in seconds, exact, over every request.
	P50, P90, P99, Max float64
}

// bulkResult is what a single-stream bulk transfer measured.
type bulkResult struct {
	Bytes   int64
	Seconds float64
}

// sinkBlock is the unit the sink acknowledges with one byte: the sender
// keeps writing while acknowledgements come back, and the transfer is timed
// up to the last acknowledgement, so the rate counts bytes the receiving
// application really read.
const sinkBlock = 8 << 20

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "http", "http (fortio) or bulk (one stream to a sink)")
	url := fs.String("url", "", "http: the URL")
	addr := fs.String("addr", "", "bulk: the sink's ip:port")
	qps := fs.Float64("qps", 1000, "http: requests per second over all connections; 0 = as fast as possible")
	conns := fs.Int("c", 16, "http: concurrent connections")
	payload := fs.Int("payload", 1024, "http: request body size (echoed back); 0 = GET")
	keepAlive := fs.Bool("keepalive", true, "http: reuse connections")
	duration := fs.Duration("duration", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured run before, same settings")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	switch *mode {
	case "http":
		o := fortioOptions{URL: *url, QPS: *qps, Conns: *conns, Payload: *payload, KeepAlive: *keepAlive}
		if *warmup > 0 {
			if _, err := o.run(*warmup); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		fmt.Fprintln(stdout, "measuring")
		res, err := o.run(*duration)
		if err != nil {
			return err
		}
		return printResult(stdout, res)
	case "bulk":
		fmt.Fprintln(stdout, "measuring")
		res, err := bulkSend(ctx, *addr, *duration)
		if err != nil {
			return err
		}
		return printResult(stdout, res)
	}
	return fmt.Errorf("%w: unknown mode %q", ErrUsage, *mode)
}

func printResult(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "result %s\n", b)
	return err
}

// fortioOptions is one fortio HTTP load.
type fortioOptions struct {
	URL       string
	QPS       float64
	Conns     int
	Payload   int
	KeepAlive bool
}

// run runs fortio's HTTP runner (its fast HTTP/1.1 client, requests spread
// uniformly over the connections) and computes exact percentiles from every
// request's latency, which fortio reports to an access logger.
func (o fortioOptions) run(d time.Duration) (HTTPResult, error) {
	// Errors only: fortio warns when a connection falls a call or two
	// behind its share, which the achieved rate reports anyway.
	log.SetLogLevelQuiet(log.Error)
	lat := &latencies{}
	ro := periodic.RunnerOptions{
		QPS:          o.QPS,
		Duration:     d,
		NumThreads:   o.Conns,
		Out:          io.Discard,
		Uniform:      o.QPS > 0,
		AccessLogger: lat,
	}
	if o.QPS <= 0 {
		ro.QPS = -1 // fortio: as fast as possible
	}
	ho := fhttp.HTTPOptions{DisableKeepAlive: !o.KeepAlive, HTTPReqTimeOut: 5 * time.Second}
	if o.Payload > 0 {
		ho.Payload = make([]byte, o.Payload)
		for i := range ho.Payload {
			ho.Payload[i] = 'a' + byte(i%26)
		}
	}
	ho.Init(o.URL)
	res, err := fhttp.RunHTTPTest(&fhttp.HTTPRunnerOptions{RunnerOptions: ro, HTTPOptions: ho})
	if err != nil {
		return HTTPResult{}, fmt.Errorf("fortio %s: %w", o.URL, err)
	}
	out := lat.result()
	out.Sockets = res.SocketCount
	out.Seconds = res.ActualDuration.Seconds()
	out.QPS = res.ActualQPS
	for code, n := range res.RetCodes {
		if code < 200 || code > 299 {
			out.Errors += n
		}
	}
	if out.Requests == 0 {
		return out, fmt.Errorf("fortio %s: no request completed", o.URL)
	}
	return out, nil
}

// latencies collects every request's latency (fortio's AccessLogger).
type latencies struct {
	mu      sync.Mutex
	samples []float64
}

func (l *latencies) Start(ctx context.Context, _ periodic.ThreadID, _ int64, _ time.Time) context.Context {
	return ctx
}

func (l *latencies) Report(_ context.Context, _ periodic.ThreadID, _ int64, _ time.Time, latency float64, _ bool, _ string) {
	l.mu.Lock()
	l.samples = append(l.samples, latency)
	l.mu.Unlock()
}

func (l *latencies) Info() string { return "l4bench latencies" }

func (l *latencies) result() HTTPResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.samples)
	slices.Sort(s)
	return HTTPResult{
		Requests: int64(len(s)),
		P50:      percentile(s, 50), P90: percentile(s, 90), P99: percentile(s, 99), Max: percentile(s, 100),
	}
}

// percentile returns the p-th percentile (0–100) of sorted, interpolating
// linearly between the two nearest ranks; 0 for no samples.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p / 100 * float64(len(sorted)-1)
	lo := int(pos)
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// bulkSend writes whole sinkBlocks to the sink at addr over one connection
// for about d, then reads the sink's acknowledgements (one byte per block)
// until the last block is acknowledged. Acknowledgements are tiny, so
// leaving them in the receive buffer while sending costs nothing.
func bulkSend(ctx context.Context, addr string, d time.Duration) (bulkResult, error) {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return bulkResult{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	chunk := make([]byte, 256<<10)
	var sent int64
	start := time.Now()
	for time.Since(start) < d {
		for n := 0; n < sinkBlock; n += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return bulkResult{}, fmt.Errorf("write to %s: %w", addr, err)
			}
		}
		sent++
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64)
	for acked := int64(0); acked < sent; {
		n, err := c.Read(buf)
		acked += int64(n)
		if err != nil && acked < sent {
			return bulkResult{}, fmt.Errorf("%s acknowledged %d of %d blocks: %w", addr, acked, sent, err)
		}
	}
	return bulkResult{Bytes: sent * sinkBlock, Seconds: time.Since(start).Seconds()}, nil
}
