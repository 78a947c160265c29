// Package nodeagent is the node agent of Ambient Lite's ztunnel DaemonSet:
// it decides which pods on its node are in the ambient mesh, installs the
// in-pod capture rules (package capture) in their network namespaces, and
// hands those namespaces to ztunnel over a unix socket (package zds). It
// does what Istio's istio-cni node agent does in ambient mode:
//
//   - watches the pods of its node and all namespaces, and enrols a pod when
//     it or its namespace is labelled istio.io/dataplane-mode=ambient (a pod
//     label "none" opts out; host-network pods never), without restarting
//     it: a running pod's namespace is found through /proc;
//   - serves the chained CNI plugin (package cniplugin), so that a new pod
//     is captured before its containers start;
//   - fails closed: rules go in before ztunnel is told, and stay while
//     ztunnel is away, so enrolled traffic is refused rather than let
//     through; pods enrolled meanwhile are queued for ztunnel;
//   - SNATs the kubelet's probes to enrolled pods in the host namespace
//     (table inet ambient_lite_host) so that they pass uncaptured;
//   - annotates enrolled pods ambient.istio.io/redirection.
//
// It runs on the host network, privileged (CAP_NET_ADMIN, CAP_SYS_ADMIN),
// with the host's /proc. See README.md.
package nodeagent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/cniplugin"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
)

// Agent is the node agent. Create it with New and run it once with Run.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	client kubernetes.Interface

	podInformer cache.SharedIndexInformer
	nsInformer  cache.SharedIndexInformer
	pods        corelisters.PodLister
	namespaces  corelisters.NamespaceLister
	queue       workqueue.TypedRateLimitingInterface[string]

	zt     *zds.Server
	host   *hostRules
	finder netnsFinder

	ready chan struct{} // closed once the caches synced and the start-up pass ran

	// mu guards the enrolled set and serializes every change to it (capture
	// rules, ztunnel, host set): one pod at a time, whether from the
	// informers or from a CNI ADD.
	mu       sync.Mutex
	entries  map[types.UID]*podEntry
	byKey    map[string]types.UID
	prefetch map[types.UID]*os.File // namespaces found by the start-up scan
}

// podEntry is an enrolled pod.
type podEntry struct {
	key   string // namespace/name
	pod   zds.Pod
	netns *os.File
	id    nsID
	// leaving: ztunnel was told the pod left, but removing the rules failed
	// and is retried. The rules are still in place.
	leaving bool
}

// EnrolledPod describes one enrolled pod.
type EnrolledPod struct {
	UID       string
	Namespace string
	Name      string
	IPs       []netip.Addr
	// NetNSInode identifies the pod's network namespace.
	NetNSInode uint64
	// Acked is true once the connected ztunnel took the pod.
	Acked bool
}

// New returns an agent for cfg, watching the cluster through client. A nil
// logger means slog.Default().
func New(cfg Config, client kubernetes.Interface, logger *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node agent config: %w", err)
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	a := &Agent{
		cfg:     cfg,
		log:     logger,
		client:  client,
		host:    &hostRules{cfg: cfg.Host},
		finder:  procFinder{procDir: cfg.ProcDir},
		ready:   make(chan struct{}),
		entries: map[types.UID]*podEntry{},
		byKey:   map[string]types.UID{},
	}
	a.zt = zds.NewServer(zds.ServerConfig{
		Logger:     logger.With("component", "zds"),
		AckTimeout: cfg.AckTimeout,
		// The annotation turns from pending to enabled.
		OnAck: func(p zds.Pod) { a.queue.Add(p.Namespace + "/" + p.Name) },
	})
	a.setupInformers()
	return a, nil
}

// Run serves until ctx ends. In order: it listens on the CNI and ztunnel
// sockets, starts the informers, installs the CNI plugin, waits for the
// caches, captures every pod that should be (one /proc scan for all running
// ones), and only then serves ztunnel — whose first snapshot is therefore
// complete — and processes events. On return the pods keep their capture
// rules (fail closed until an agent and ztunnel are back); the host table is
// removed only if no pod is enrolled any more.
func (a *Agent) Run(ctx context.Context) error {
	cniLn, err := listenUnix(a.cfg.CNISocket)
	if err != nil {
		return err
	}
	defer os.Remove(a.cfg.CNISocket)
	if err := os.MkdirAll(filepath.Dir(a.cfg.ZtunnelSocket), 0o755); err != nil {
		cniLn.Close()
		return fmt.Errorf("create socket directory: %w", err)
	}
	ztLn, err := zds.Listen(a.cfg.ZtunnelSocket)
	if err != nil {
		cniLn.Close()
		return err
	}
	defer os.Remove(a.cfg.ZtunnelSocket)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var runErr error
	fail := func(err error) { // a server died: stop the agent
		failMu.Lock()
		runErr = errors.Join(runErr, err)
		failMu.Unlock()
		cancel()
	}

	cniSrv := &http.Server{
		Handler:           cniplugin.AgentHandler(a.cniAdd, a.readyErr),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       cniplugin.AgentConnContext,
	}
	wg.Go(func() {
		if err := cniSrv.Serve(cniplugin.AgentListener(cniLn)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(fmt.Errorf("CNI plugin server: %w", err))
		}
	})

	wg.Go(func() { a.podInformer.Run(ctx.Done()) })
	wg.Go(func() { a.nsInformer.Run(ctx.Done()) })

	installed := a.installCNI()

	if !cache.WaitForCacheSync(ctx.Done(), a.podInformer.HasSynced, a.nsInformer.HasSynced) {
		cniSrv.Close()
		a.queue.ShutDown()
		wg.Wait()
		a.zt.Close()
		ztLn.Close()
		return runErr
	}
	a.startupPass(ctx)
	close(a.ready)
	a.log.Info("node agent ready", "node", a.cfg.NodeName, "enrolled", len(a.Enrolled()))

	wg.Go(func() {
		if err := a.zt.Serve(ctx, ztLn); err != nil {
			fail(fmt.Errorf("ztunnel server: %w", err))
		}
	})
	wg.Go(func() { a.worker(ctx) })
	wg.Go(func() { a.periodic(ctx, installed) })

	<-ctx.Done()
	a.queue.ShutDown()
	// Let CNI requests in flight finish (their pods are then enrolled and
	// keep their rules like the others).
	sctx, scancel := context.WithTimeout(context.Background(), a.cfg.PodLookupTimeout+5*time.Second)
	if err := cniSrv.Shutdown(sctx); err != nil {
		cniSrv.Close()
	}
	scancel()
	wg.Wait()
	a.shutdown()
	return runErr
}

func (a *Agent) shutdown() {
	a.zt.Close()
	a.mu.Lock()
	n := len(a.entries)
	for uid, e := range a.entries {
		e.netns.Close()
		delete(a.entries, uid)
	}
	for uid, f := range a.prefetch {
		f.Close()
		delete(a.prefetch, uid)
	}
	a.mu.Unlock()
	if n == 0 {
		if err := a.host.remove(); err != nil {
			a.log.Warn("remove host probe rules", "err", err)
		}
	} else {
		a.log.Info("leaving capture and host probe rules in place for enrolled pods", "pods", n)
	}
	if a.cfg.DisableCNIInstall {
		return
	}
	uninstall := a.cfg.UninstallCNIOnExit
	if !uninstall && a.cfg.RemovedFromNode != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		uninstall = a.cfg.RemovedFromNode(ctx)
		cancel()
		if uninstall {
			a.log.Info("the mesh is being removed from this node: removing the CNI plugin, new pods start with plain networking")
		}
	}
	if uninstall {
		if err := cniplugin.Uninstall(a.cfg.CNI); err != nil {
			a.log.Warn("uninstall CNI plugin", "err", err)
		}
	}
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for the CNI plugin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (a *Agent) readyErr() error {
	select {
	case <-a.ready:
		return nil
	default:
		return errors.New("node agent starting: caches not synced yet")
	}
}

// installCNI chains the plugin (idempotent) and reports whether it is in
// place.
func (a *Agent) installCNI() bool {
	if a.cfg.DisableCNIInstall {
		return true
	}
	path, err := cniplugin.Install(a.cfg.CNI)
	if err != nil {
		a.log.Warn("install CNI plugin; will retry", "err", err)
		return false
	}
	a.log.Debug("CNI plugin chained", "conflist", path)
	return true
}

// installRetry is how often a failed plugin install is retried (e.g. the
// node's network plugin has not written its configuration yet).
const installRetry = 5 * time.Second

// periodic re-checks the CNI configuration and the pods' rules every
// ReconcileInterval, and retries a failed install sooner.
func (a *Agent) periodic(ctx context.Context, installed bool) {
	check := time.NewTicker(a.cfg.ReconcileInterval)
	defer check.Stop()
	retry := time.NewTicker(installRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			if !installed {
				installed = a.installCNI()
			}
		case <-check.C:
			installed = a.installCNI()
			a.checkDrift()
		}
	}
}

// checkDrift re-applies the capture rules of pods whose rules are missing or
// differ from the configuration.
func (a *Agent) checkDrift() {
	want, err := capture.Ruleset(a.cfg.Capture)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.entries {
		if e.leaving {
			continue
		}
		have, err := capture.Dump(fdPath(e.netns))
		if err == nil && sameRules(want, have) {
			continue
		}
		if err != nil && !errors.Is(err, capture.ErrNotInstalled) {
			continue // e.g. the namespace is going away with its pod
		}
		a.log.Warn("capture rules drifted; re-applying", "pod", e.key)
		if err := capture.Apply(fdPath(e.netns), a.cfg.Capture); err != nil {
			a.log.Error("re-apply capture rules", "pod", e.key, "err", err)
		}
	}
}

// sameRules compares chains and rules, not counters nor routing.
func sameRules(a, b *capture.Table) bool {
	return slices.EqualFunc(a.Chains, b.Chains, func(x, y capture.Chain) bool {
		return x.Name == y.Name && x.Type == y.Type && x.Hook == y.Hook && x.Priority == y.Priority &&
			slices.EqualFunc(x.Rules, y.Rules, func(r, s capture.Rule) bool { return r.Name == s.Name && r.Expr == s.Expr })
	})
}

// Enrolled lists the pods the agent holds, sorted by namespace and name.
func (a *Agent) Enrolled() []EnrolledPod {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]EnrolledPod, 0, len(a.entries))
	for uid, e := range a.entries {
		if e.leaving {
			continue
		}
		out = append(out, EnrolledPod{
			UID: string(uid), Namespace: e.pod.Namespace, Name: e.pod.Name,
			IPs: slices.Clone(e.pod.IPs), NetNSInode: e.id.ino, Acked: a.zt.Acked(string(uid)),
		})
	}
	slices.SortFunc(out, func(x, y EnrolledPod) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	return out
}
