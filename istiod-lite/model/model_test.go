package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodUID(t *testing.T) {
	tests := []struct {
		name             string
		cluster, ns, pod string
		want             string
	}{
		{name: "default cluster", cluster: "Kubernetes", ns: "shop", pod: "cart-0", want: "Kubernetes//Pod/shop/cart-0"},
		{name: "named cluster", cluster: "east", ns: "default", pod: "web", want: "east//Pod/default/web"},
		{name: "dotted names", cluster: "c1", ns: "a-b", pod: "x.y", want: "c1//Pod/a-b/x.y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PodUID(tt.cluster, tt.ns, tt.pod); got != tt.want {
				t.Errorf("PodUID = %q, want %q", got, tt.want)
			}
			v := Build(Config{ClusterID: tt.cluster}, Snapshot{Pods: []*corev1.Pod{runningPod(tt.ns, tt.pod, nil)}})
			if len(v.Workloads) != 1 || v.Workloads[0].Uid != tt.want {
				t.Errorf("Build uid = %v, want %q", v.Workloads, tt.want)
			}
		})
	}
}

func TestCanonicalService(t *testing.T) {
	tests := []struct {
		name         string
		labels       map[string]string
		wantName     string
		wantRevision string
	}{
		{name: "no labels", wantName: "wl", wantRevision: "latest"},
		{name: "app", labels: map[string]string{"app": "a"}, wantName: "a", wantRevision: "latest"},
		{name: "k8s name beats app", labels: map[string]string{"app": "a", "app.kubernetes.io/name": "k"}, wantName: "k", wantRevision: "latest"},
		{
			name:     "canonical beats all",
			labels:   map[string]string{"app": "a", "app.kubernetes.io/name": "k", "service.istio.io/canonical-name": "c"},
			wantName: "c", wantRevision: "latest",
		},
		{name: "version", labels: map[string]string{"version": "v1"}, wantName: "wl", wantRevision: "v1"},
		{name: "k8s version beats version", labels: map[string]string{"version": "v1", "app.kubernetes.io/version": "2"}, wantName: "wl", wantRevision: "2"},
		{
			name:     "canonical revision beats all",
			labels:   map[string]string{"version": "v1", "app.kubernetes.io/version": "2", "service.istio.io/canonical-revision": "r"},
			wantName: "wl", wantRevision: "r",
		},
		{name: "empty label value still wins", labels: map[string]string{"app": "", "version": ""}, wantName: "", wantRevision: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, r := CanonicalService(tt.labels, "wl")
			if n != tt.wantName || r != tt.wantRevision {
				t.Errorf("CanonicalService = (%q, %q), want (%q, %q)", n, r, tt.wantName, tt.wantRevision)
			}
		})
	}
}

func TestWorkloadName(t *testing.T) {
	controller := func(kind, name string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
	}
	tests := []struct {
		name string
		meta metav1.ObjectMeta
		want string
	}{
		{name: "bare pod", meta: metav1.ObjectMeta{Name: "p"}, want: "p"},
		{
			name: "deployment",
			meta: metav1.ObjectMeta{Name: "web-5d8-x", GenerateName: "web-5d8-", Labels: map[string]string{"pod-template-hash": "5d8"}, OwnerReferences: controller("ReplicaSet", "web-5d8")},
			want: "web",
		},
		{
			name: "replicaset without hash",
			meta: metav1.ObjectMeta{Name: "rs-x", GenerateName: "rs-", OwnerReferences: controller("ReplicaSet", "rs")},
			want: "rs",
		},
		{
			name: "cronjob",
			meta: metav1.ObjectMeta{Name: "backup-28000000-x", GenerateName: "backup-28000000-", OwnerReferences: controller("Job", "backup-28000000")},
			want: "backup",
		},
		{
			name: "statefulset",
			meta: metav1.ObjectMeta{Name: "db-0", GenerateName: "db-", OwnerReferences: controller("StatefulSet", "db")},
			want: "db",
		},
		{
			name: "label override",
			meta: metav1.ObjectMeta{Name: "db-0", GenerateName: "db-", Labels: map[string]string{"service.istio.io/workload-name": "custom"}, OwnerReferences: controller("StatefulSet", "db")},
			want: "custom",
		},
		{
			name: "owner without generateName",
			meta: metav1.ObjectMeta{Name: "fixed", OwnerReferences: controller("StatefulSet", "db")},
			want: "fixed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := WorkloadName(&corev1.Pod{ObjectMeta: tt.meta}); got != tt.want {
				t.Errorf("WorkloadName = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	if err := (Config{ClusterID: "a/b"}).Validate(); err == nil {
		t.Error("cluster ID with '/' accepted")
	}
	pod := runningPod("ns", "p", nil)
	w := Build(Config{}, Snapshot{Pods: []*corev1.Pod{pod}}).Workloads[0]
	if w.TrustDomain != "" || w.ClusterId != "Kubernetes" || w.Network != "" {
		t.Errorf("defaults: trust domain %q cluster %q network %q", w.TrustDomain, w.ClusterId, w.Network)
	}
	w = Build(Config{TrustDomain: "example.org", Network: "n1"}, Snapshot{Pods: []*corev1.Pod{pod}}).Workloads[0]
	if w.TrustDomain != "example.org" || w.Network != "n1" {
		t.Errorf("configured: trust domain %q network %q", w.TrustDomain, w.Network)
	}
}

func TestDiff(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Port: 80}}},
	}
	a := runningPod("shop", "a", map[string]string{"app": "web"})
	b := runningPod("shop", "b", map[string]string{"app": "web"})
	base := Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns}, Pods: []*corev1.Pod{a, b}, Services: []*corev1.Service{svc}})

	notReady := b.DeepCopy()
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	svc2 := svc.DeepCopy()
	svc2.Spec.Ports[0].Port = 8080
	c := runningPod("shop", "c", nil)
	unlabelled := ns.DeepCopy()
	unlabelled.Labels = nil

	tests := []struct {
		name string
		old  *View
		new  *View
		want Changes
	}{
		{name: "same", old: base, new: base, want: Changes{}},
		{
			name: "rebuilt from copies",
			old:  base,
			new:  Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns.DeepCopy()}, Pods: []*corev1.Pod{b.DeepCopy(), a.DeepCopy()}, Services: []*corev1.Service{svc.DeepCopy()}}),
			want: Changes{},
		},
		{
			name: "one pod not ready",
			old:  base,
			new:  Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns}, Pods: []*corev1.Pod{a, notReady}, Services: []*corev1.Service{svc}}),
			want: Changes{Updated: []string{"Kubernetes//Pod/shop/b"}},
		},
		{
			name: "service port changes service and its pods",
			old:  base,
			new:  Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns}, Pods: []*corev1.Pod{a, b}, Services: []*corev1.Service{svc2}}),
			want: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b", "shop/web.shop.svc.cluster.local"}},
		},
		{
			name: "pod added and removed",
			old:  base,
			new:  Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{ns}, Pods: []*corev1.Pod{a, c}, Services: []*corev1.Service{svc}}),
			want: Changes{Updated: []string{"Kubernetes//Pod/shop/c"}, Removed: []string{"Kubernetes//Pod/shop/b"}},
		},
		{
			name: "namespace label removed",
			old:  base,
			new:  Build(Config{}, Snapshot{Namespaces: []*corev1.Namespace{unlabelled}, Pods: []*corev1.Pod{a, b}, Services: []*corev1.Service{svc}}),
			want: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b"}},
		},
		{
			name: "from nothing",
			old:  nil,
			new:  base,
			want: Changes{Updated: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b", "shop/web.shop.svc.cluster.local"}},
		},
		{
			name: "to nothing",
			old:  base,
			new:  &View{},
			want: Changes{Removed: []string{"Kubernetes//Pod/shop/a", "Kubernetes//Pod/shop/b", "shop/web.shop.svc.cluster.local"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.old, tt.new)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
			if got.Empty() != (len(tt.want.Updated)+len(tt.want.Removed) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

// TestBuildDoesNotShareMessages checks that two Builds never share proto
// messages, so a caller may keep an old View while building a new one.
func TestBuildDoesNotShareMessages(t *testing.T) {
	snap := loadSnapshot(t, "testdata/service_waypoint_namespace.yaml")
	v1, v2 := Build(Config{}, snap), Build(Config{}, snap)
	v2.Services[0].Waypoint.HboneMtlsPort = 1
	if proto.Equal(v1.Services[0], v2.Services[0]) {
		t.Error("mutating one Build's output changed the other")
	}
	if v1.Services[0].GetWaypoint().GetHboneMtlsPort() != 15008 {
		t.Errorf("waypoint port = %d", v1.Services[0].GetWaypoint().GetHboneMtlsPort())
	}
}

func runningPod(ns, name string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "default"},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      "10.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}
