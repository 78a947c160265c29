package waypoint

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// listenerVerdict is what check decided about one listener.
type listenerVerdict struct {
	name gatewayv1.SectionName
	// ok: this listener is served (the waypoint's HBONE listener).
	ok      bool
	reason  gatewayv1.ListenerConditionReason // why not ok
	message string
	// conflicted: another listener already serves HBONE on 15008.
	conflicted bool
	// badKinds lists allowedRoutes.kinds no route may attach with.
	badKinds []string
}

// verdict is what check decided about a Gateway, before anything is read
// from or written to the cluster.
type verdict struct {
	listeners []listenerVerdict
	// mesh is the listener the waypoint serves; nil if none is valid.
	mesh *gatewayv1.Listener
	// accepted and, when false or when some listener is invalid, the
	// reason and message of the Accepted condition.
	accepted bool
	reason   gatewayv1.GatewayConditionReason
	message  string
}

// check validates a waypoint Gateway: its name must fit a Service name and
// a label value, it must not ask for what we cannot do (parametersRef, spec
// addresses), and exactly one listener is served: the first with protocol
// HBONE on port 15008. Other listeners are rejected one by one (Istio warns
// about them the same way); the Gateway is rejected only when none is valid,
// as the Gateway API spec says of reason ListenersNotValid.
func check(gw *gatewayv1.Gateway) verdict {
	v := verdict{accepted: true, reason: gatewayv1.GatewayReasonAccepted, message: "Resource accepted"}
	valid := 0
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		lv := listenerVerdict{name: l.Name}
		switch {
		case l.Protocol != ProtocolHBONE:
			lv.reason = gatewayv1.ListenerReasonUnsupportedProtocol
			lv.message = fmt.Sprintf("protocol %q is not supported by a waypoint: expected a single listener on port %d with protocol %q",
				l.Protocol, PortHBONE, ProtocolHBONE)
		case l.Port != PortHBONE:
			lv.reason = gatewayv1.ListenerReasonPortUnavailable
			lv.message = fmt.Sprintf("port %d is not available: a waypoint serves %s on port %d only", l.Port, ProtocolHBONE, PortHBONE)
		case v.mesh != nil:
			lv.reason = gatewayv1.ListenerReasonHostnameConflict
			lv.conflicted = true
			lv.message = fmt.Sprintf("listener %q already serves %s on port %d; a waypoint has one such listener", v.mesh.Name, ProtocolHBONE, PortHBONE)
		default:
			lv.ok = true
			v.mesh = l
			valid++
		}
		// No route kind attaches to the HBONE listener itself (routes name
		// Services), so any kind asked for is unsupported.
		if l.AllowedRoutes != nil {
			for _, k := range l.AllowedRoutes.Kinds {
				lv.badKinds = append(lv.badKinds, string(k.Kind))
			}
		}
		v.listeners = append(v.listeners, lv)
	}

	reject := func(reason gatewayv1.GatewayConditionReason, msg string) {
		if v.accepted {
			v.accepted, v.reason, v.message = false, reason, msg
		}
	}
	if errs := validation.IsDNS1035Label(gw.Name); len(errs) > 0 {
		reject(gatewayv1.GatewayReasonInvalid, fmt.Sprintf(
			"the waypoint's Service is named after the Gateway, so its name must be a DNS label: %s", strings.Join(errs, "; ")))
	}
	if inf := gw.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		reject(gatewayv1.GatewayReasonInvalidParameters, fmt.Sprintf(
			"spec.infrastructure.parametersRef (%s %s) is not supported for waypoints; remove it",
			inf.ParametersRef.Kind, inf.ParametersRef.Name))
	}
	if len(gw.Spec.Addresses) > 0 {
		reject(gatewayv1.GatewayReasonUnsupportedAddress,
			"spec.addresses is not supported for waypoints: the address is the cluster IP of the waypoint's Service; remove it")
	}
	switch {
	case valid == 0:
		reject(gatewayv1.GatewayReasonListenersNotValid, fmt.Sprintf(
			"none of the Gateway's listeners is valid: a waypoint needs one listener on port %d with protocol %q", PortHBONE, ProtocolHBONE))
	case valid < len(gw.Spec.Listeners) && v.accepted:
		v.reason = gatewayv1.GatewayReasonListenersNotValid
		v.message = fmt.Sprintf("one or more listeners are invalid; only listener %q (%s, port %d) is served",
			v.mesh.Name, ProtocolHBONE, PortHBONE)
	}
	if !v.accepted {
		v.mesh = nil
	}
	return v
}
