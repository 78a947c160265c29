package proxy

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and capture rules; run `go test` as root")
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s is needed to build the test namespaces", bin)
		}
	}
}

// newNetNS creates a network namespace held by a parked, locked OS thread
// and returns its path, /proc/<pid>/task/<tid>/ns/net. Nothing is mounted
// and /run/netns is not touched: the namespace goes away when cleanup
// ends the thread and the last socket in it is closed.
func newNetNS(t testing.TB) string {
	t.Helper()
	type result struct {
		path string
		err  error
	}
	ch := make(chan result, 1)
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		// Never unlocked: the thread, now in another namespace, exits
		// with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())}
		<-stop
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("unshare network namespace: %v", r.err)
	}
	t.Cleanup(func() {
		close(stop)
		<-exited
	})
	return r.path
}

// inNS runs a command inside the namespace at ns.
func inNS(t testing.TB, ns string, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
}
