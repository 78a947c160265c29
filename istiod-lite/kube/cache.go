package kube

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// The security.istio.io/v1 resources istiod-lite reads.
var (
	AuthorizationPolicyResource = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	PeerAuthenticationResource  = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
)

// Clients are the API clients a Cache and the controllers use.
type Clients struct {
	Kube    kubernetes.Interface
	Gateway gatewayclient.Interface
	Dynamic dynamic.Interface
}

// Cache holds informers on every object istiod-lite reads. Build it with
// NewCache, then Start it and wait for WaitForSync before reading.
type Cache struct {
	Core       informers.SharedInformerFactory
	GatewayAPI gatewayinformers.SharedInformerFactory
	Dynamic    dynamicinformer.DynamicSharedInformerFactory

	namespaces, pods, services, slices     cache.SharedIndexInformer
	gateways, httpRoutes, grpcRoutes, refs cache.SharedIndexInformer
	authzPolicies, peerAuths               cache.SharedIndexInformer

	changed     chan struct{}
	routesDirty atomic.Bool
}

// NewCache registers the informers (they do not run until Start). Every
// add, update or delete of a watched object signals Changed.
func NewCache(c Clients) (*Cache, error) {
	kc := &Cache{
		Core:       informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, informers.WithTransform(stripObject)),
		GatewayAPI: gatewayinformers.NewSharedInformerFactoryWithOptions(c.Gateway, 0, gatewayinformers.WithTransform(stripObject)),
		Dynamic:    dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, 0),
		changed:    make(chan struct{}, 1),
	}
	kc.namespaces = kc.Core.Core().V1().Namespaces().Informer()
	kc.pods = kc.Core.Core().V1().Pods().Informer()
	kc.services = kc.Core.Core().V1().Services().Informer()
	kc.slices = kc.Core.Discovery().V1().EndpointSlices().Informer()
	kc.gateways = kc.GatewayAPI.Gateway().V1().Gateways().Informer()
	kc.httpRoutes = kc.GatewayAPI.Gateway().V1().HTTPRoutes().Informer()
	kc.grpcRoutes = kc.GatewayAPI.Gateway().V1().GRPCRoutes().Informer()
	kc.refs = kc.GatewayAPI.Gateway().V1beta1().ReferenceGrants().Informer()
	kc.authzPolicies = kc.Dynamic.ForResource(AuthorizationPolicyResource).Informer()
	kc.peerAuths = kc.Dynamic.ForResource(PeerAuthenticationResource).Informer()

	if err := kc.pods.AddIndexers(cache.Indexers{nodeIdentityIndex: indexNodeIdentity}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	if err := kc.authzPolicies.SetTransform(stripUnstructured); err != nil {
		return nil, err
	}
	if err := kc.peerAuths.SetTransform(stripUnstructured); err != nil {
		return nil, err
	}
	signal := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kc.signal() },
		UpdateFunc: func(old, cur any) { kc.signal() },
		DeleteFunc: func(any) { kc.signal() },
	}
	for _, inf := range kc.all() {
		if _, err := inf.AddEventHandler(signal); err != nil {
			return nil, fmt.Errorf("event handler: %w", err)
		}
	}
	// What the route compiler reads: a pod change does not recompile routes.
	routes := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kc.routesDirty.Store(true) },
		UpdateFunc: func(old, cur any) { kc.routesDirty.Store(true) },
		DeleteFunc: func(any) { kc.routesDirty.Store(true) },
	}
	for _, inf := range []cache.SharedIndexInformer{kc.namespaces, kc.services, kc.httpRoutes, kc.grpcRoutes, kc.refs} {
		if _, err := inf.AddEventHandler(routes); err != nil {
			return nil, fmt.Errorf("event handler: %w", err)
		}
	}
	kc.routesDirty.Store(true)
	return kc, nil
}

func (kc *Cache) all() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{
		kc.namespaces, kc.pods, kc.services, kc.slices,
		kc.gateways, kc.httpRoutes, kc.grpcRoutes, kc.refs,
		kc.authzPolicies, kc.peerAuths,
	}
}

func (kc *Cache) signal() {
	select {
	case kc.changed <- struct{}{}:
	default:
	}
}

// TakeRoutesDirty reports whether an object the route compiler reads
// (Namespaces, Services, HTTPRoutes, GRPCRoutes, ReferenceGrants) changed
// since the last call, and clears the flag.
func (kc *Cache) TakeRoutesDirty() bool { return kc.routesDirty.Swap(false) }

// Changed receives a value after one or more watched objects changed since
// the last receive. Bursts coalesce into one value.
func (kc *Cache) Changed() <-chan struct{} { return kc.changed }

// Start runs the informers until ctx is done.
func (kc *Cache) Start(ctx context.Context) {
	kc.Core.Start(ctx.Done())
	kc.GatewayAPI.Start(ctx.Done())
	kc.Dynamic.Start(ctx.Done())
}

// WaitForSync blocks until every informer has listed once, or ctx ends (an
// error naming the informers still waiting, e.g. a CRD that is not
// installed).
func (kc *Cache) WaitForSync(ctx context.Context) error {
	names := []string{"namespaces", "pods", "services", "endpointslices", "gateways", "httproutes", "grpcroutes", "referencegrants", "authorizationpolicies", "peerauthentications"}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []string
		for i, inf := range kc.all() {
			if !inf.HasSynced() {
				waiting = append(waiting, names[i])
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("informers not synced (are the CRDs installed?): %v: %w", waiting, ctx.Err())
		case <-tick.C:
		}
	}
}

// Namespaces lists every namespace in the cache.
func (kc *Cache) Namespaces() []*corev1.Namespace {
	return list[*corev1.Namespace](kc.namespaces)
}

// Pods lists every pod in the cache.
func (kc *Cache) Pods() []*corev1.Pod { return list[*corev1.Pod](kc.pods) }

// Services lists every service in the cache.
func (kc *Cache) Services() []*corev1.Service { return list[*corev1.Service](kc.services) }

// EndpointSlices lists every endpoint slice in the cache.
func (kc *Cache) EndpointSlices() []*discoveryv1.EndpointSlice {
	return list[*discoveryv1.EndpointSlice](kc.slices)
}

// Gateways lists every Gateway in the cache.
func (kc *Cache) Gateways() []*gatewayv1.Gateway { return list[*gatewayv1.Gateway](kc.gateways) }

// HTTPRoutes lists every HTTPRoute in the cache.
func (kc *Cache) HTTPRoutes() []*gatewayv1.HTTPRoute {
	return list[*gatewayv1.HTTPRoute](kc.httpRoutes)
}

// GRPCRoutes lists every GRPCRoute in the cache.
func (kc *Cache) GRPCRoutes() []*gatewayv1.GRPCRoute {
	return list[*gatewayv1.GRPCRoute](kc.grpcRoutes)
}

// ReferenceGrants lists every ReferenceGrant in the cache.
func (kc *Cache) ReferenceGrants() []*gatewayv1beta1.ReferenceGrant {
	return list[*gatewayv1beta1.ReferenceGrant](kc.refs)
}

// Pod returns one pod from the cache.
func (kc *Cache) Pod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := kc.pods.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}

// list returns the objects of an informer's store; they are shared with the
// cache and must not be modified.
func list[T any](inf cache.SharedIndexInformer) []T {
	objs := inf.GetStore().List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}
