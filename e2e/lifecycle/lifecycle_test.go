//go:build e2e

// Package lifecycle tests the local cluster's own life: Down leaves the host
// as it was, Up starts from nothing within the warm-start budget, recovers
// after its processes are killed by hand, and is a no-op on a healthy
// cluster. It stops and starts the shared cluster, so `make e2e` runs it
// after the other e2e tests, on its own.
package lifecycle

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambientlite/mesh/e2e/cluster"
	"github.com/google/go-cmp/cmp"
)

func TestLifecycle(t *testing.T) {
	cfg := cluster.Config{StateDir: os.Getenv("AMBIENT_LITE_STATE_DIR")}
	ctx := t.Context()
	log := testWriter{t}

	c, err := cluster.Up(ctx, cfg, log)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	// The sysctls as they were before the cluster first changed them.
	var snap struct {
		Sysctls map[string]string `json:"sysctls"`
	}
	b, err := os.ReadFile(filepath.Join(c.StateDir, "host-snapshot.json"))
	if err != nil {
		t.Fatalf("read the host snapshot: %v", err)
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatal(err)
	}

	t.Run("down leaves nothing behind", func(t *testing.T) {
		if err := cluster.Down(ctx, c, log); err != nil {
			t.Fatalf("down: %v", err)
		}
		left, err := cluster.Leftovers(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("left on the host after down:\n  %s", strings.Join(left, "\n  "))
		}
		got := map[string]string{}
		for k := range snap.Sysctls {
			v, _ := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")))
			got[k] = strings.TrimSpace(string(v))
		}
		if diff := cmp.Diff(snap.Sysctls, got); diff != "" {
			t.Errorf("sysctls not restored (-before +after down):\n%s", diff)
		}
	})

	t.Run("up from nothing", func(t *testing.T) {
		start := time.Now()
		if _, err := cluster.Up(ctx, c, log); err != nil {
			t.Fatalf("up: %v", err)
		}
		t.Logf("warm start from nothing: %s (budget 60s)", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("up recovers after its processes are killed by hand", func(t *testing.T) {
		pids, _ := filepath.Glob(filepath.Join(c.StateDir, "pids", "*.pid"))
		if len(pids) == 0 {
			t.Fatal("no PID files")
		}
		for _, f := range pids {
			b, _ := os.ReadFile(f)
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := cluster.Status(ctx, c, log); err == nil {
			t.Fatal("status says healthy with every component killed")
		}
		if _, err := cluster.Up(ctx, c, log); err != nil {
			t.Fatalf("up after kill: %v", err)
		}
		if err := cluster.Status(ctx, c, log); err != nil {
			t.Fatalf("status after recovery: %v", err)
		}
	})

	t.Run("up on a healthy cluster is a no-op", func(t *testing.T) {
		start := time.Now()
		if _, err := cluster.Up(ctx, c, log); err != nil {
			t.Fatalf("up: %v", err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("up on a healthy cluster took %s; it should return at once", d)
		}
	})
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
