package waypoint

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// observation is what reconcile found in, or failed to write to, the
// cluster for one Gateway.
type observation struct {
	// conflict, if set, names objects that have the waypoint's names but
	// are not owned by the Gateway; nothing was written.
	conflict string
	// applyErr is why writing the objects failed.
	applyErr error
	// deployment and service as they are after the writes (nil: absent).
	deployment *appsv1.Deployment
	service    *corev1.Service
}

// gatewayStatus computes the status of a waypoint Gateway from the verdict
// on its spec and what was observed. It starts from the current status so
// that conditions keep their lastTransitionTime while their status does not
// change, and conditions of other types (written by others) are kept.
//
//   - Accepted: the verdict; False with reason Invalid on a name conflict.
//   - Programmed: True only when the Deployment has an available replica and
//     the Service a cluster IP; otherwise False, reason AddressNotAssigned
//     (Istio's) with what is missing, or Invalid when not accepted or when
//     a write failed.
//   - ResolvedRefs: False (ListenersNotResolved) when a listener asks for
//     route kinds that cannot attach.
//   - addresses: the Service's cluster IPs then its hostname, as Istio
//     reports for waypoints — written once Programmed, and, like Istio,
//     never taken away afterwards.
func gatewayStatus(gw *gatewayv1.Gateway, v verdict, obs observation, domainSuffix string, now time.Time) gatewayv1.GatewayStatus {
	st := *gw.Status.DeepCopy()
	gen := gw.Generation
	ts := metav1.NewTime(now.Truncate(time.Second))
	set := func(conds *[]metav1.Condition, typ string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: gen, LastTransitionTime: ts,
		})
	}

	accepted, acceptedReason, acceptedMsg := v.accepted, string(v.reason), v.message
	if accepted && obs.conflict != "" {
		accepted, acceptedReason, acceptedMsg = false, string(gatewayv1.GatewayReasonInvalid), obs.conflict
	}
	programmed, programmedReason, programmedMsg := false, string(gatewayv1.GatewayReasonInvalid), acceptedMsg
	if accepted {
		programmed, programmedReason, programmedMsg = readiness(gw, obs)
	}
	set(&st.Conditions, string(gatewayv1.GatewayConditionAccepted), accepted, acceptedReason, acceptedMsg)
	set(&st.Conditions, string(gatewayv1.GatewayConditionProgrammed), programmed, programmedReason, programmedMsg)

	var unresolved []string
	for _, lv := range v.listeners {
		if len(lv.badKinds) > 0 {
			unresolved = append(unresolved, string(lv.name))
		}
	}
	if len(unresolved) == 0 {
		set(&st.Conditions, string(gatewayv1.GatewayConditionResolvedRefs), true,
			string(gatewayv1.GatewayReasonResolvedRefs), "All references resolved")
	} else {
		set(&st.Conditions, string(gatewayv1.GatewayConditionResolvedRefs), false,
			string(gatewayv1.GatewayReasonListenersNotResolved),
			fmt.Sprintf("listener(s) %s ask for route kinds that cannot attach to a waypoint", strings.Join(unresolved, ", ")))
	}

	if programmed {
		st.Addresses = addresses(gw, obs.service, domainSuffix)
	}

	listeners := make([]gatewayv1.ListenerStatus, 0, len(v.listeners))
	for _, lv := range v.listeners {
		ls := gatewayv1.ListenerStatus{Name: lv.name, SupportedKinds: []gatewayv1.RouteGroupKind{}}
		for _, old := range gw.Status.Listeners {
			if old.Name == lv.name {
				ls.Conditions = append([]metav1.Condition(nil), old.Conditions...)
			}
		}
		if lv.ok {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionAccepted), true,
				string(gatewayv1.ListenerReasonAccepted), "Listener accepted")
			if programmed {
				set(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), true,
					string(gatewayv1.ListenerReasonProgrammed), "Listener programmed")
			} else {
				set(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), false,
					string(gatewayv1.ListenerReasonPending), programmedMsg)
			}
		} else {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionAccepted), false, string(lv.reason), lv.message)
			set(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), false,
				string(gatewayv1.ListenerReasonInvalid), "Listener not accepted: "+lv.message)
		}
		if len(lv.badKinds) == 0 {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionResolvedRefs), true,
				string(gatewayv1.ListenerReasonResolvedRefs), "All references resolved")
		} else {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionResolvedRefs), false,
				string(gatewayv1.ListenerReasonInvalidRouteKinds),
				fmt.Sprintf("route kinds %s cannot attach to a waypoint listener; routes name Services in parentRefs",
					strings.Join(lv.badKinds, ", ")))
		}
		if lv.conflicted {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionConflicted), true, string(lv.reason), lv.message)
		} else {
			set(&ls.Conditions, string(gatewayv1.ListenerConditionConflicted), false,
				string(gatewayv1.ListenerReasonNoConflicts), "No conflicts")
		}
		listeners = append(listeners, ls)
	}
	st.Listeners = listeners
	return st
}

// readiness says whether the waypoint can carry traffic: a Deployment with
// an available replica behind a Service with a cluster IP.
func readiness(gw *gatewayv1.Gateway, obs observation) (ok bool, reason, msg string) {
	if obs.applyErr != nil {
		return false, string(gatewayv1.GatewayReasonInvalid), obs.applyErr.Error()
	}
	ref := gw.Namespace + "/" + gw.Name
	var missing, have []string
	switch d := obs.deployment; {
	case d == nil:
		missing = append(missing, fmt.Sprintf("Deployment %s does not exist yet", ref))
	default:
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := fmt.Sprintf("Deployment %s has %d/%d available replicas", ref, d.Status.AvailableReplicas, want)
		if d.Status.AvailableReplicas < 1 {
			missing = append(missing, s)
		} else {
			have = append(have, s)
		}
	}
	switch s := obs.service; {
	case s == nil:
		missing = append(missing, fmt.Sprintf("Service %s does not exist yet", ref))
	case len(clusterIPs(s)) == 0:
		missing = append(missing, fmt.Sprintf("Service %s has no cluster IP yet", ref))
	default:
		have = append(have, fmt.Sprintf("Service %s has cluster IP %s", ref, strings.Join(clusterIPs(s), ", ")))
	}
	if len(missing) > 0 {
		return false, string(gatewayv1.GatewayReasonAddressNotAssigned), strings.Join(missing, "; ")
	}
	return true, string(gatewayv1.GatewayReasonProgrammed), strings.Join(have, "; ")
}

// clusterIPs of a Service, dual-stack aware; none for a headless one.
func clusterIPs(s *corev1.Service) []string {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out
}

// addresses are the Service's cluster IPs and then its cluster-local
// hostname: Istio reports both for waypoints (ClassInfo AddressType "") in
// this order, so that consumers that want either find it.
func addresses(gw *gatewayv1.Gateway, svc *corev1.Service, domainSuffix string) []gatewayv1.GatewayStatusAddress {
	ipType, hostType := gatewayv1.IPAddressType, gatewayv1.HostnameAddressType
	var out []gatewayv1.GatewayStatusAddress
	for _, ip := range clusterIPs(svc) {
		out = append(out, gatewayv1.GatewayStatusAddress{Type: &ipType, Value: ip})
	}
	out = append(out, gatewayv1.GatewayStatusAddress{
		Type:  &hostType,
		Value: fmt.Sprintf("%s.%s.svc.%s", gw.Name, gw.Namespace, domainSuffix),
	})
	return out
}
