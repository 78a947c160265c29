package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	k8sversion "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayscheme "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/scheme"
)

// testNow is the clock of every test: ages and expiries are measured from it.
var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fixture is a cluster made of client-go's fake clients (the typed, dynamic
// and Gateway API clientsets, each with its own store) and the proxies'
// admin endpoints served by httptest servers with testdata/admin files.
// Reactors stand in for the controllers a command waits on.
type fixture struct {
	t     *testing.T
	kube  *kubefake.Clientset
	dyn   *dynamicfake.FakeDynamicClient
	gw    *gatewayfake.Clientset
	admin *fakeAdmin

	// connectErr makes Connect fail (an unreachable API server).
	connectErr error
	// namespace is the kubeconfig context's namespace.
	namespace string
	// denied are SelfSubjectAccessReviews refused: "verb resource.group".
	denied map[string]bool
	// stuck: applied Deployments and DaemonSets never become ready.
	stuck bool
	// noNodeAgent: removing the labels does not release the pods.
	noNodeAgent bool
	// programGateways: an applied Gateway is Programmed at once.
	programGateways bool
	// nodes is how many nodes a DaemonSet is scheduled to.
	nodes int

	mu sync.Mutex
	rv int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	listKinds := map[schema.GroupVersionResource]string{}
	for gk, r := range resources {
		listKinds[r.gvr] = gk.Kind + "List"
	}
	f := &fixture{
		t:      t,
		kube:   kubefake.NewClientset(),
		dyn:    dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds),
		gw:     gatewayfake.NewSimpleClientset(),
		admin:  &fakeAdmin{servers: map[string]*httptest.Server{}},
		denied: map[string]bool{}, nodes: 2,
	}
	t.Cleanup(f.admin.close)
	f.kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &k8sversion.Info{GitVersion: "v1.37.2", Major: "1", Minor: "37"}
	f.kube.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		key := ra.Verb + " " + strings.TrimSuffix(ra.Resource+"."+ra.Group, ".")
		r.Status.Allowed = !f.denied[key]
		return true, r, nil
	})
	f.dyn.PrependReactor("patch", "*", f.patchReactor)
	f.dyn.PrependReactor("get", "*", f.progressReactor)
	f.dyn.PrependReactor("delete", "deployments", f.deleteReactor)
	f.gw.PrependReactor("patch", "gateways", f.gatewayApplyReactor)
	f.gw.PrependReactor("*", "*", f.gatewayCRDGate)
	return f
}

// env is the Env a command runs with.
func (f *fixture) env(stdout, stderr io.Writer) *Env {
	return &Env{
		Stdout: stdout, Stderr: stderr,
		Connect: func(ctx context.Context, k KubeFlags) (*Clients, error) {
			if f.connectErr != nil {
				return nil, f.connectErr
			}
			return &Clients{Kube: f.kube, Dynamic: f.dyn, Gateway: f.gw, Admin: f.admin, Namespace: f.namespace, Server: "https://10.0.0.1:6443"}, nil
		},
		Now:  func() time.Time { return testNow },
		Poll: time.Millisecond,
	}
}

// add puts typed objects into the typed (or Gateway API) clientset and the
// dynamic one, so that both see the same cluster.
func (f *fixture) add(objs ...runtime.Object) {
	f.t.Helper()
	for _, o := range objs {
		gvks, _, err := kubescheme.Scheme.ObjectKinds(o)
		tracker := f.kube.Tracker()
		if err != nil {
			gvks, _, err = gatewayscheme.Scheme.ObjectKinds(o)
			tracker = f.gw.Tracker()
		}
		if err != nil {
			f.t.Fatalf("no kind for %T: %v", o, err)
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			f.t.Fatal(err)
		}
		// Some kinds are registered under several versions (Gateway API
		// v1beta1 aliases v1): take the object's own, else v1.
		gvk := o.GetObjectKind().GroupVersionKind()
		if gvk.Empty() {
			gvk = gvks[0]
			for _, g := range gvks {
				if g.Version == "v1" {
					gvk = g
				}
			}
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(gvk)
		// The trackers' Add guesses "gatewaies" for Gateway: create at the
		// resource the clients use.
		if r, ok := resources[gvk.GroupKind()]; ok {
			err = tracker.Create(r.gvr, o, u.GetNamespace())
		} else {
			err = tracker.Add(o)
		}
		if err != nil {
			f.t.Fatal(err)
		}
		f.addUnstructured(u)
	}
}

// addUnstructured puts objects into the dynamic clientset only.
func (f *fixture) addUnstructured(objs ...*unstructured.Unstructured) {
	f.t.Helper()
	for _, u := range objs {
		// Create at the resource ambientctl uses: the tracker's Add guesses
		// "gatewaies" for Gateway.
		r, err := resourceFor(u)
		if err != nil {
			err = f.dyn.Tracker().Add(u) // a kind ambientctl never writes (Node)
		} else {
			err = f.dyn.Tracker().Create(r.gvr, u, u.GetNamespace())
		}
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

// getDyn reads an object of the dynamic store, nil if absent.
func (f *fixture) getDyn(gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	o, err := f.dyn.Tracker().Get(gvr, ns, name)
	if err != nil {
		return nil
	}
	return o.(*unstructured.Unstructured)
}

// patchReactor is the API server's side of server-side apply (create, or
// update when the applied content differs, a new resourceVersion each
// time) and of the merge patches that remove labels; the node agent's side
// of a removed label (the pod's redirection annotation goes).
func (f *fixture) patchReactor(a k8stesting.Action) (bool, runtime.Object, error) {
	pa := a.(k8stesting.PatchAction)
	gvr, ns, name := pa.GetResource(), pa.GetNamespace(), pa.GetName()
	f.mu.Lock()
	defer f.mu.Unlock()
	tr := f.dyn.Tracker()
	switch pa.GetPatchType() {
	case types.ApplyPatchType:
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(pa.GetPatch()); err != nil {
			return true, nil, err
		}
		cur := f.getDyn(gvr, ns, name)
		if cur != nil && reflect.DeepEqual(applied(cur), applied(obj)) {
			return true, cur, nil
		}
		f.rv++
		obj.SetResourceVersion(strconv.Itoa(f.rv))
		obj.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: fieldManager, Operation: metav1.ManagedFieldsOperationApply, APIVersion: obj.GetAPIVersion()}})
		f.simulateStatus(obj)
		if cur == nil {
			return true, obj, tr.Create(gvr, obj, ns)
		}
		return true, obj, tr.Update(gvr, obj, ns)
	case types.MergePatchType:
		cur := f.getDyn(gvr, ns, name)
		if cur == nil {
			return true, nil, apierrors.NewNotFound(gvr.GroupResource(), name)
		}
		var patch struct {
			Metadata struct {
				Labels map[string]*string `json:"labels"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(pa.GetPatch(), &patch); err != nil {
			return true, nil, err
		}
		labels := cur.GetLabels()
		for k, v := range patch.Metadata.Labels {
			if v == nil {
				delete(labels, k)
			} else {
				if labels == nil {
					labels = map[string]string{}
				}
				labels[k] = *v
			}
		}
		cur.SetLabels(labels)
		if err := tr.Update(gvr, cur, ns); err != nil {
			return true, nil, err
		}
		if !f.noNodeAgent {
			f.releasePods()
		}
		return true, cur, nil
	}
	return false, nil, nil
}

// applied is what an apply sets: the object without the fields the server
// owns.
func applied(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy().Object
	delete(c, "status")
	if md, ok := c["metadata"].(map[string]any); ok {
		delete(md, "resourceVersion")
		delete(md, "managedFields")
		delete(md, "creationTimestamp")
	}
	return c
}

// simulateStatus is what controllers write after an apply: CRDs are
// established and the GatewayClass accepted at once; Deployments and
// DaemonSets start with nothing ready (progressReactor moves them).
func (f *fixture) simulateStatus(obj *unstructured.Unstructured) {
	cond := func(typ string) []any {
		return []any{map[string]any{"type": typ, "status": "True", "reason": typ}}
	}
	switch obj.GetKind() {
	case "CustomResourceDefinition":
		_ = unstructured.SetNestedSlice(obj.Object, cond("Established"), "status", "conditions")
	case "GatewayClass":
		_ = unstructured.SetNestedSlice(obj.Object, cond("Accepted"), "status", "conditions")
	case "Deployment":
		_ = unstructured.SetNestedMap(obj.Object, map[string]any{"observedGeneration": int64(1), "replicas": int64(0)}, "status")
	case "DaemonSet":
		_ = unstructured.SetNestedMap(obj.Object, map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(f.nodes)}, "status")
	}
}

// progressReactor makes one more replica (or node) ready each time a
// Deployment or DaemonSet is read, unless the fixture is stuck.
func (f *fixture) progressReactor(a k8stesting.Action) (bool, runtime.Object, error) {
	r := a.GetResource().Resource
	if f.stuck || r != "deployments" && r != "daemonsets" {
		return false, nil, nil
	}
	ga := a.(k8stesting.GetAction)
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.getDyn(a.GetResource(), ga.GetNamespace(), ga.GetName())
	if cur == nil || cur.GetManagedFields() == nil {
		return false, nil, nil // seeded, not applied: as it is
	}
	out := cur.DeepCopy()
	if r == "deployments" {
		want, _, _ := unstructured.NestedInt64(cur.Object, "spec", "replicas")
		n, _, _ := unstructured.NestedInt64(cur.Object, "status", "availableReplicas")
		for _, k := range []string{"replicas", "updatedReplicas", "readyReplicas", "availableReplicas"} {
			_ = unstructured.SetNestedField(cur.Object, min(n+1, want), "status", k)
		}
	} else {
		n, _, _ := unstructured.NestedInt64(cur.Object, "status", "numberAvailable")
		for _, k := range []string{"updatedNumberScheduled", "numberReady", "numberAvailable"} {
			_ = unstructured.SetNestedField(cur.Object, min(n+1, int64(f.nodes)), "status", k)
		}
	}
	if err := f.dyn.Tracker().Update(a.GetResource(), cur, ga.GetNamespace()); err != nil {
		return true, nil, err
	}
	return true, out, nil
}

// deleteReactor: a deleted Deployment's pods go with it.
func (f *fixture) deleteReactor(a k8stesting.Action) (bool, runtime.Object, error) {
	da := a.(k8stesting.DeleteAction)
	dep := f.getDyn(a.GetResource(), da.GetNamespace(), da.GetName())
	if dep == nil {
		return false, nil, nil
	}
	sel, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "selector", "matchLabels")
	pods, _ := f.dyn.Tracker().List(gvrPod, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, da.GetNamespace())
	if l, ok := pods.(*unstructured.UnstructuredList); ok {
		for _, p := range l.Items {
			match := len(sel) > 0
			for k, v := range sel {
				match = match && p.GetLabels()[k] == v
			}
			if match {
				_ = f.dyn.Tracker().Delete(gvrPod, p.GetNamespace(), p.GetName())
			}
		}
	}
	return false, nil, nil
}

// releasePods is the node agent: a pod neither it nor its namespace
// labelled ambient loses its redirection annotation.
func (f *fixture) releasePods() {
	tr := f.dyn.Tracker()
	pods, err := tr.List(gvrPod, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, "")
	if err != nil {
		return
	}
	for _, p := range pods.(*unstructured.UnstructuredList).Items {
		if p.GetAnnotations()[annotationRedirection] != "enabled" {
			continue
		}
		ns := f.getDyn(gvrNamespace, "", p.GetNamespace())
		if p.GetLabels()[labelDataplaneMode] == dataplaneModeAmbient || ns != nil && ns.GetLabels()[labelDataplaneMode] == dataplaneModeAmbient {
			continue
		}
		an := p.GetAnnotations()
		delete(an, annotationRedirection)
		p.SetAnnotations(an)
		_ = tr.Update(gvrPod, &p, p.GetNamespace())
	}
}

// gatewayCRDGate answers 404 for Gateway API resources whose CRD is not
// installed, as the API server does.
func (f *fixture) gatewayCRDGate(a k8stesting.Action) (bool, runtime.Object, error) {
	gr := a.GetResource().GroupResource()
	if f.getDyn(gvrCRD, "", gr.String()) != nil {
		return false, nil, nil
	}
	return true, nil, apierrors.NewNotFound(gr, "")
}

// gatewayApplyReactor is server-side apply of a Gateway for the Gateway
// API clientset: labels merge, the spec is replaced.
func (f *fixture) gatewayApplyReactor(a k8stesting.Action) (bool, runtime.Object, error) {
	pa := a.(k8stesting.PatchAction)
	if pa.GetPatchType() != types.ApplyPatchType {
		return false, nil, nil
	}
	in := &gatewayv1.Gateway{}
	if err := json.Unmarshal(pa.GetPatch(), in); err != nil {
		return true, nil, err
	}
	tr := f.gw.Tracker()
	cur, err := tr.Get(a.GetResource(), pa.GetNamespace(), pa.GetName())
	if apierrors.IsNotFound(err) {
		f.program(in)
		return true, in, tr.Create(a.GetResource(), in, pa.GetNamespace())
	}
	if err != nil {
		return true, nil, err
	}
	gw := cur.(*gatewayv1.Gateway).DeepCopy()
	if gw.Labels == nil {
		gw.Labels = map[string]string{}
	}
	for k, v := range in.Labels {
		gw.Labels[k] = v
	}
	gw.Spec = in.Spec
	f.program(gw)
	return true, gw, tr.Update(a.GetResource(), gw, pa.GetNamespace())
}

// program is istiod-lite's waypoint controller when programGateways is
// set: the Gateway is Programmed with an address.
func (f *fixture) program(gw *gatewayv1.Gateway) {
	if !f.programGateways {
		return
	}
	gw.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: "True", Reason: "Programmed", Message: "Deployment " + gw.Namespace + "/" + gw.Name + " has 1/1 available replicas"}}
	gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Value: "10.96.20.7"}}
}

// fakeAdmin serves admin endpoints from httptest servers, one per pod and
// port, speaking HTTP as the real ones do.
type fakeAdmin struct {
	mu      sync.Mutex
	servers map[string]*httptest.Server
}

// serve makes pod answer GET path on port with testdata/admin/file.
func (a *fakeAdmin) serve(t *testing.T, ns, pod string, port int, path, file string) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "admin", file))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.servers[fmt.Sprintf("%s/%s:%d", ns, pod, port)] = httptest.NewServer(mux)
}

func (a *fakeAdmin) Get(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
	a.mu.Lock()
	srv := a.servers[fmt.Sprintf("%s/%s:%d", ns, pod, port)]
	a.mu.Unlock()
	if srv == nil {
		return nil, fmt.Errorf("port-forward to %s/%s:%d: connection refused", ns, pod, port)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/%s:%d%s: %s", ns, pod, port, path, resp.Status)
	}
	return b, err
}

func (a *fakeAdmin) close() {
	for _, s := range a.servers {
		s.Close()
	}
}

// Object builders.

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// pod builds a pod; ready says whether it runs and is Ready.
func pod(ns, name, node, sa, image string, labels, annotations map[string]string, ready bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "main", Image: image}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func deployment(ns, name string, want, ready int32, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       appsv1.DeploymentSpec{Replicas: &want},
		Status:     appsv1.DeploymentStatus{Replicas: want, ReadyReplicas: ready, UpdatedReplicas: want, AvailableReplicas: ready},
	}
}

func daemonSet(ns, name string, labels map[string]string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

// crd is a CustomResourceDefinition as the dynamic client sees it.
func crd(name, channel string, established bool, managers ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apiextensions.k8s.io/v1")
	u.SetKind("CustomResourceDefinition")
	u.SetName(name)
	if channel != "" {
		u.SetAnnotations(map[string]string{"gateway.networking.k8s.io/channel": channel})
	}
	status := "False"
	if established {
		status = "True"
	}
	_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Established", "status": status}}, "status", "conditions")
	var mfs []metav1.ManagedFieldsEntry
	for _, m := range managers {
		mfs = append(mfs, metav1.ManagedFieldsEntry{Manager: m, Operation: metav1.ManagedFieldsOperationApply})
	}
	u.SetManagedFields(mfs)
	return u
}

// rootCertPEM is a self-signed CA valid from a day before testNow for life.
func rootCertPEM(t *testing.T, life time.Duration) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: testNow.Add(-24 * time.Hour), NotAfter: testNow.Add(life),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
