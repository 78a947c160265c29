package nodeagent

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations, Istio's names.
const (
	// LabelDataplaneMode on a namespace or pod: "ambient" enrols, "none" on
	// a pod opts it out.
	LabelDataplaneMode   = "istio.io/dataplane-mode"
	DataplaneModeAmbient = "ambient"
	DataplaneModeNone    = "none"

	// AnnotationRedirection is what the agent writes on pods it captured:
	// "enabled" once ztunnel took the pod, "pending" while the rules are in
	// place but ztunnel has not acknowledged it yet. Removed on release.
	AnnotationRedirection = "ambient.istio.io/redirection"
	RedirectionEnabled    = "enabled"
	RedirectionPending    = "pending"

	annotationSidecarStatus = "sidecar.istio.io/status"
)

// enrolled is Istio's enrolment rule (the same as istiod-lite's
// model.Enrolled): the pod or its namespace is labelled
// istio.io/dataplane-mode=ambient, the pod is not labelled "none", it does
// not use the host network and has no Istio sidecar. ns may be nil.
func enrolled(ns *corev1.Namespace, pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	if _, sidecar := pod.Annotations[annotationSidecarStatus]; sidecar {
		return false
	}
	switch pod.Labels[LabelDataplaneMode] {
	case DataplaneModeNone:
		return false
	case DataplaneModeAmbient:
		return true
	}
	return ns != nil && ns.Labels[LabelDataplaneMode] == DataplaneModeAmbient
}

// wants reports whether this node's agent should capture pod now: enrolled,
// not in an excluded namespace, scheduled here and not finished.
func (a *Agent) wants(ns *corev1.Namespace, pod *corev1.Pod) bool {
	return pod.Spec.NodeName == a.cfg.NodeName &&
		!terminal(pod) &&
		!slices.Contains(a.cfg.ExcludeNamespaces, pod.Namespace) &&
		enrolled(ns, pod)
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podIPs are the pod's addresses from its status (PodIPs, else PodIP).
func podIPs(pod *corev1.Pod) []netip.Addr {
	var ips []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	return ips
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}
