package controlplane

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// writer is work only the leader does: it runs until ctx ends.
type writer struct {
	name string
	run  func(ctx context.Context) error
}

// lead runs the writers while this replica holds the Lease, and campaigns
// again after losing it, until ctx is done. Without election it just runs
// them.
func lead(ctx context.Context, client kubernetes.Interface, o Options, leader *atomic.Bool, log *slog.Logger, writers []writer) {
	runAll := func(ctx context.Context) {
		leader.Store(true)
		defer leader.Store(false)
		var wg sync.WaitGroup
		for _, w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.run(ctx); err != nil && ctx.Err() == nil {
					log.Error("leader task failed", "task", w.name, "err", err)
				}
			}()
		}
		wg.Wait()
	}
	if !o.LeaderElect {
		runAll(ctx)
		return
	}
	id := os.Getenv("POD_NAME")
	if id == "" {
		id, _ = os.Hostname()
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: o.LeaseName, Namespace: o.Namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Name:            o.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading: writing status, waypoints and root configmaps", "lease", o.Namespace+"/"+o.LeaseName, "identity", id)
					runAll(ctx)
				},
				OnStoppedLeading: func() {
					log.Info("not leading", "lease", o.Namespace+"/"+o.LeaseName)
				},
				OnNewLeader: func(current string) {
					if current != id {
						log.Info("another replica leads", "leader", current)
					}
				},
			},
		})
		if err != nil {
			log.Error("leader election", "err", err)
			return
		}
		le.Run(ctx)
	}
}
