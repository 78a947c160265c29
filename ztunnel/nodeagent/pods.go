package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/ambientlite/mesh/ztunnel/capture"
	"github.com/ambientlite/mesh/ztunnel/cniplugin"
	"github.com/ambientlite/mesh/ztunnel/nodeagent/zds"
)

// startupPass captures, before ztunnel is served, every pod of the node
// that should be: one /proc scan finds the namespaces of all running pods
// that need one (enrolled, or annotated by an earlier agent and no longer
// enrolled, whose rules must go). Failures are queued for retry.
func (a *Agent) startupPass(ctx context.Context) {
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		a.log.Error("list pods", "err", err)
		return
	}
	want := map[types.UID][]netip.Addr{}
	for _, p := range pods {
		ips := podIPs(p)
		if p.Spec.NodeName != a.cfg.NodeName || terminal(p) || len(ips) == 0 {
			continue
		}
		ns, _ := a.namespaces.Get(p.Namespace)
		if a.wants(ns, p) || p.Annotations[AnnotationRedirection] != "" {
			want[p.UID] = ips
		}
	}
	found, err := a.finder.find(want)
	if err != nil {
		a.log.Error("find pod network namespaces", "err", err)
	}
	a.mu.Lock()
	a.prefetch = found
	a.mu.Unlock()
	for _, p := range pods {
		key := p.Namespace + "/" + p.Name
		if err := a.reconcile(ctx, key); err != nil {
			a.log.Warn("capture pod at start-up; will retry", "pod", key, "err", err)
			a.queue.AddRateLimited(key)
		}
	}
	a.mu.Lock()
	for uid, f := range a.prefetch {
		f.Close()
		delete(a.prefetch, uid)
	}
	// Also drops addresses a previous agent left in the host sets.
	err = a.syncHostLocked()
	a.mu.Unlock()
	if err != nil {
		a.log.Error("host probe rules", "err", err)
	}
}

// reconcile brings one pod (by key) in line: capture it if it should be,
// release it if it should not, and set its annotation.
func (a *Agent) reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		return err
	}
	if pod != nil && pod.Spec.NodeName != a.cfg.NodeName {
		pod = nil // the informer filters by node; a fake client does not
	}
	namespace, _ := a.namespaces.Get(ns)

	a.mu.Lock()
	e := a.entries[a.byKey[key]]
	if e != nil && (pod == nil || pod.UID != types.UID(e.pod.UID)) {
		// Deleted, or deleted and re-created under the same name.
		if err := a.releaseLocked(ctx, e, true); err != nil {
			a.mu.Unlock()
			return err
		}
		e = nil
	}
	if pod == nil {
		a.mu.Unlock()
		return nil
	}
	want := a.wants(namespace, pod)
	switch {
	case want && e == nil:
		err = a.captureRunningLocked(pod)
	case want && e != nil:
		err = a.refreshLocked(pod, e)
	case !want && e != nil:
		err = a.releaseLocked(ctx, e, terminal(pod))
	case !want && pod.Annotations[AnnotationRedirection] != "" && !terminal(pod):
		err = a.cleanStaleLocked(pod)
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	return a.syncAnnotation(ctx, pod)
}

// captureRunningLocked enrols a pod that runs already (found through
// /proc). A pod without an IP has no sandbox network yet: the CNI plugin, or
// the status update that brings its IP, will bring it back here.
func (a *Agent) captureRunningLocked(pod *corev1.Pod) error {
	ips := podIPs(pod)
	if len(ips) == 0 {
		return nil
	}
	f, err := a.findNetnsLocked(pod.UID, ips)
	if err != nil {
		return err
	}
	return a.enrolLocked(pod, ips, f)
}

func (a *Agent) findNetnsLocked(uid types.UID, ips []netip.Addr) (*os.File, error) {
	if f := a.prefetch[uid]; f != nil {
		delete(a.prefetch, uid)
		return f, nil
	}
	found, err := a.finder.find(map[types.UID][]netip.Addr{uid: ips})
	if err != nil {
		return nil, err
	}
	f := found[uid]
	if f == nil {
		return nil, fmt.Errorf("pod with IPs %v: %w", ips, errNetnsNotFound)
	}
	return f, nil
}

// enrolLocked captures pod in the namespace f (taking ownership of f):
// rules first, then ztunnel (queued if it is away), then the host set.
func (a *Agent) enrolLocked(pod *corev1.Pod, ips []netip.Addr, f *os.File) error {
	key := pod.Namespace + "/" + pod.Name
	if old := a.byKey[key]; old != "" && old != pod.UID && a.entries[old] != nil {
		// The pod was deleted and re-created under its name before the
		// informer told us: the old one is gone.
		if err := a.releaseLocked(context.Background(), a.entries[old], true); err != nil {
			f.Close()
			return err
		}
	}
	id, err := fstatNS(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("pod %s: stat network namespace: %w", key, err)
	}
	if err := capture.Apply(fdPath(f), a.cfg.Capture); err != nil {
		f.Close()
		return fmt.Errorf("pod %s: %w", key, err)
	}
	e := a.entries[pod.UID]
	switch {
	case e == nil:
		e = &podEntry{}
	case e.id == id:
		f.Close() // the same namespace, opened twice
		f = e.netns
	default:
		e.netns.Close() // a new sandbox
	}
	*e = podEntry{
		key:   key,
		netns: f,
		id:    id,
		pod: zds.Pod{
			UID: string(pod.UID), Name: pod.Name, Namespace: pod.Namespace,
			ServiceAccount: serviceAccount(pod), IPs: slices.Clone(ips),
		},
	}
	a.entries[pod.UID] = e
	a.byKey[key] = pod.UID
	a.log.Info("pod captured", "pod", key, "uid", pod.UID, "ips", ips, "netns", id.ino)
	if err := a.zt.Add(e.pod, e.netns); err != nil {
		return err
	}
	return a.syncHostLocked()
}

// refreshLocked updates an enrolled pod: IPs that the status now reports
// differently (ztunnel and the host set learn them), or a release that
// did not finish and is now undone.
func (a *Agent) refreshLocked(pod *corev1.Pod, e *podEntry) error {
	ips := podIPs(pod)
	if e.leaving {
		if len(ips) == 0 {
			ips = e.pod.IPs
		}
		f, err := dupNS(e.netns)
		if err != nil {
			return err
		}
		return a.enrolLocked(pod, ips, f)
	}
	if len(ips) == 0 || sameAddrs(ips, e.pod.IPs) {
		if a.host.needsSync() {
			return a.syncHostLocked() // an earlier sync failed
		}
		return nil
	}
	e.pod.IPs = ips
	if err := a.zt.Add(e.pod, e.netns); err != nil {
		return err
	}
	return a.syncHostLocked()
}

// releaseLocked takes a pod out of the mesh: ztunnel first (it waits for
// ztunnel's ack if one is connected), then the rules. For a pod that is
// gone or finished, removing the rules is best effort: its namespace goes
// away with it, and a failure there must not be retried forever.
func (a *Agent) releaseLocked(ctx context.Context, e *podEntry, gone bool) error {
	uid := types.UID(e.pod.UID)
	if !e.leaving {
		rctx, cancel := context.WithTimeout(ctx, 3*a.cfg.AckTimeout)
		if err := a.zt.Remove(rctx, e.pod.UID); err != nil {
			a.log.Warn("releasing pod without ztunnel's confirmation", "pod", e.key, "err", err)
		}
		cancel()
		e.leaving = true
	}
	if err := capture.Remove(fdPath(e.netns)); err != nil {
		if !gone {
			return fmt.Errorf("pod %s: %w", e.key, err)
		}
		a.log.Debug("remove rules from a finished pod's namespace", "pod", e.key, "err", err)
	}
	e.netns.Close()
	delete(a.entries, uid)
	if a.byKey[e.key] == uid {
		delete(a.byKey, e.key)
	}
	a.log.Info("pod released", "pod", e.key, "uid", uid, "gone", gone)
	return a.syncHostLocked()
}

// cleanStaleLocked removes rules an earlier agent left in a pod that is no
// longer enrolled (it still carries the annotation).
func (a *Agent) cleanStaleLocked(pod *corev1.Pod) error {
	ips := podIPs(pod)
	if len(ips) == 0 {
		return nil
	}
	f, err := a.findNetnsLocked(pod.UID, ips)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := capture.Remove(fdPath(f)); err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	a.log.Info("removed capture rules left by an earlier agent", "pod", pod.Namespace+"/"+pod.Name)
	return nil
}

func (a *Agent) syncHostLocked() error {
	var ips []netip.Addr
	for _, e := range a.entries {
		ips = append(ips, e.pod.IPs...)
	}
	return a.host.sync(ips)
}

// syncAnnotation sets ambient.istio.io/redirection: "enabled" once ztunnel
// took the pod, "pending" while it has not, absent when not enrolled.
// Like Istio it patches the pods/status subresource (less privilege).
func (a *Agent) syncAnnotation(ctx context.Context, pod *corev1.Pod) error {
	want := ""
	a.mu.Lock()
	if e := a.entries[pod.UID]; e != nil && !e.leaving {
		want = RedirectionPending
		if a.zt.Acked(string(pod.UID)) {
			want = RedirectionEnabled
		}
	}
	a.mu.Unlock()
	if pod.Annotations[AnnotationRedirection] == want {
		return nil
	}
	value := "null"
	if want != "" {
		value = fmt.Sprintf("%q", want)
	}
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%s}}}`, AnnotationRedirection, value)
	_, err := a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// cniAdd answers the CNI plugin's ADD: if the pod is enrolled, its sandbox
// namespace gets the capture rules before the answer goes back, so its
// containers never run uncaptured. netns is the namespace the plugin passed
// (nil: open req.NetNS here); cniAdd owns it.
func (a *Agent) cniAdd(ctx context.Context, req cniplugin.AddRequest, netns *os.File) (cniplugin.AddResponse, error) {
	kept := false
	defer func() {
		if netns != nil && !kept {
			netns.Close()
		}
	}()
	key := req.PodNamespace + "/" + req.PodName
	ctx, cancel := context.WithTimeout(ctx, a.cfg.PodLookupTimeout)
	defer cancel()
	select {
	case <-a.ready:
	case <-ctx.Done():
		return cniplugin.AddResponse{}, fmt.Errorf("node agent not ready yet (caches syncing); retry")
	}
	pod, ns, err := a.lookupForCNI(ctx, req)
	if err != nil {
		return cniplugin.AddResponse{}, err
	}
	if !a.wants(ns, pod) {
		return cniplugin.AddResponse{}, nil
	}
	f := netns
	if f == nil {
		if f, err = a.openHostPath(req.NetNS); err != nil {
			return cniplugin.AddResponse{}, fmt.Errorf("open pod network namespace: %w", err)
		}
	}
	kept = true // enrolLocked owns f
	ips := slices.Clone(req.IPs)
	if len(ips) == 0 {
		ips = podIPs(pod)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	a.mu.Lock()
	err = a.enrolLocked(pod, ips, f)
	a.mu.Unlock()
	a.queue.Add(key) // the annotation
	if err != nil {
		return cniplugin.AddResponse{}, err
	}
	return cniplugin.AddResponse{Enrolled: true}, nil
}

// lookupForCNI waits for the pod (with the plugin's UID, if it sent one)
// and its namespace to be in the caches.
func (a *Agent) lookupForCNI(ctx context.Context, req cniplugin.AddRequest) (*corev1.Pod, *corev1.Namespace, error) {
	for {
		pod, _ := a.pods.Pods(req.PodNamespace).Get(req.PodName)
		ns, _ := a.namespaces.Get(req.PodNamespace)
		if pod != nil && ns != nil && (req.PodUID == "" || string(pod.UID) == req.PodUID) {
			if pod.Spec.NodeName != a.cfg.NodeName {
				return nil, nil, fmt.Errorf("pod %s/%s is scheduled on node %q, this agent runs on %q", pod.Namespace, pod.Name, pod.Spec.NodeName, a.cfg.NodeName)
			}
			return pod, ns, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("pod %s/%s (uid %q) not in the node agent's cache after %v; the kubelet will retry",
				req.PodNamespace, req.PodName, req.PodUID, a.cfg.PodLookupTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sameAddrs(a, b []netip.Addr) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

func dupNS(f *os.File) (*os.File, error) {
	g, err := os.Open(fdPath(f))
	if err != nil {
		return nil, errors.Join(errors.New("reopen network namespace"), err)
	}
	return g, nil
}

// openHostPath opens a path of the host's mount namespace (the CNI plugin's
// CNI_NETNS, such as /var/run/netns/cni-…). It tries the path as this
// process sees it first; a namespace mounted by the runtime after this
// container started is not visible there unless the host's /var/run/netns is
// a shared mount propagated into the container, so it falls back to the
// host's root as seen through init's /proc entry (the DaemonSet has the
// host's PID namespace).
func (a *Agent) openHostPath(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err == nil {
		return f, nil
	}
	hf, herr := os.Open(filepath.Join(a.cfg.ProcDir, "1", "root", path))
	if herr != nil {
		return nil, fmt.Errorf("%w (and through the host's root: %v)", err, herr)
	}
	return hf, nil
}
