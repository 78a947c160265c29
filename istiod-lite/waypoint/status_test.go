package waypoint

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// summary is a status as "Type=Status/Reason" lines, gateway first, then
// each listener's.
func summary(st gatewayv1.GatewayStatus) []string {
	var out []string
	for _, c := range st.Conditions {
		out = append(out, c.Type+"="+string(c.Status)+"/"+c.Reason)
	}
	for _, l := range st.Listeners {
		for _, c := range l.Conditions {
			out = append(out, string(l.Name)+"."+c.Type+"="+string(c.Status)+"/"+c.Reason)
		}
	}
	return out
}

func TestCheckAndStatus(t *testing.T) {
	hbone := gatewayv1.Listener{Name: "mesh", Port: PortHBONE, Protocol: ProtocolHBONE}
	http := gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}
	ready := observation{
		deployment: &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1}},
		service:    &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1"}},
	}
	cfgMap := gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "params"}
	ipType := gatewayv1.IPAddressType
	tests := []struct {
		name   string
		modify func(*gatewayv1.Gateway)
		obs    observation
		want   []string
		// message, if set, must appear in the Accepted or Programmed message
		message string
	}{
		{
			name: "ready", obs: ready,
			want: []string{"Accepted=True/Accepted", "Programmed=True/Programmed", "ResolvedRefs=True/ResolvedRefs",
				"mesh.Accepted=True/Accepted", "mesh.Programmed=True/Programmed", "mesh.ResolvedRefs=True/ResolvedRefs", "mesh.Conflicted=False/NoConflicts"},
			message: "Deployment ns/wp has 1/1 available replicas; Service ns/wp has cluster IP 10.0.0.1",
		},
		{
			name: "nothing yet",
			want: []string{"Accepted=True/Accepted", "Programmed=False/AddressNotAssigned", "ResolvedRefs=True/ResolvedRefs",
				"mesh.Accepted=True/Accepted", "mesh.Programmed=False/Pending", "mesh.ResolvedRefs=True/ResolvedRefs", "mesh.Conflicted=False/NoConflicts"},
			message: "Deployment ns/wp does not exist yet; Service ns/wp does not exist yet",
		},
		{
			name: "headless service is no address",
			obs: observation{deployment: ready.deployment,
				service: &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}},
			want:    []string{"Accepted=True/Accepted", "Programmed=False/AddressNotAssigned"},
			message: "Service ns/wp has no cluster IP yet",
		},
		{
			name: "extra HTTP listener", obs: ready,
			modify: func(gw *gatewayv1.Gateway) { gw.Spec.Listeners = append(gw.Spec.Listeners, http) },
			want: []string{"Accepted=True/ListenersNotValid", "Programmed=True/Programmed", "ResolvedRefs=True/ResolvedRefs",
				"mesh.Accepted=True/Accepted", "mesh.Programmed=True/Programmed", "mesh.ResolvedRefs=True/ResolvedRefs", "mesh.Conflicted=False/NoConflicts",
				"http.Accepted=False/UnsupportedProtocol", "http.Programmed=False/Invalid", "http.ResolvedRefs=True/ResolvedRefs", "http.Conflicted=False/NoConflicts"},
			message: `only listener "mesh"`,
		},
		{
			name:    "only HTTP",
			modify:  func(gw *gatewayv1.Gateway) { gw.Spec.Listeners = []gatewayv1.Listener{http} },
			want:    []string{"Accepted=False/ListenersNotValid", "Programmed=False/Invalid", "ResolvedRefs=True/ResolvedRefs", "http.Accepted=False/UnsupportedProtocol"},
			message: "none of the Gateway's listeners is valid",
		},
		{
			name: "HBONE on another port",
			modify: func(gw *gatewayv1.Gateway) {
				gw.Spec.Listeners = []gatewayv1.Listener{{Name: "mesh", Port: 15009, Protocol: ProtocolHBONE}}
			},
			want: []string{"Accepted=False/ListenersNotValid", "Programmed=False/Invalid", "ResolvedRefs=True/ResolvedRefs", "mesh.Accepted=False/PortUnavailable"},
		},
		{
			name: "two HBONE listeners", obs: ready,
			modify: func(gw *gatewayv1.Gateway) {
				gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: "mesh2", Port: PortHBONE, Protocol: ProtocolHBONE})
			},
			want: []string{"Accepted=True/ListenersNotValid", "Programmed=True/Programmed", "ResolvedRefs=True/ResolvedRefs",
				"mesh.Accepted=True/Accepted", "mesh.Programmed=True/Programmed", "mesh.ResolvedRefs=True/ResolvedRefs", "mesh.Conflicted=False/NoConflicts",
				"mesh2.Accepted=False/HostnameConflict", "mesh2.Programmed=False/Invalid", "mesh2.ResolvedRefs=True/ResolvedRefs", "mesh2.Conflicted=True/HostnameConflict"},
		},
		{
			name: "route kinds asked for", obs: ready,
			modify: func(gw *gatewayv1.Gateway) {
				gw.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Kinds: []gatewayv1.RouteGroupKind{{Kind: "HTTPRoute"}}}
			},
			want: []string{"Accepted=True/Accepted", "Programmed=True/Programmed", "ResolvedRefs=False/ListenersNotResolved",
				"mesh.Accepted=True/Accepted", "mesh.Programmed=True/Programmed", "mesh.ResolvedRefs=False/InvalidRouteKinds", "mesh.Conflicted=False/NoConflicts"},
		},
		{
			name:    "name too long for a Service",
			modify:  func(gw *gatewayv1.Gateway) { gw.Name = strings.Repeat("w", 64) },
			want:    []string{"Accepted=False/Invalid", "Programmed=False/Invalid"},
			message: "must be a DNS label",
		},
		{
			name: "parametersRef",
			modify: func(gw *gatewayv1.Gateway) {
				gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &cfgMap}
			},
			want:    []string{"Accepted=False/InvalidParameters", "Programmed=False/Invalid"},
			message: "parametersRef (ConfigMap params) is not supported",
		},
		{
			name: "spec addresses",
			modify: func(gw *gatewayv1.Gateway) {
				gw.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Type: &ipType, Value: "10.0.0.9"}}
			},
			want: []string{"Accepted=False/UnsupportedAddress", "Programmed=False/Invalid"},
		},
		{
			name:    "conflict",
			obs:     observation{conflict: "Service ns/wp already exists but is not owned by this Gateway"},
			want:    []string{"Accepted=False/Invalid", "Programmed=False/Invalid"},
			message: "Service ns/wp already exists",
		},
		{
			name:    "write failed",
			obs:     observation{applyErr: errors.New("apply Deployment ns/wp: admission webhook denied")},
			want:    []string{"Accepted=True/Accepted", "Programmed=False/Invalid"},
			message: "admission webhook denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := &gatewayv1.Gateway{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "wp", Generation: 4},
				Spec: gatewayv1.GatewaySpec{
					GatewayClassName: ClassName,
					Listeners:        []gatewayv1.Listener{hbone},
				},
			}
			if tt.modify != nil {
				tt.modify(gw)
			}
			st := gatewayStatus(gw, check(gw), tt.obs, "cluster.local", time.Unix(1e9, 0))
			got := summary(st)
			if len(got) > len(tt.want) {
				got = got[:len(tt.want)]
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("conditions (-want +got):\n%s", d)
			}
			for _, c := range st.Conditions {
				if c.ObservedGeneration != 4 {
					t.Errorf("%s observedGeneration %d", c.Type, c.ObservedGeneration)
				}
			}
			if tt.message != "" {
				a := meta.FindStatusCondition(st.Conditions, "Accepted").Message
				p := meta.FindStatusCondition(st.Conditions, "Programmed").Message
				if !strings.Contains(a, tt.message) && !strings.Contains(p, tt.message) {
					t.Errorf("no %q in\nAccepted: %s\nProgrammed: %s", tt.message, a, p)
				}
			}
			programmed := meta.IsStatusConditionTrue(st.Conditions, "Programmed")
			if programmed != (len(st.Addresses) > 0) {
				t.Errorf("programmed %v but addresses %v", programmed, st.Addresses)
			}
			for _, l := range st.Listeners {
				if l.SupportedKinds == nil || len(l.SupportedKinds) != 0 || l.AttachedRoutes != 0 {
					t.Errorf("listener %s: supportedKinds %v attachedRoutes %d", l.Name, l.SupportedKinds, l.AttachedRoutes)
				}
			}
		})
	}
}

// lastTransitionTime moves only when a condition's status does; the
// observedGeneration follows the Gateway; a recomputation that changes
// nothing is equal to what is stored (so nothing is written); addresses stay
// once reported.
func TestStatusTransitions(t *testing.T) {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "wp", Generation: 1},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: ClassName,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: PortHBONE, Protocol: ProtocolHBONE}},
		},
	}
	t0, t1, t2, t3 := time.Unix(1000, 0), time.Unix(2000, 0), time.Unix(3000, 0), time.Unix(4000, 0)
	notReady := observation{deployment: &appsv1.Deployment{}, service: &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1"}}}
	ready := observation{
		deployment: &appsv1.Deployment{Status: appsv1.DeploymentStatus{AvailableReplicas: 1}},
		service:    notReady.service,
	}
	ltt := func(st gatewayv1.GatewayStatus, typ string) time.Time {
		return meta.FindStatusCondition(st.Conditions, typ).LastTransitionTime.Time
	}

	gw.Status = gatewayStatus(gw, check(gw), notReady, "cluster.local", t0)
	if again := gatewayStatus(gw, check(gw), notReady, "cluster.local", t1); !equality.Semantic.DeepEqual(again, gw.Status) {
		t.Errorf("recomputing an unchanged status differs:\n%s", cmp.Diff(gw.Status, again))
	}

	gw.Status = gatewayStatus(gw, check(gw), ready, "cluster.local", t2)
	if got := ltt(gw.Status, "Accepted"); !got.Equal(t0) {
		t.Errorf("Accepted lastTransitionTime %v, want %v (status did not change)", got, t0)
	}
	if got := ltt(gw.Status, "Programmed"); !got.Equal(t2) {
		t.Errorf("Programmed lastTransitionTime %v, want %v", got, t2)
	}
	if len(gw.Status.Addresses) != 2 {
		t.Fatalf("addresses %v", gw.Status.Addresses)
	}

	gw.Generation = 2
	gw.Status = gatewayStatus(gw, check(gw), notReady, "cluster.local", t3)
	for _, c := range append(gw.Status.Conditions, gw.Status.Listeners[0].Conditions...) {
		if c.ObservedGeneration != 2 {
			t.Errorf("%s observedGeneration %d, want 2", c.Type, c.ObservedGeneration)
		}
	}
	if got := ltt(gw.Status, "Accepted"); !got.Equal(t0) {
		t.Errorf("Accepted lastTransitionTime %v after a generation bump, want %v", got, t0)
	}
	if len(gw.Status.Addresses) != 2 {
		t.Errorf("addresses dropped when the replica went away (Istio keeps them): %v", gw.Status.Addresses)
	}

	// Conditions of types we do not write survive.
	gw.Status.Conditions = append(gw.Status.Conditions, metav1.Condition{Type: "example.com/Other", Status: "True", Reason: "X"})
	gw.Status = gatewayStatus(gw, check(gw), notReady, "cluster.local", t3)
	if meta.FindStatusCondition(gw.Status.Conditions, "example.com/Other") == nil {
		t.Error("a foreign condition was dropped")
	}
}

func TestAddressesDualStack(t *testing.T) {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "wp"}}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1", "fd00::1"}}}
	var got []string
	for _, a := range addresses(gw, svc, "example.local") {
		got = append(got, string(*a.Type)+" "+a.Value)
	}
	want := []string{"IPAddress 10.0.0.1", "IPAddress fd00::1", "Hostname wp.ns.svc.example.local"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
