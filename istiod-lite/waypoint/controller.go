package waypoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// classKey is the queue key of the GatewayClass (cluster-scoped: no
// namespace, unlike every Gateway key).
var classKey = types.NamespacedName{Name: ClassName}

type queue = workqueue.TypedRateLimitingInterface[types.NamespacedName]

// Controller reconciles waypoint Gateways. Build it with New, start the
// informer factories, then call Run.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	gatewayInformer, classInformer                  cache.SharedIndexInformer
	deploymentInformer, serviceInformer, saInformer cache.SharedIndexInformer
	gateways                                        gatewaylisters.GatewayLister
	classes                                         gatewaylisters.GatewayClassLister
	deployments                                     appslisters.DeploymentLister
	services                                        corelisters.ServiceLister
	serviceAccounts                                 corelisters.ServiceAccountLister

	running atomic.Bool // Run is in progress
	recent  recent      // our writes the informers have not shown yet
}

// New checks cfg, fills in its defaults and registers the controller's
// informers with the factories (which the caller starts afterwards).
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	gws := cfg.GatewayInformers.Gateway().V1().Gateways()
	classes := cfg.GatewayInformers.Gateway().V1().GatewayClasses()
	deps := cfg.KubeInformers.Apps().V1().Deployments()
	svcs := cfg.KubeInformers.Core().V1().Services()
	sas := cfg.KubeInformers.Core().V1().ServiceAccounts()
	return &Controller{
		cfg:                cfg,
		log:                cfg.Logger.With("controller", "waypoint"),
		metrics:            m,
		gatewayInformer:    gws.Informer(),
		classInformer:      classes.Informer(),
		deploymentInformer: deps.Informer(),
		serviceInformer:    svcs.Informer(),
		saInformer:         sas.Informer(),
		gateways:           gws.Lister(),
		classes:            classes.Lister(),
		deployments:        deps.Lister(),
		services:           svcs.Lister(),
		serviceAccounts:    sas.Lister(),
	}, nil
}

// Run reconciles until ctx is done, with workers goroutines (at least 1).
// It waits for the informer caches (the factories must have been started),
// ensures the GatewayClass, and then reconciles every waypoint Gateway once
// and again whenever it, its GatewayClass or one of its objects changes;
// failures are retried with exponential backoff. Run returns nil when ctx
// ends; it may be called again afterwards (e.g. on regaining leadership),
// but not twice at once.
func (c *Controller) Run(ctx context.Context, workers int) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("waypoint: Run is already running")
	}
	defer c.running.Store(false)
	workers = max(workers, 1)

	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "waypoint"})
	defer q.ShutDown()

	synced, remove, err := c.addHandlers(q)
	defer remove()
	if err != nil {
		return err
	}
	c.log.Info("waiting for informer caches")
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended first
	}
	q.Add(classKey)
	c.log.Info("running", "workers", workers)

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c.processNext(ctx, q) {
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
	return nil
}

// addHandlers registers this run's event handlers, which feed q. It returns
// what must have synced before workers start, and how to unregister them.
func (c *Controller) addHandlers(q queue) ([]cache.InformerSynced, func(), error) {
	type reg struct {
		inf cache.SharedIndexInformer
		r   cache.ResourceEventHandlerRegistration
	}
	var regs []reg
	remove := func() {
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.r)
		}
	}
	owned := func(kind string) cache.ResourceEventHandler {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.enqueueOwner(q, kind, obj, false) },
			UpdateFunc: func(_, obj any) { c.enqueueOwner(q, kind, obj, false) },
			DeleteFunc: func(obj any) { c.enqueueOwner(q, kind, obj, true) },
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{c.gatewayInformer, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.enqueueGateway(q, obj, false) },
			UpdateFunc: func(_, obj any) { c.enqueueGateway(q, obj, false) },
			// Deleting a Gateway deletes its objects by garbage collection.
			DeleteFunc: func(obj any) { c.enqueueGateway(q, obj, true) },
		}},
		{c.classInformer, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.enqueueClass(q, obj) },
			UpdateFunc: func(_, obj any) { c.enqueueClass(q, obj) },
			DeleteFunc: func(obj any) { c.enqueueClass(q, obj) },
		}},
		{c.deploymentInformer, owned(writeDeployment)},
		{c.serviceInformer, owned(writeService)},
		{c.saInformer, owned(writeServiceAccount)},
	}
	var synced []cache.InformerSynced
	for _, h := range handlers {
		r, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return nil, remove, fmt.Errorf("waypoint: add event handler: %w", err)
		}
		regs = append(regs, reg{h.inf, r})
		synced = append(synced, h.inf.HasSynced, r.HasSynced)
	}
	return synced, remove, nil
}

// enqueueGateway queues a Gateway of our class (and tells recent that
// the informer has news of it).
func (c *Controller) enqueueGateway(q queue, obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	gw, ok := obj.(*gatewayv1.Gateway)
	if !ok || gw.Spec.GatewayClassName != ClassName {
		return
	}
	c.recent.observe("Gateway", gw.Namespace, gw.Name, gw.ResourceVersion, deleted)
	if !deleted {
		q.Add(types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name})
	}
}

// enqueueClass queues the class and every Gateway of it when the
// GatewayClass istio-waypoint changes (created, deleted, taken over).
func (c *Controller) enqueueClass(q queue, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := apimeta.Accessor(obj)
	if err != nil || m.GetName() != ClassName {
		return
	}
	q.Add(classKey)
	gws, err := c.gateways.List(labels.Everything())
	if err != nil {
		return
	}
	for _, gw := range gws {
		if gw.Spec.GatewayClassName == ClassName {
			q.Add(types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name})
		}
	}
}

// enqueueOwner queues the Gateway a Deployment, Service or ServiceAccount
// belongs to (by owner reference), and the waypoint Gateway of the same name
// in its namespace, if any: an object in the way of a Gateway, or the
// removal of one, must be noticed too.
func (c *Controller) enqueueOwner(q queue, kind string, obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return
	}
	c.recent.observe(kind, m.GetNamespace(), m.GetName(), m.GetResourceVersion(), deleted)
	for _, ref := range m.GetOwnerReferences() {
		if ref.Kind == "Gateway" && isGatewayAPIVersion(ref.APIVersion) {
			q.Add(types.NamespacedName{Namespace: m.GetNamespace(), Name: ref.Name})
		}
	}
	if gw, err := c.gateways.Gateways(m.GetNamespace()).Get(m.GetName()); err == nil && gw.Spec.GatewayClassName == ClassName {
		q.Add(types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name})
	}
}

func isGatewayAPIVersion(apiVersion string) bool {
	group, _, _ := strings.Cut(apiVersion, "/")
	return group == gatewayv1.GroupName
}

// processNext handles one key; false when the queue is shut down.
func (c *Controller) processNext(ctx context.Context, q queue) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	err := c.reconcile(ctx, key)
	switch {
	case err == nil:
		c.metrics.reconciles.WithLabelValues("ok").Inc()
		q.Forget(key)
	case errors.Is(err, ErrForeignClass):
		c.metrics.reconciles.WithLabelValues("ok").Inc()
		c.log.Warn("not serving waypoints", "err", err)
		q.Forget(key)
	case ctx.Err() != nil:
		q.Forget(key)
	default:
		c.metrics.reconciles.WithLabelValues("error").Inc()
		level := slog.LevelWarn
		if apierrors.IsConflict(err) {
			level = slog.LevelDebug // a stale cache; the retry will see the news
		}
		c.log.Log(ctx, level, "reconcile failed, will retry", "key", key.String(), "retries", q.NumRequeues(key), "err", err)
		q.AddRateLimited(key)
	}
	return true
}
