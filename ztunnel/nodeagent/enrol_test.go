package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	// Only the test compares with istiod-lite; ztunnel/ never imports it.
	"github.com/ambientlite/mesh/istiod-lite/model"
)

func TestEnrolledMatchesIstiodLite(t *testing.T) {
	ns := func(mode string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}
		if mode != "" {
			n.Labels = map[string]string{LabelDataplaneMode: mode}
		}
		return n
	}
	pod := func(mode string, mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
		if mode != "" {
			p.Labels = map[string]string{LabelDataplaneMode: mode}
		}
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	sidecar := func(p *corev1.Pod) { p.Annotations = map[string]string{annotationSidecarStatus: "{}"} }

	tests := []struct {
		name string
		ns   *corev1.Namespace
		pod  *corev1.Pod
		want bool
	}{
		{"namespace ambient", ns("ambient"), pod(""), true},
		{"namespace ambient, pod none", ns("ambient"), pod("none"), false},
		{"pod ambient, namespace unlabelled", ns(""), pod("ambient"), true},
		{"pod ambient, namespace none", ns("none"), pod("ambient"), true},
		{"pod ambient, namespace missing", nil, pod("ambient"), true},
		{"nothing labelled", ns(""), pod(""), false},
		{"namespace missing", nil, pod(""), false},
		{"namespace none", ns("none"), pod(""), false},
		{"namespace other value", ns("sidecar"), pod(""), false},
		{"pod other value in ambient namespace", ns("ambient"), pod("something"), true},
		{"host network in ambient namespace", ns("ambient"), pod("", hostNet), false},
		{"host network labelled ambient", ns(""), pod("ambient", hostNet), false},
		{"sidecar in ambient namespace", ns("ambient"), pod("", sidecar), false},
		{"sidecar labelled ambient", ns(""), pod("ambient", sidecar), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := enrolled(tc.ns, tc.pod)
			if got != tc.want {
				t.Errorf("enrolled = %v, want %v", got, tc.want)
			}
			if m := model.Enrolled(tc.ns, tc.pod); m != got {
				t.Errorf("node agent says %v, istiod-lite's model.Enrolled says %v", got, m)
			}
		})
	}
}

func TestWants(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "node-1"}.withDefaults()}
	ambient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{LabelDataplaneMode: "ambient"}}}
	base := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"}, Spec: corev1.PodSpec{NodeName: "node-1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   bool
	}{
		{"running here", func(*corev1.Pod) {}, true},
		{"pending here", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }, true},
		{"other node", func(p *corev1.Pod) { p.Spec.NodeName = "node-2" }, false},
		{"unscheduled", func(p *corev1.Pod) { p.Spec.NodeName = "" }, false},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, false},
		{"failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, false},
		{"kube-system excluded by default", func(p *corev1.Pod) { p.Namespace = "kube-system" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.mutate(p)
			if got := a.wants(ambient, p); got != tc.want {
				t.Errorf("wants = %v, want %v", got, tc.want)
			}
		})
	}
	none := &Agent{cfg: Config{NodeName: "node-1", ExcludeNamespaces: []string{}}.withDefaults()}
	p := base()
	p.Namespace = "kube-system"
	if !none.wants(ambient, p) {
		t.Error("an empty ExcludeNamespaces still excludes kube-system")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("Validate accepted a config without NodeName")
	}
	if err := (Config{NodeName: "n"}).Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	if err := (Config{NodeName: "n", ZtunnelSocket: "/x.sock", CNISocket: "/x.sock"}).Validate(); err == nil {
		t.Error("Validate accepted one socket for both")
	}
}
