package waypoint

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// harness runs the real controller loop with real informers over the
// fake clientsets (which support server-side apply for built-in types).
type harness struct {
	t    *testing.T
	kube *kubefake.Clientset
	gw   *gatewayfake.Clientset
	ctrl *Controller
	reg  *prometheus.Registry

	stopRun func()
}

func start(t *testing.T, kubeObjs []runtime.Object, gatewayObjs []runtime.Object) *harness {
	t.Helper()
	h := &harness{
		t:    t,
		kube: kubefake.NewClientset(kubeObjs...),
		gw:   gatewayfake.NewSimpleClientset(),
		reg:  prometheus.NewRegistry(),
	}
	var rv atomic.Int64
	versioned(&h.kube.Fake, h.kube.Tracker(), &rv)
	versioned(&h.gw.Fake, h.gw.Tracker(), &rv)
	// The Gateway API fake cannot be seeded: its tracker guesses the
	// resource "gatewaies" from the kind, and its server-side-apply tracker
	// does not know CRDs. Objects are created through the typed client, and
	// the controller writes Gateway API objects with Create/UpdateStatus only.
	for _, o := range gatewayObjs {
		var err error
		switch o := o.(type) {
		case *gatewayv1.Gateway:
			_, err = h.gw.GatewayV1().Gateways(o.Namespace).Create(t.Context(), o, metav1.CreateOptions{})
		case *gatewayv1.GatewayClass:
			_, err = h.gw.GatewayV1().GatewayClasses().Create(t.Context(), o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("unexpected %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	kf := informers.NewSharedInformerFactory(h.kube, 0)
	gf := gatewayinformers.NewSharedInformerFactory(h.gw, 0)
	var err error
	h.ctrl, err = New(Config{
		Kube: h.kube, Gateway: h.gw, KubeInformers: kf, GatewayInformers: gf,
		Registerer: h.reg, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	kf.Start(ctx.Done())
	gf.Start(ctx.Done())
	h.run()
	t.Cleanup(func() {
		h.stop()
		cancel()
		kf.Shutdown()
		gf.Shutdown()
	})
	return h
}

// run starts Run in the background; stop ends it and checks its result.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.ctrl.Run(ctx, 2) }()
	h.stopRun = func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}
}

func (h *harness) stop() {
	if h.stopRun != nil {
		h.stopRun()
		h.stopRun = nil
	}
}

// versioned makes a fake clientset keep resourceVersions as the API server
// does — a new one on every write, and a conflict when a write names a
// version that is no longer current — which the fakes' trackers do not.
func versioned(fake *k8stesting.Fake, tracker k8stesting.ObjectTracker, counter *atomic.Int64) {
	next := func() string { return strconv.FormatInt(counter.Add(1), 10) }
	conflict := func(gvr schema.GroupVersionResource, ns, name, sent string) error {
		if sent == "" {
			return nil
		}
		cur, err := tracker.Get(gvr, ns, name)
		if err != nil {
			return nil // not there: the write itself will say so
		}
		m, _ := meta.Accessor(cur)
		if m.GetResourceVersion() != sent {
			return apierrors.NewConflict(gvr.GroupResource(), name,
				fmt.Errorf("resourceVersion %s is not the current %s", sent, m.GetResourceVersion()))
		}
		return nil
	}
	fake.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		switch a := a.(type) {
		case k8stesting.CreateActionImpl:
			m, _ := meta.Accessor(a.GetObject())
			m.SetResourceVersion(next())
		case k8stesting.UpdateActionImpl:
			m, _ := meta.Accessor(a.GetObject())
			if err := conflict(a.GetResource(), a.GetNamespace(), m.GetName(), m.GetResourceVersion()); err != nil {
				return true, nil, err
			}
			m.SetResourceVersion(next())
		case k8stesting.PatchActionImpl:
			if a.GetPatchType() != types.ApplyPatchType {
				return false, nil, nil
			}
			var body map[string]any
			if err := json.Unmarshal(a.GetPatch(), &body); err != nil {
				return true, nil, err
			}
			md, _ := body["metadata"].(map[string]any)
			sent, _ := md["resourceVersion"].(string)
			if err := conflict(a.GetResource(), a.GetNamespace(), a.GetName(), sent); err != nil {
				return true, nil, err
			}
			md["resourceVersion"] = next()
			patch, err := json.Marshal(body)
			if err != nil {
				return true, nil, err
			}
			a.Patch = patch
			return k8stesting.ObjectReaction(tracker)(a)
		}
		return false, nil, nil
	})
}

// testLogger writes to t.Log until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) close() { w.mu.Lock(); w.closed = true; w.mu.Unlock() }

var _ io.Writer = (*testWriter)(nil)

// waitFor polls cond until it returns "" (met) or the deadline passes; the
// last non-empty answer says what was still wrong.
func (h *harness) waitFor(what string, cond func() string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s: %s", what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// controllerWrites counts the writes the controller made (its field
// manager), not the test's own.
func (h *harness) controllerWrites() int {
	n := 0
	for _, fake := range []*k8stesting.Fake{&h.kube.Fake, &h.gw.Fake} {
		for _, a := range fake.Actions() {
			switch a := a.(type) {
			case k8stesting.PatchActionImpl:
				if a.PatchOptions.FieldManager == FieldManager {
					n++
				}
			case k8stesting.UpdateActionImpl:
				if a.UpdateOptions.FieldManager == FieldManager {
					n++
				}
			case k8stesting.CreateActionImpl:
				if a.CreateOptions.FieldManager == FieldManager {
					n++
				}
			}
		}
	}
	return n
}

// metric sums the values of a counter family in the test's registry.
func (h *harness) metric(name string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func (h *harness) reconciles() float64 { return h.metric("istiod_lite_waypoint_reconciles_total") }

// settle waits until the controller has made no write for a while.
func (h *harness) settle() {
	h.t.Helper()
	last, since := h.controllerWrites(), time.Now()
	h.waitFor("the controller to stop writing", func() string {
		if n := h.controllerWrites(); n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) < 300*time.Millisecond {
			return fmt.Sprintf("%d writes so far", last)
		}
		return ""
	})
}

func (h *harness) gateway(ns, name string) *gatewayv1.Gateway {
	h.t.Helper()
	gw, err := h.gw.GatewayV1().Gateways(ns).Get(h.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return gw
}

func (h *harness) deployment(ns, name string) (*appsv1.Deployment, error) {
	return h.kube.AppsV1().Deployments(ns).Get(h.t.Context(), name, metav1.GetOptions{})
}

func (h *harness) service(ns, name string) (*corev1.Service, error) {
	return h.kube.CoreV1().Services(ns).Get(h.t.Context(), name, metav1.GetOptions{})
}

// condition describes a Gateway condition as "Status/Reason: message", or
// "" when it is not set.
func condition(gw *gatewayv1.Gateway, typ gatewayv1.GatewayConditionType) string {
	c := meta.FindStatusCondition(gw.Status.Conditions, string(typ))
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}

// waypointGateway is what `ambientctl waypoint apply` creates.
func waypointGateway(ns, name string) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Generation: 1,
			Labels: map[string]string{LabelWaypointFor: "service"},
		},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: ClassName,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: PortHBONE, Protocol: ProtocolHBONE}},
		},
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
