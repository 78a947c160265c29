package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"istio.io/istio/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// PodUID is the workload uid Istio gives a pod: "<clusterID>//Pod/<ns>/<name>".
func PodUID(clusterID, namespace, name string) string {
	return clusterID + "//Pod/" + namespace + "/" + name
}

// Enrolled reports whether a pod is in the ambient mesh, by the rule Istio's
// node agent applies before capturing it: its namespace or the pod is
// labelled istio.io/dataplane-mode=ambient, the pod is not labelled "none",
// it does not use the host network (which cannot be captured) and it has no
// Istio sidecar. ns may be nil.
func Enrolled(ns *corev1.Namespace, pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	if _, ok := pod.Annotations[AnnotationSidecarStatus]; ok {
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

// workload translates a pod. Like Istio, every running pod with an IP is a
// workload, enrolled or not; only enrolled pods get tunnel_protocol HBONE,
// which tells ztunnel to reach them over HBONE rather than plaintext.
func (b *builder) workload(p *corev1.Pod) *workloadapi.Workload {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	if len(ips) == 0 || p.Spec.NodeName == "" {
		return nil // not yet scheduled or no IP yet: nothing to address
	}
	addrs := make([][]byte, 0, len(ips))
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip.IP)
		if err != nil {
			b.problem("Pod", p.Namespace, p.Name, fmt.Sprintf("pod IP %q is not an IP address; pod skipped", ip.IP))
			return nil
		}
		addrs = append(addrs, a.AsSlice())
	}
	status := workloadapi.WorkloadStatus_HEALTHY
	if !podReady(p) || p.DeletionTimestamp != nil {
		status = workloadapi.WorkloadStatus_UNHEALTHY
	}
	w := &workloadapi.Workload{
		Uid:            PodUID(b.cfg.ClusterID, p.Namespace, p.Name),
		Name:           p.Name,
		Namespace:      p.Namespace,
		Addresses:      addrs,
		Network:        b.cfg.Network,
		ServiceAccount: p.Spec.ServiceAccountName,
		Node:           p.Spec.NodeName,
		ClusterId:      b.cfg.ClusterID,
		TrustDomain:    b.cfg.wireTrustDomain(),
		WorkloadName:   WorkloadName(p),
		WorkloadType:   workloadapi.WorkloadType_POD,
		Status:         status,
		Services:       b.workloadServices(p),
		// Selector policies and converted PeerAuthentications; scoped
		// (GLOBAL, NAMESPACE) policies are applied by ztunnel unnamed.
		AuthorizationPolicies: b.workloadPolicies(p.Namespace, p.Labels),
	}
	w.CanonicalName, w.CanonicalRevision = CanonicalService(p.Labels, w.WorkloadName)
	if p.Spec.HostNetwork {
		w.NetworkMode = workloadapi.NetworkMode_HOST_NETWORK
	}
	w.TunnelProtocol, w.NativeTunnel = tunnelProtocol(b.namespaces[p.Namespace], p)
	if !b.isWaypointPod(p.ObjectMeta) {
		w.Waypoint = b.waypointFor("Pod", p.ObjectMeta, workloadTraffic)
	}
	return w
}

// tunnelProtocol decides how ztunnel reaches a pod. Istio sets HBONE when the
// node agent has annotated the pod ambient.istio.io/redirection=enabled, and
// HBONE with native_tunnel for pods labelled networking.istio.io/tunnel=http
// (they terminate HBONE themselves). We also set HBONE for a pod Enrolled by
// its labels, so istiod-lite does not depend on the node agent writing the
// annotation; the annotation is still honoured for Istio's node agent.
func tunnelProtocol(ns *corev1.Namespace, p *corev1.Pod) (workloadapi.TunnelProtocol, bool) {
	if slices.Contains(strings.Split(p.Labels[LabelTunnel], ","), "http") {
		return workloadapi.TunnelProtocol_HBONE, true
	}
	if Enrolled(ns, p) || p.Annotations[AnnotationAmbientRedirection] == "enabled" {
		return workloadapi.TunnelProtocol_HBONE, false
	}
	return workloadapi.TunnelProtocol_NONE, false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// workloadServices is the services map of a pod's workload, keyed
// "<ns>/<hostname>": every Service in its namespace whose non-empty selector
// matches the pod, plus selector-less Services whose EndpointSlices reference
// the pod by targetRef. Named target ports are resolved against the pod's
// TCP container ports; a name the pod lacks drops that port for this pod.
func (b *builder) workloadServices(p *corev1.Pod) map[string]*workloadapi.PortList {
	out := map[string]*workloadapi.PortList{}
	add := func(s *corev1.Service) {
		key := s.Namespace + "/" + ServiceHostname(s.Name, s.Namespace, b.cfg.DomainSuffix)
		if _, ok := out[key]; ok {
			return
		}
		pl := &workloadapi.PortList{Ports: make([]*workloadapi.Port, 0, len(s.Spec.Ports))}
		for _, sp := range s.Spec.Ports {
			target := uint32(sp.TargetPort.IntVal)
			if name := sp.TargetPort.StrVal; name != "" {
				n, ok := containerPort(p, name)
				if !ok {
					b.problem("Pod", p.Namespace, p.Name, fmt.Sprintf(
						"service %s/%s port %d targets port %q, which no container of the pod declares (TCP); port skipped for this pod",
						s.Namespace, s.Name, sp.Port, name))
					continue
				}
				target = uint32(n)
			}
			pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: uint32(sp.Port), TargetPort: target})
		}
		out[key] = pl
	}
	for _, s := range b.services {
		if s.Namespace != p.Namespace || len(s.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
			add(s)
		}
	}
	for _, name := range b.slicePods[nsName{p.Namespace, p.Name}] {
		s := b.svcByName[nsName{p.Namespace, name}]
		if s != nil && len(s.Spec.Selector) == 0 && s.Spec.Type != corev1.ServiceTypeExternalName {
			add(s)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// containerPort finds a TCP port by name in the pod's containers and its
// restartable (sidecar) init containers, as Istio's FindPortName does.
func containerPort(p *corev1.Pod, name string) (int32, bool) {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name && (cp.Protocol == corev1.ProtocolTCP || cp.Protocol == "") {
				return cp.ContainerPort, true
			}
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue
		}
		for _, cp := range c.Ports {
			if cp.Name == name && (cp.Protocol == corev1.ProtocolTCP || cp.Protocol == "") {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// CanonicalService returns the canonical name and revision of a workload,
// with Istio's precedence: name from service.istio.io/canonical-name,
// app.kubernetes.io/name, app, else workloadName; revision from
// service.istio.io/canonical-revision, app.kubernetes.io/version, version,
// else "latest".
func CanonicalService(lbls map[string]string, workloadName string) (name, revision string) {
	name = firstLabel(lbls, workloadName, LabelCanonicalName, "app.kubernetes.io/name", "app")
	revision = firstLabel(lbls, "latest", LabelCanonicalRevision, "app.kubernetes.io/version", "version")
	return name, revision
}

func firstLabel(lbls map[string]string, def string, keys ...string) string {
	for _, k := range keys {
		if v, ok := lbls[k]; ok {
			return v
		}
	}
	return def
}

// cronJobName matches the "<cronjob>-<timestamp>" names of Jobs a CronJob creates.
var cronJobName = regexp.MustCompile(`^(.+)-\d{8,10}$`)

// WorkloadName is the name of the workload that owns a pod, by Istio's
// heuristic: the service.istio.io/workload-name label, else for a generated
// pod its controller's name, trimmed to the Deployment name for a ReplicaSet
// with a matching pod-template-hash and to the CronJob name for a Job; else
// the pod's own name.
func WorkloadName(p *corev1.Pod) string {
	if wn, ok := p.Labels[LabelServiceWorkloadName]; ok {
		return wn
	}
	if p.GenerateName == "" {
		return p.Name
	}
	ref := metav1.GetControllerOfNoCopy(p)
	if ref == nil {
		return p.Name
	}
	switch ref.Kind {
	case "ReplicaSet":
		if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return strings.TrimSuffix(ref.Name, "-"+h)
		}
	case "Job":
		if m := cronJobName.FindStringSubmatch(ref.Name); m != nil {
			return m[1]
		}
	}
	return ref.Name
}
