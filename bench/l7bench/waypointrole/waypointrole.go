// Package waypointrole is the waypoint process of the l7bench benchmark:
// the waypoint binary's main (waypoint/proxy.Run, what
// waypoint/cmd/waypoint runs) with what the bench needs around it. Its
// command, l7bench-waypoint, links nothing of the benchmark's own (no
// fortio, no Kubernetes types, no istiod-lite), so that the memory the bench
// measures is the waypoint's.
package waypointrole

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ambientlite/mesh/bench/profiling"
	"github.com/ambientlite/mesh/waypoint/proxy"
)

// ErrUsage marks a command-line mistake; main exits 2 for it.
var ErrUsage = errors.New("usage error")

// Run runs the waypoint with the flags after "--": its JSON log goes to
// -log (at its default level a line per request: not for the bench's
// terminal); "ready" is printed on stdout once its readiness endpoint
// answers 200 (certificate from the CA, configuration from xDS, HBONE
// listener up); stdin takes the commands of package profiling, so that the
// waypoint needs no profiling flag of its own. When ctx ends (SIGTERM) or
// stdin closes, the waypoint drains and Run returns.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("waypoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logPath := fs.String("log", "", "file for the waypoint's log (required)")
	ready := fs.String("ready-url", "http://127.0.0.1:15021/healthz/ready", "the waypoint's readiness URL (its --status-addr)")
	profileDir := fs.String("profile-dir", "", "directory for CPU profiles asked for on stdin (waypoint-<phase>.pprof)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *logPath == "" {
		return fmt.Errorf("%w: -log is required", ErrUsage)
	}
	logFile, err := os.Create(*logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	// The waypoint stops on its own context, after the bench's commands
	// end, so that a profile is written before it drains.
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- proxy.Run(runCtx, fs.Args(), io.Discard, logFile) }()

	if err := waitReady(ctx, *ready, done); err != nil {
		stop()
		return fmt.Errorf("%w (log: %s)", err, lastLines(*logPath, 5))
	}
	fmt.Fprintln(stdout, "ready")
	cmdErr := profiling.ServeCommands(ctx, stdin, *profileDir, "waypoint")
	stop()
	return errors.Join(cmdErr, <-done)
}

// waitReady polls url until it answers 200, the waypoint returns (done) or
// ctx ends.
func waitReady(ctx context.Context, url string, done <-chan error) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		if resp, err := client.Get(url); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(body))
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("the waypoint ended before it was ready: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("the waypoint is not ready (%s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// lastLines returns the last n lines of the file at path, joined by " | ".
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}
