package l7bench

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

	"github.com/ambientlite/mesh/bench/l4bench"
)

// ErrUsage marks a command-line mistake; main exits 2 for it. It is
// l4bench's, so that the roles both share report it the same way.
var ErrUsage = l4bench.ErrUsage

const usage = `l7bench: the waypoint (L7) benchmark against the L4 path, direct, and HAProxy doing the same split.

Usage:
  l7bench [flags]      run the benchmark (as root) and print markdown tables on stdout
  l7bench -h           the flags

The roles it starts itself (not for direct use): l4bench's app, load and
ztunnel (here resolving from istiod-lite's xDS). The waypoint is the binary l7bench-waypoint (bench/cmd/l7bench-waypoint),
looked for next to this one unless -waypoint-bin says where.
`

// Run runs the l7bench command line; args are the arguments after the
// program name. Results go to stdout, progress and the children's logs to
// stderr; stdin is read by the roles (commands from the bench).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if args[0] == "ztunnel" {
			return l4bench.RunZtunnel(ctx, args[1:], stdin, stdout, stderr, newMeshResolver)
		}
		err := l4bench.RunRole(ctx, args[0], args[1:], stdin, stdout, stderr)
		if errors.Is(err, ErrUsage) && !slices.Contains([]string{"app", "load", "ztunnel"}, args[0]) {
			fmt.Fprint(stderr, usage)
		}
		return err
	}
	var cfg Config
	fs := flag.NewFlagSet("l7bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage+"\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.DurationVar(&cfg.LatencyDuration, "duration", 10*time.Second, "fixed-rate phase, measured time per path")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured load before each measurement (at most 1s before the saturation phase)")
	fs.Float64Var(&cfg.QPS, "qps", 1000, "fixed-rate phase: requests per second")
	fs.IntVar(&cfg.Connections, "c", 16, "keep-alive connections, both phases")
	fs.IntVar(&cfg.Payload, "payload", 1024, "request body bytes (POST, echoed back), both phases; 0: GET")
	fs.DurationVar(&cfg.SaturationDuration, "saturation-duration", 10*time.Second, "saturation phase (as many requests as the path carries), measured time per path")
	paths := fs.String("paths", strings.Join(allPaths, ","), "paths to measure, comma-separated (direct is always measured)")
	fs.StringVar(&cfg.ProfileDir, "cpuprofile-dir", "", "write CPU profiles of the waypoint per phase here (waypoint-<phase>.pprof)")
	fs.StringVar(&cfg.WaypointBin, "waypoint-bin", "", "the l7bench-waypoint binary (default: next to this one)")
	fs.StringVar(&cfg.WaypointLogLevel, "waypoint-log-level", "info", "the waypoint's --log-level; at info (its default) it logs every request")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the run's directory (configurations, certificates, logs)")
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

// allPaths are the paths in the order they are measured and printed.
var allPaths = []string{"direct", "ztunnel", "waypoint", "haproxy", "haproxy-mtls"}

// Config is one benchmark run. Run's flags set every field; the defaults
// are the flags'.
type Config struct {
	// LatencyDuration is the measured time of the fixed-rate phase per
	// path (default 10s), after Warmup (2s) at the same rate.
	LatencyDuration, Warmup time.Duration
	// QPS is the fixed rate (1,000 requests/s); Connections (16) and
	// Payload (1,024-byte POST bodies, echoed back) shape both phases.
	QPS         float64
	Connections int
	Payload     int
	// SaturationDuration is the measured time of the saturation phase per
	// path (10s, after min(Warmup, 1s)).
	SaturationDuration time.Duration
	// Paths are the paths to measure, of allPaths; "direct" is always
	// measured as it is the baseline.
	Paths []string
	// ProfileDir, when set, receives CPU profiles of the waypoint, one per
	// phase.
	ProfileDir string
	// WaypointBin is the l7bench-waypoint binary (bench/cmd/l7bench-waypoint);
	// default: the file of that name in this binary's directory.
	WaypointBin string
	// WaypointLogLevel is the waypoint's --log-level (default "info", its
	// own default: a log line per request).
	WaypointLogLevel string
	// KeepDir keeps the run's temporary directory.
	KeepDir bool
}

// Validate reports what is wrong with c.
func (c *Config) Validate() error {
	var errs []error
	if c.LatencyDuration <= 0 || c.SaturationDuration <= 0 {
		errs = append(errs, errors.New("durations must be positive"))
	}
	if c.Warmup < 0 {
		errs = append(errs, errors.New("-warmup must not be negative"))
	}
	if c.QPS <= 0 || c.Connections <= 0 || c.Payload < 0 {
		errs = append(errs, errors.New("-qps and -c must be positive, -payload not negative"))
	}
	for _, p := range c.Paths {
		if !slices.Contains(allPaths, p) {
			errs = append(errs, fmt.Errorf("unknown path %q (known: %s)", p, strings.Join(allPaths, ", ")))
		}
	}
	switch c.WaypointLogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("-waypoint-log-level %q: want debug, info, warn or error", c.WaypointLogLevel))
	}
	if c.ProfileDir != "" {
		if st, err := os.Stat(c.ProfileDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("-cpuprofile-dir %s is not a directory", c.ProfileDir))
		}
	}
	return errors.Join(errs...)
}
