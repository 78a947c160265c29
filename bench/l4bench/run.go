package l4bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// ErrUsage marks a command-line mistake; main exits 2 for it.
var ErrUsage = errors.New("usage error")

const usage = `l4bench: the ztunnel data-plane benchmark against direct TCP, HAProxy and stunnel.

Usage:
  l4bench [flags]      run the benchmark (as root) and print markdown tables on stdout
  l4bench -h           the flags

The roles it starts itself (not for direct use): app, load, ztunnel.
`

// Run runs the l4bench command line; args are the arguments after the
// program name. Results go to stdout, progress and the children's logs to
// stderr. stdin is read by the roles (commands from the bench).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		err := RunRole(ctx, args[0], args[1:], stdin, stdout, stderr)
		if errors.Is(err, errUnknownRole) {
			fmt.Fprint(stderr, usage)
		}
		return err
	}
	var cfg Config
	fs := flag.NewFlagSet("l4bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage+"\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.DurationVar(&cfg.LatencyDuration, "duration", 10*time.Second, "fixed-rate phase, measured time per path")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured load before each fixed-rate and connection-rate measurement")
	fs.Float64Var(&cfg.QPS, "qps", 1000, "fixed-rate phase: requests per second")
	fs.IntVar(&cfg.Connections, "c", 16, "fixed-rate phase: keep-alive connections")
	fs.IntVar(&cfg.Payload, "payload", 1024, "fixed-rate phase: request body bytes (echoed back)")
	fs.DurationVar(&cfg.ConnDuration, "conn-duration", 5*time.Second, "connection-rate phase, measured time per path")
	fs.IntVar(&cfg.ConnConcurrency, "conn-c", 8, "connection-rate phase: concurrent clients")
	fs.DurationVar(&cfg.ThroughputDuration, "throughput-duration", 5*time.Second, "throughput phase, time per path")
	paths := fs.String("paths", strings.Join(allPaths, ","), "paths to measure, comma-separated")
	fs.StringVar(&cfg.ProfileDir, "cpuprofile-dir", "", "write CPU profiles of both ztunnels per phase here (ztunnel-<node>-<phase>.pprof)")
	fs.IntVar(&cfg.ZtunnelGOMAXPROCS, "ztunnel-gomaxprocs", 0, "GOMAXPROCS of the ztunnel processes (0: Go's default, the number of CPUs)")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the run's directory (configs, certificates, access logs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	cfg.Paths = strings.Split(*paths, ",")
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return runBench(ctx, cfg, stdout, stderr)
}

var errUnknownRole = fmt.Errorf("%w: unknown command", ErrUsage)

// RunRole runs one of the processes a benchmark starts from its own binary:
//
//   - "app": the server pod's application, fortio's echo handler and a
//     throughput sink (app.go);
//   - "load": the load generator in the client pod (load.go; RunLoad
//     starts it and measures over it);
//   - "ztunnel": one node's ztunnel with static routes (ztunnel.go;
//     RunZtunnel runs it with routes from an xDS server).
//
// args are the role's flags; a role reads commands on stdin and prints
// its state on stdout, line by line. Another benchmark's binary (l7bench)
// runs the same roles by calling RunRole.
func RunRole(ctx context.Context, role string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch role {
	case "app":
		return runApp(ctx, args, stdin, stdout, stderr)
	case "load":
		return runLoad(ctx, args, stdout, stderr)
	case "ztunnel":
		return runZtunnel(ctx, args, stdin, stdout, stderr, nil)
	}
	return fmt.Errorf("%w %q", errUnknownRole, role)
}

// allPaths are the paths in the order they are measured and printed.
var allPaths = []string{"direct", "ztunnel", "haproxy", "stunnel"}

// Config is one benchmark run. Run's flags set every field; the defaults
// are the flags'.
type Config struct {
	// LatencyDuration is the measured time of the fixed-rate phase per
	// path (default 10s) after Warmup (2s) at the same rate.
	LatencyDuration, Warmup time.Duration
	// QPS, Connections and Payload shape the fixed-rate phase: 1,000
	// requests/s over 16 keep-alive connections with 1,024-byte bodies.
	QPS         float64
	Connections int
	Payload     int
	// ConnDuration and ConnConcurrency shape the connection-rate phase
	// (5s, 8 clients, one request per connection, no rate limit).
	ConnDuration    time.Duration
	ConnConcurrency int
	// ThroughputDuration is the single-stream phase per path (5s).
	ThroughputDuration time.Duration
	// Paths are the paths to measure, of allPaths; "direct" is always
	// measured as it is the baseline.
	Paths []string
	// ProfileDir, when set, receives CPU profiles of both ztunnels, one per
	// phase of the ztunnel path.
	ProfileDir string
	// ZtunnelGOMAXPROCS, when positive, is the ztunnels' GOMAXPROCS.
	ZtunnelGOMAXPROCS int
	// KeepDir keeps the run's temporary directory.
	KeepDir bool
}

// Validate reports what is wrong with c.
func (c *Config) Validate() error {
	var errs []error
	for _, d := range []time.Duration{c.LatencyDuration, c.ConnDuration, c.ThroughputDuration} {
		if d <= 0 {
			errs = append(errs, errors.New("durations must be positive"))
			break
		}
	}
	if c.Warmup < 0 {
		errs = append(errs, errors.New("-warmup must not be negative"))
	}
	if c.QPS <= 0 || c.Connections <= 0 || c.ConnConcurrency <= 0 || c.Payload < 0 {
		errs = append(errs, errors.New("-qps, -c and -conn-c must be positive, -payload not negative"))
	}
	for _, p := range c.Paths {
		if !slices.Contains(allPaths, p) {
			errs = append(errs, fmt.Errorf("unknown path %q (known: %s)", p, strings.Join(allPaths, ", ")))
		}
	}
	if c.ProfileDir != "" {
		if st, err := os.Stat(c.ProfileDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("-cpuprofile-dir %s is not a directory", c.ProfileDir))
		}
	}
	return errors.Join(errs...)
}
