package trust

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// SkippedNamespaces never get the root ConfigMap, as in Istio: nothing there
// is part of the mesh.
var SkippedNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true}

// Publisher keeps ConfigMap istio-ca-root-cert with the mesh roots in every
// namespace: it creates it in new namespaces and puts the content back when
// someone changes or deletes it.
type Publisher struct {
	client    kubernetes.Interface
	rootsPEM  string
	log       *slog.Logger
	factory   informers.SharedInformerFactory
	cmFactory informers.SharedInformerFactory
	nsLister  cache.Indexer
	cmLister  cache.Indexer
	queue     workqueue.TypedRateLimitingInterface[string]
	nsSynced  cache.InformerSynced
	cmSynced  cache.InformerSynced
}

// NewPublisher sets up the informers it needs (a namespace informer and one
// on ConfigMaps named istio-ca-root-cert only); Run starts them.
func NewPublisher(client kubernetes.Interface, rootsPEM []byte, log *slog.Logger) (*Publisher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		client:   client,
		rootsPEM: string(rootsPEM),
		log:      log,
		factory:  informers.NewSharedInformerFactory(client, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "root-configmap"}),
	}
	nsInf := p.factory.Core().V1().Namespaces().Informer()
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "metadata.name=" + RootConfigMap
	}))
	cmInf := cmFactory.Core().V1().ConfigMaps().Informer()
	p.nsLister, p.cmLister = nsInf.GetIndexer(), cmInf.GetIndexer()
	p.nsSynced, p.cmSynced = nsInf.HasSynced, cmInf.HasSynced
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	if _, err := nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNS,
		UpdateFunc: func(_, cur any) { enqueueNS(cur) },
	}); err != nil {
		return nil, err
	}
	enqueueCM := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			p.queue.Add(cm.Namespace)
		}
	}
	if _, err := cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueCM,
		UpdateFunc: func(_, cur any) { enqueueCM(cur) },
		DeleteFunc: enqueueCM,
	}); err != nil {
		return nil, err
	}
	p.cmFactory = cmFactory
	return p, nil
}

// Run publishes until ctx is done.
func (p *Publisher) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	p.factory.Start(ctx.Done())
	p.cmFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), p.nsSynced, p.cmSynced) {
		return fmt.Errorf("root configmap publisher: caches not synced: %w", ctx.Err())
	}
	go wait.UntilWithContext(ctx, p.worker, time.Second)
	<-ctx.Done()
	return nil
}

func (p *Publisher) worker(ctx context.Context) {
	for {
		ns, shutdown := p.queue.Get()
		if shutdown {
			return
		}
		err := p.sync(ctx, ns)
		if err != nil {
			p.log.Warn("publish root certificate", "namespace", ns, "err", err)
			p.queue.AddRateLimited(ns)
		} else {
			p.queue.Forget(ns)
		}
		p.queue.Done(ns)
	}
}

func (p *Publisher) sync(ctx context.Context, ns string) error {
	if SkippedNamespaces[ns] {
		return nil
	}
	obj, ok, err := p.nsLister.GetByKey(ns)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if n := obj.(*corev1.Namespace); n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	want := map[string]string{RootConfigMapKey: p.rootsPEM}
	obj, ok, err = p.cmLister.GetByKey(ns + "/" + RootConfigMap)
	if err != nil {
		return err
	}
	cms := p.client.CoreV1().ConfigMaps(ns)
	if !ok {
		_, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:      RootConfigMap,
				Namespace: ns,
				Labels:    map[string]string{"istio.io/config": "true", managedByLabel: managedByValue},
			},
			Data: want,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // the informer will show it; the update path checks it
		}
		if err == nil {
			p.log.Debug("published root certificate", "namespace", ns)
		}
		return err
	}
	cm := obj.(*corev1.ConfigMap)
	if cm.Data[RootConfigMapKey] == p.rootsPEM {
		return nil
	}
	cm = cm.DeepCopy()
	cm.Data = want
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	if err == nil {
		p.log.Info("restored root certificate configmap", "namespace", ns)
	}
	return err
}
