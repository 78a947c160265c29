// Command pause is the pod sandbox ("pause") process of the local cluster.
// containerd starts it as PID 1 of every pod sandbox, where it holds the
// pod's namespaces open. As PID 1 it inherits every orphaned process of the
// pod, so it reaps them (on SIGCHLD, with a non-blocking wait4 loop) lest
// they pile up as zombies. It exits 0 on SIGTERM or SIGINT and ignores its
// arguments. It has no logic worth a package, hence no Run: it is built
// static into the image <prefix>/pause:<tag> by e2e/images.
package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Buffered: the runtime drops a signal it cannot deliver at once, and
	// SIGCHLDs coalesce anyway, which is why reap loops.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// Children that exited before Notify sent their SIGCHLD to nobody.
	reap()
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none exited yet
			return
		}
	}
}
