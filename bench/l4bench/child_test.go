package l4bench

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{fn: func(l string) { got = append(got, l) }}
	for _, chunk := range []string{"rea", "dy\nresult {\"a\"", ":1}\r\n\npartial"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"ready", `result {"a":1}`, ""}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestChild runs a real process: lines on stdout, stderr prefixed, the exit
// reported with the last stderr lines.
func TestChild(t *testing.T) {
	var logs syncBuffer
	c, err := StartChild("sh", []string{"sh", "-c", `echo noise; echo ready; echo "$L4BENCH_TEST" >&2; exit 3`}, []string{"L4BENCH_TEST=oops"}, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(time.Second)
	if l, err := c.WaitLine(context.Background(), "ready", 5*time.Second); err != nil || l != "ready" {
		t.Fatalf("waitLine: %q, %v", l, err)
	}
	_, err = c.WaitLine(context.Background(), "never", 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "oops") {
		t.Errorf("err = %v, want the exit status and the last stderr line", err)
	}
	if !strings.Contains(logs.String(), "  [sh] oops\n") {
		t.Errorf("stderr not forwarded with the name: %q", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the child's writer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
