package cli

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambientlite/mesh/install"
)

func TestStreamPodKey(t *testing.T) {
	for id, want := range map[string]string{
		"ztunnel~10.250.0.1~ztunnel-kjvqh.istio-system~istio-system.svc.cluster.local":      "istio-system/ztunnel-kjvqh",
		"waypoint~10.244.0.30~waypoint-6f7b8c9d4-k2l3m.bookinfo~bookinfo.svc.cluster.local": "bookinfo/waypoint-6f7b8c9d4-k2l3m",
		"sidecar~10.0.0.1~pod.with.dots.ns~ns.svc.cluster.local":                            "ns/pod.with.dots",
		"":                       "",
		"ztunnel~10.0.0.1~nodot": "",
	} {
		if got := (streamStatus{NodeID: id}).podKey(); got != want {
			t.Errorf("podKey(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestWaypointName(t *testing.T) {
	for dest, want := range map[string]string{
		"bookinfo/waypoint.bookinfo.svc.cluster.local": "bookinfo/waypoint",
		"/10.96.0.100":                     "10.96.0.100",
		"other/waypoint.elsewhere.example": "other/waypoint.elsewhere.example",
	} {
		if got := waypointName(&gatewayAddress{Destination: dest}); got != want {
			t.Errorf("waypointName(%q) = %q, want %q", dest, got, want)
		}
	}
	if got := waypointName(nil); got != "None" {
		t.Errorf("waypointName(nil) = %q", got)
	}
}

func TestTagOf(t *testing.T) {
	for img, want := range map[string]string{
		"localhost/ambientlite/istiod-lite:dev": "dev",
		"registry:5000/mesh/ztunnel":            "latest",
		"registry:5000/mesh/ztunnel:v1.2":       "v1.2",
		"mesh/ztunnel@sha256:abcd":              "sha256:abcd",
	} {
		if got := tagOf(img); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", img, got, want)
		}
	}
}

func TestAge(t *testing.T) {
	now := testNow
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 3 * time.Minute: "3m", 3 * time.Hour: "3h", 72 * time.Hour: "3d",
	} {
		if got := age(now, now.Add(-d)); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	if got := age(now, time.Time{}); got != "-" {
		t.Errorf("age(zero) = %q", got)
	}
}

// Every Kind the chart renders has a resource: install can apply it.
func TestEveryChartKindIsMapped(t *testing.T) {
	objs, err := installRender()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := resourceFor(o); err != nil {
			t.Error(err)
		}
	}
}

func installRender() ([]*unstructured.Unstructured, error) { return install.Render(nil) }
