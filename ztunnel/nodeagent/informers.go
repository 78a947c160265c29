package nodeagent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// setupInformers watches the pods scheduled on this node (field selector
// spec.nodeName) and all namespaces. Every event becomes a pod key
// ("namespace/name") in a rate-limited work queue; a namespace event queues
// all of the namespace's pods. Failed reconciles are retried with
// exponential backoff (50ms up to 10s) for as long as the agent runs: a pod
// that cannot be captured yet (no namespace found, rules failed) keeps being
// tried.
func (a *Agent) setupInformers() {
	a.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ambient-nodeagent"},
	)
	podFactory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
		}))
	nsFactory := informers.NewSharedInformerFactory(a.client, 0)
	a.podInformer = podFactory.Core().V1().Pods().Informer()
	a.nsInformer = nsFactory.Core().V1().Namespaces().Informer()
	a.pods = podFactory.Core().V1().Pods().Lister()
	a.namespaces = nsFactory.Core().V1().Namespaces().Lister()
	// Keep only what the agent reads.
	strip := func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		return obj, nil
	}
	a.podInformer.SetTransform(strip)
	a.nsInformer.SetTransform(strip)

	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	a.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	a.nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: a.enqueueNamespace,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Namespace)
			n, ok2 := obj.(*corev1.Namespace)
			if ok1 && ok2 && o.Labels[LabelDataplaneMode] == n.Labels[LabelDataplaneMode] {
				return
			}
			a.enqueueNamespace(obj)
		},
		DeleteFunc: a.enqueueNamespace,
	})
}

func (a *Agent) enqueueNamespace(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	pods, err := a.pods.Pods(ns.Name).List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		a.queue.Add(p.Namespace + "/" + p.Name)
	}
}

// worker processes the queue until it shuts down.
func (a *Agent) worker(ctx context.Context) {
	for {
		key, shutdown := a.queue.Get()
		if shutdown {
			return
		}
		if err := a.reconcile(ctx, key); err != nil {
			a.log.Warn("reconcile pod; will retry", "pod", key, "err", err, "retries", a.queue.NumRequeues(key))
			a.queue.AddRateLimited(key)
		} else {
			a.queue.Forget(key)
		}
		a.queue.Done(key)
	}
}
