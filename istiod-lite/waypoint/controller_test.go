package waypoint

import (
	"fmt"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// created waits until the Gateway's three objects exist and its status
// has been written.
func (h *harness) created(ns, name string) {
	h.t.Helper()
	h.waitFor("waypoint objects and status", func() string {
		if _, err := h.kube.CoreV1().ServiceAccounts(ns).Get(h.t.Context(), name, metav1.GetOptions{}); err != nil {
			return err.Error()
		}
		if _, err := h.service(ns, name); err != nil {
			return err.Error()
		}
		if _, err := h.deployment(ns, name); err != nil {
			return err.Error()
		}
		if c := condition(h.gateway(ns, name), gatewayv1.GatewayConditionAccepted); c == "" {
			return "no Accepted condition"
		}
		return ""
	})
}

func TestCreatesWaypoint(t *testing.T) {
	gw := waypointGateway("default", "waypoint")
	h := start(t, nil, []runtime.Object{gw})
	h.created("default", "waypoint")
	ctx := t.Context()

	wantOwner := []metav1.OwnerReference{{
		APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: "waypoint",
		UID: gw.UID, Controller: new(true),
	}}
	sa, _ := h.kube.CoreV1().ServiceAccounts("default").Get(ctx, "waypoint", metav1.GetOptions{})
	svc, _ := h.service("default", "waypoint")
	dep, _ := h.deployment("default", "waypoint")
	for kind, m := range map[string]metav1.ObjectMeta{"ServiceAccount": sa.ObjectMeta, "Service": svc.ObjectMeta, "Deployment": dep.ObjectMeta} {
		if d := cmp.Diff(wantOwner, m.OwnerReferences); d != "" {
			t.Errorf("%s owner references (-want +got):\n%s", kind, d)
		}
		for k, v := range map[string]string{
			LabelGatewayName: "waypoint", LabelGatewayClassName: ClassName,
			LabelManaged: ManagedLabelValue, LabelWaypointFor: "service",
		} {
			if m.Labels[k] != v {
				t.Errorf("%s label %s = %q, want %q", kind, k, m.Labels[k], v)
			}
		}
	}

	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Selector[LabelGatewayName] != "waypoint" {
		t.Errorf("Service type %q selector %v", svc.Spec.Type, svc.Spec.Selector)
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s/%d/%s", p.Name, p.Port, *p.AppProtocol))
	}
	if d := cmp.Diff([]string{"status-port/15021/tcp", "mesh/15008/hbone"}, ports); d != "" {
		t.Errorf("Service ports (-want +got):\n%s", d)
	}

	pod := dep.Spec.Template
	if pod.Labels[LabelDataplaneMode] != "none" || pod.Labels[LabelGatewayName] != "waypoint" {
		t.Errorf("pod labels %v", pod.Labels)
	}
	if pod.Spec.ServiceAccountName != "waypoint" || len(pod.Spec.Containers) != 1 {
		t.Fatalf("pod spec: sa %q, %d containers", pod.Spec.ServiceAccountName, len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.Name != ContainerName || c.Image != DefaultImage || c.ReadinessProbe.HTTPGet.Port != intstr.FromInt32(PortStatus) {
		t.Errorf("container %s image %s probe %v", c.Name, c.Image, c.ReadinessProbe.HTTPGet)
	}

	got := h.gateway("default", "waypoint")
	if c := condition(got, gatewayv1.GatewayConditionAccepted); !strings.HasPrefix(c, "True/Accepted") {
		t.Errorf("Accepted = %s", c)
	}
	// The fake API server neither runs pods nor allocates cluster IPs.
	want := "False/AddressNotAssigned: Deployment default/waypoint has 0/1 available replicas; Service default/waypoint has no cluster IP yet"
	if c := condition(got, gatewayv1.GatewayConditionProgrammed); c != want {
		t.Errorf("Programmed = %s\nwant %s", c, want)
	}
	if len(got.Status.Addresses) != 0 {
		t.Errorf("addresses before programmed: %v", got.Status.Addresses)
	}
	if len(got.Status.Listeners) != 1 || got.Status.Listeners[0].Name != "mesh" || got.Status.Listeners[0].AttachedRoutes != 0 {
		t.Errorf("listener status %+v", got.Status.Listeners)
	}
	for _, c := range got.Status.Conditions {
		if c.ObservedGeneration != 1 {
			t.Errorf("condition %s observedGeneration %d", c.Type, c.ObservedGeneration)
		}
	}

	// The class was created and accepted.
	h.waitFor("GatewayClass accepted", func() string {
		gc, err := h.gw.GatewayV1().GatewayClasses().Get(ctx, ClassName, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if gc.Spec.ControllerName != ControllerName {
			return "controllerName " + string(gc.Spec.ControllerName)
		}
		if !meta.IsStatusConditionTrue(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted)) {
			return "not accepted"
		}
		return ""
	})
}

// A reconcile that finds everything as it should be writes nothing: no
// apply, no status update (events that change nothing of ours are common —
// every Deployment status change is one).
func TestNoWriteWhenNothingChanged(t *testing.T) {
	h := start(t, nil, []runtime.Object{waypointGateway("default", "waypoint")})
	h.created("default", "waypoint")
	h.settle()
	writes, reconciles := h.controllerWrites(), h.reconciles()
	// An event that changes nothing we own: the Deployment controller
	// recording that it has seen generation 1.
	dep, _ := h.deployment("default", "waypoint")
	dep.Status.ObservedGeneration = 1
	if _, err := h.kube.AppsV1().Deployments("default").UpdateStatus(t.Context(), dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("a reconcile", func() string {
		if h.reconciles() <= reconciles {
			return "none yet"
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond) // room for a wrong write to show
	if n := h.controllerWrites(); n != writes {
		t.Errorf("controller wrote %d times after an event that changed nothing", n-writes)
	}
}

func TestProgrammedWhenDeploymentAvailable(t *testing.T) {
	h := start(t, nil, []runtime.Object{waypointGateway("default", "waypoint")})
	h.created("default", "waypoint")
	ctx := t.Context()
	before := meta.FindStatusCondition(h.gateway("default", "waypoint").Status.Conditions, "Accepted")

	// What the API server and the Deployment controller would do.
	svc, _ := h.service("default", "waypoint")
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.20", []string{"10.96.0.20"}
	if _, err := h.kube.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("Programmed to name the missing replica", func() string {
		want := "False/AddressNotAssigned: Deployment default/waypoint has 0/1 available replicas"
		if c := condition(h.gateway("default", "waypoint"), gatewayv1.GatewayConditionProgrammed); c != want {
			return "condition is " + c
		}
		return ""
	})
	dep, _ := h.deployment("default", "waypoint")
	dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
	if _, err := h.kube.AppsV1().Deployments("default").UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	h.waitFor("Programmed=True", func() string {
		if c := condition(h.gateway("default", "waypoint"), gatewayv1.GatewayConditionProgrammed); !strings.HasPrefix(c, "True/Programmed") {
			return "Programmed = " + c
		}
		return ""
	})
	got := h.gateway("default", "waypoint")
	ip, host := gatewayv1.IPAddressType, gatewayv1.HostnameAddressType
	wantAddrs := []gatewayv1.GatewayStatusAddress{
		{Type: &ip, Value: "10.96.0.20"},
		{Type: &host, Value: "waypoint.default.svc.cluster.local"},
	}
	if d := cmp.Diff(wantAddrs, got.Status.Addresses); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	if c := condition(got, gatewayv1.GatewayConditionProgrammed); !strings.Contains(c, "1/1 available replicas") || !strings.Contains(c, "10.96.0.20") {
		t.Errorf("Programmed message: %s", c)
	}
	l := got.Status.Listeners[0]
	if !meta.IsStatusConditionTrue(l.Conditions, string(gatewayv1.ListenerConditionProgrammed)) {
		t.Errorf("listener not programmed: %+v", l.Conditions)
	}
	after := meta.FindStatusCondition(got.Status.Conditions, "Accepted")
	if !after.LastTransitionTime.Equal(&before.LastTransitionTime) {
		t.Errorf("Accepted lastTransitionTime moved from %v to %v without a change of status", before.LastTransitionTime, after.LastTransitionTime)
	}
}

// A Service of the waypoint's name that is not the Gateway's is never
// overwritten; the Gateway says why nothing is deployed. Once it is gone,
// the waypoint is deployed.
func TestForeignServiceIsNotTouched(t *testing.T) {
	foreign := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "waypoint", Labels: map[string]string{"app": "mine"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "mine"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	h := start(t, []runtime.Object{foreign.DeepCopy()}, []runtime.Object{waypointGateway("default", "waypoint")})
	want := "False/Invalid: Service default/waypoint already exists but is not owned by this Gateway"
	h.waitFor("the conflict on the Gateway", func() string {
		gw := h.gateway("default", "waypoint")
		for _, typ := range []gatewayv1.GatewayConditionType{gatewayv1.GatewayConditionAccepted, gatewayv1.GatewayConditionProgrammed} {
			if c := condition(gw, typ); !strings.HasPrefix(c, want) {
				return string(typ) + " is " + c
			}
		}
		return ""
	})
	h.settle()
	got, err := h.service("default", "waypoint")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(foreign.Spec, got.Spec); d != "" || len(got.OwnerReferences) != 0 || len(got.Labels) != 1 {
		t.Errorf("foreign Service changed: owners %v labels %v spec diff:\n%s", got.OwnerReferences, got.Labels, d)
	}
	if _, err := h.deployment("default", "waypoint"); !isNotFound(err) {
		t.Errorf("Deployment created despite the conflict (err %v)", err)
	}

	if err := h.kube.CoreV1().Services("default").Delete(t.Context(), "waypoint", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.created("default", "waypoint")
	h.waitFor("Accepted=True", func() string {
		if c := condition(h.gateway("default", "waypoint"), gatewayv1.GatewayConditionAccepted); !strings.HasPrefix(c, "True/") {
			return "condition is " + c
		}
		return ""
	})
}

// Gateways of other classes, and waypoint Gateways while the class
// istio-waypoint belongs to another controller, are not touched.
func TestOtherClassesIgnored(t *testing.T) {
	other := waypointGateway("default", "ingress")
	other.Spec.GatewayClassName = "other"
	h := start(t, nil, []runtime.Object{other, waypointGateway("default", "waypoint")})
	h.created("default", "waypoint") // the waypoint is done, so the other was seen
	h.settle()
	if _, err := h.deployment("default", "ingress"); !isNotFound(err) {
		t.Errorf("Deployment for a Gateway of class other: %v", err)
	}
	if gw := h.gateway("default", "ingress"); len(gw.Status.Conditions) != 0 {
		t.Errorf("status written on a Gateway of class other: %+v", gw.Status)
	}
}

func TestForeignGatewayClass(t *testing.T) {
	class := &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: "example.com/not-us"},
	}
	h := start(t, nil, []runtime.Object{class, waypointGateway("default", "waypoint")})
	h.waitFor("the class and the Gateway to be seen", func() string {
		if r := h.reconciles(); r < 2 {
			return fmt.Sprintf("%v reconciles", r)
		}
		return ""
	})
	h.settle()
	if n := h.controllerWrites(); n != 0 {
		t.Errorf("%d writes while the class belongs to another controller", n)
	}
	if _, err := h.deployment("default", "waypoint"); !isNotFound(err) {
		t.Errorf("Deployment created: %v", err)
	}
}

func TestRecreatesDeletedDeployment(t *testing.T) {
	h := start(t, nil, []runtime.Object{waypointGateway("default", "waypoint")})
	h.created("default", "waypoint")
	if err := h.kube.AppsV1().Deployments("default").Delete(t.Context(), "waypoint", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the Deployment back", func() string {
		if _, err := h.deployment("default", "waypoint"); err != nil {
			return err.Error()
		}
		return ""
	})
}

// Fields we own are put back; what others add is left alone (server-side
// apply semantics).
func TestRevertsChangesToOwnedFields(t *testing.T) {
	h := start(t, nil, []runtime.Object{waypointGateway("default", "waypoint")})
	h.created("default", "waypoint")
	h.settle()
	dep, _ := h.deployment("default", "waypoint")
	dep.Spec.Template.Spec.Containers[0].Image = "example.com/evil:latest"
	dep.Annotations["example.com/note"] = "kept"
	if _, err := h.kube.AppsV1().Deployments("default").Update(t.Context(), dep, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the image put back", func() string {
		dep, err := h.deployment("default", "waypoint")
		if err != nil {
			return err.Error()
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != DefaultImage {
			return img
		}
		if dep.Annotations["example.com/note"] != "kept" {
			return "someone else's annotation was removed"
		}
		return ""
	})
}

// A label removed from the Gateway disappears from the objects: the hash
// annotation changes, the object is applied again, and server-side apply
// drops the field we no longer ask for.
func TestRemovedGatewayLabelIsRemoved(t *testing.T) {
	gw := waypointGateway("default", "waypoint")
	gw.Labels["team"] = "a"
	h := start(t, nil, []runtime.Object{gw})
	h.created("default", "waypoint")
	h.waitFor("the label on the Service", func() string {
		svc, _ := h.service("default", "waypoint")
		if svc.Labels["team"] != "a" {
			return fmt.Sprint(svc.Labels)
		}
		return ""
	})
	cur := h.gateway("default", "waypoint")
	delete(cur.Labels, "team")
	if _, err := h.gw.GatewayV1().Gateways("default").Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the label gone from the Service", func() string {
		svc, _ := h.service("default", "waypoint")
		if _, ok := svc.Labels["team"]; ok {
			return fmt.Sprint(svc.Labels)
		}
		return ""
	})
}

// A Gateway with no usable listener is rejected and nothing is deployed.
func TestNoValidListener(t *testing.T) {
	gw := waypointGateway("default", "waypoint")
	gw.Spec.Listeners = []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}
	h := start(t, nil, []runtime.Object{gw})
	h.waitFor("Accepted=False", func() string {
		if c := condition(h.gateway("default", "waypoint"), gatewayv1.GatewayConditionAccepted); !strings.HasPrefix(c, "False/ListenersNotValid") {
			return "condition is " + c
		}
		return ""
	})
	got := h.gateway("default", "waypoint")
	lc := meta.FindStatusCondition(got.Status.Listeners[0].Conditions, string(gatewayv1.ListenerConditionAccepted))
	if lc == nil || lc.Reason != string(gatewayv1.ListenerReasonUnsupportedProtocol) {
		t.Errorf("listener Accepted = %+v", lc)
	}
	if _, err := h.deployment("default", "waypoint"); !isNotFound(err) {
		t.Errorf("Deployment created for a rejected Gateway: %v", err)
	}
}

// Run can be stopped and started again on the same informers, as a leader
// that loses and regains its lease does; two at once are refused.
func TestRunAgain(t *testing.T) {
	h := start(t, nil, []runtime.Object{waypointGateway("default", "first")})
	h.created("default", "first")
	if err := h.ctrl.Run(t.Context(), 1); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second concurrent Run: %v", err)
	}
	h.stop()

	// While stopped, nothing happens.
	if _, err := h.gw.GatewayV1().Gateways("default").Create(t.Context(), waypointGateway("default", "second"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := h.deployment("default", "second"); !isNotFound(err) {
		t.Fatalf("Deployment created while stopped: %v", err)
	}

	h.run()
	h.created("default", "second")
}

// Nothing the controller starts outlives Run (and the factories' Shutdown).
func TestNoGoroutineLeak(t *testing.T) {
	before := goruntime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		h := start(t, nil, []runtime.Object{waypointGateway("default", "waypoint")})
		h.created("default", "waypoint")
	})
	deadline := time.Now().Add(5 * time.Second)
	for goruntime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, goruntime.NumGoroutine(), buf[:goruntime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
