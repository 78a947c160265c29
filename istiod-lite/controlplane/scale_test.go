package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambientlite/mesh/istiod-lite/model"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// scaleObjects is a mesh of services×podsPerService pods in namespaces of
// 10 services each, every namespace enrolled.
func scaleObjects(services, podsPerService int) []k8sruntime.Object {
	var objs []k8sruntime.Object
	for s := range services {
		ns := fmt.Sprintf("ns-%d", s/10)
		if s%10 == 0 {
			objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{model.LabelDataplaneMode: "ambient"}}})
		}
		app := fmt.Sprintf("svc-%d", s)
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", s/250, s%250+1),
				Selector:  map[string]string{"app": app},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		})
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: app + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: app}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
		}
		for p := range podsPerService {
			i := s*podsPerService + p
			ip := fmt.Sprintf("10.%d.%d.%d", 100+i/62500, (i/250)%250, i%250+1)
			name := fmt.Sprintf("%s-%d", app, p)
			objs = append(objs, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": app, "version": "v1"}},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%10), ServiceAccountName: app,
					Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			})
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{ip},
				Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name},
			})
		}
		objs = append(objs, slice)
	}
	return objs
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestScalePushLatency is the control-plane scale measurement of
// bench/RESULTS.md: 1,000 pods behind 200 services in the informer cache
// (fake API server), the real pipeline, config server and a delta ADS client
// over loopback gRPC. It reports the first full push, the latency of a
// one-pod change from the API write to the client, and the heap held. It
// checks only that every change arrives; the numbers are printed.
// Run: go test ./istiod-lite/controlplane -run TestScalePushLatency -v -scale
func TestScalePushLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	services, perService, changes := 200, 5, 50
	if !*scale {
		services, perService, changes = 20, 5, 5 // quick correctness run in make test
	}
	base := heapInUse()
	objs := scaleObjects(services, perService)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	api := startFakeAPI(ctx, t, objs, nil, nil)
	client := api.kube
	store := xds.NewStore(nil)
	pl, err := newPipeline(api.cache, store, model.Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := pl.sync(); err != nil {
		t.Fatal(err)
	}
	fullBuild := time.Since(start)
	go pl.run(ctx)

	stream := serveXDS(ctx, t, store)
	start = time.Now()
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: xds.AddressType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	firstPush := time.Since(start)
	if got, want := len(resp.Resources), services*(perService+1); got != want {
		t.Fatalf("first push has %d resources, want %d", got, want)
	}
	ack(t, stream, resp)
	heap := heapInUse()

	var lat []time.Duration
	for i := range changes {
		pod := objs[2+(i*7)%(services*perService)] // any object; only pods are changed
		p, ok := pod.(*corev1.Pod)
		if !ok {
			p = objs[2].(*corev1.Pod)
		}
		cur, err := client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Labels["version"] = fmt.Sprintf("v%d", i+2)
		start := time.Now()
		if _, err := client.CoreV1().Pods(p.Namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		if len(r.Resources) != 1 || r.Resources[0].Name != "Kubernetes//Pod/"+p.Namespace+"/"+p.Name {
			names := []string{}
			for _, x := range r.Resources {
				names = append(names, x.Name)
			}
			t.Fatalf("change %d: pushed %v, want only the changed pod", i, names)
		}
		ack(t, stream, r)
	}
	slices.Sort(lat)
	pct := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond) }
	t.Logf("%d pods, %d services: full translation %v; first push (%d resources) %v; one-pod change → client (debounce %v): p50 %v p90 %v max %v over %d changes; heap held %.1f MiB",
		services*perService, services, fullBuild.Round(100*time.Microsecond), len(resp.Resources), firstPush.Round(100*time.Microsecond),
		xds.DefaultDebounce, pct(0.5), pct(0.9), lat[len(lat)-1].Round(100*time.Microsecond), len(lat), float64(heap-base)/(1<<20))
}
