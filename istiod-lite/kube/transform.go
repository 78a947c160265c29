package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// stripObject is the informers' transform: it drops what no reader of the
// cache needs, so that a cluster of many pods costs little memory. Readers:
// istiod-lite/model (pods, services, endpoint slices, namespaces, gateways),
// istiod-lite/route (routes, services), the node index and the token
// authenticator (pod name, uid, node, service account).
func stripObject(obj any) (any, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d, nil
	}
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m.GetObjectMeta().SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		return stripPod(o), nil
	case *corev1.Namespace:
		o.Spec = corev1.NamespaceSpec{}
		o.Status = corev1.NamespaceStatus{Phase: o.Status.Phase}
	case *discoveryv1.EndpointSlice:
		for i := range o.Endpoints {
			o.Endpoints[i].Hints = nil
		}
	}
	return obj, nil
}

// stripPod keeps identity, placement, addresses, readiness and container
// ports (named target ports), and drops the rest (volumes, env, commands,
// probes, most of the status).
func stripPod(p *corev1.Pod) *corev1.Pod {
	keepPorts := func(cs []corev1.Container) []corev1.Container {
		out := make([]corev1.Container, 0, len(cs))
		for _, c := range cs {
			out = append(out, corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy})
		}
		return out
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: p.ObjectMeta,
		Spec: corev1.PodSpec{
			NodeName:           p.Spec.NodeName,
			ServiceAccountName: p.Spec.ServiceAccountName,
			HostNetwork:        p.Spec.HostNetwork,
			Containers:         keepPorts(p.Spec.Containers),
			InitContainers:     keepPorts(p.Spec.InitContainers),
		},
		Status: corev1.PodStatus{
			Phase:      p.Status.Phase,
			Conditions: p.Status.Conditions,
			HostIP:     p.Status.HostIP,
			HostIPs:    p.Status.HostIPs,
			PodIP:      p.Status.PodIP,
			PodIPs:     p.Status.PodIPs,
		},
	}
}
