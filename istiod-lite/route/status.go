package route

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Istio's ambient condition on mesh routes: whether the parent Service's
// traffic goes through a waypoint at all (istio.io/use-waypoint on the
// Service or its namespace).
const (
	ConditionResolvedWaypoints    = "ResolvedWaypoints"
	ReasonResolvedWaypoints       = "ResolvedWaypoints"
	ReasonMissingUseWaypointLabel = "MissingUseWaypointLabel"
	LabelUseWaypoint              = "istio.io/use-waypoint"
)

// status computes the RouteParentStatus of each Service parentRef of r.
func (c *compiler) status(r *route) RouteStatus {
	st := RouteStatus{Kind: r.kind, Namespace: r.namespace, Name: r.name, Generation: r.generation}
	for _, p := range r.parents {
		var conds []metav1.Condition
		add := func(typ string, ok bool, reason gatewayv1.RouteConditionReason, msg string) {
			status := metav1.ConditionFalse
			if ok {
				status = metav1.ConditionTrue
			}
			conds = append(conds, metav1.Condition{
				Type: typ, Status: status, Reason: string(reason), Message: msg,
				ObservedGeneration: r.generation, LastTransitionTime: metav1.NewTime(c.cfg.Now),
			})
		}

		accepted := p.refused == nil
		switch {
		case p.refused != nil:
			add(string(gatewayv1.RouteConditionAccepted), false, p.refused.reason, p.refused.msg)
		case !slices.ContainsFunc(p.atts, func(a *attachment) bool { return !a.conflicted }):
			accepted = false
			add(string(gatewayv1.RouteConditionAccepted), false, reasonConflicted,
				fmt.Sprintf("GRPCRoutes attached to the same port(s) of Service %s/%s take precedence over HTTPRoutes (GEP-1294)", p.namespace, p.name))
		default:
			add(string(gatewayv1.RouteConditionAccepted), true, gatewayv1.RouteReasonAccepted, acceptedMessage(r, p))
		}

		if accepted && slices.ContainsFunc(r.rules, func(t *ruleTemplate) bool { return t.drop != nil }) {
			first := r.rules[slices.IndexFunc(r.rules, func(t *ruleTemplate) bool { return t.drop != nil })].drop
			add(string(gatewayv1.RouteConditionPartiallyInvalid), true, first.reason, droppedRules(r))
		}

		// References are checked for every parent, attached or not.
		var errs []condErr
		ctx := applyCtx{routeKind: r.kind, routeNS: r.namespace, parentNS: p.namespace}
		for _, t := range r.rules {
			if t.drop != nil {
				continue
			}
			e, ok := c.refErrs[refKey{t, p.namespace}]
			if !ok {
				_, e = c.instantiate(t, ctx)
			}
			errs = append(errs, e...)
		}
		if len(errs) == 0 {
			add(string(gatewayv1.RouteConditionResolvedRefs), true, gatewayv1.RouteReasonResolvedRefs, "All references resolved")
		} else {
			var msgs []string
			for _, e := range errs {
				if !slices.Contains(msgs, e.msg) {
					msgs = append(msgs, e.msg)
					c.routeProblem(r, e.msg)
				}
			}
			add(string(gatewayv1.RouteConditionResolvedRefs), false, errs[0].reason, strings.Join(msgs, "; "))
		}

		ok, reason, msg := c.waypointResolved(p)
		add(ConditionResolvedWaypoints, ok, gatewayv1.RouteConditionReason(reason), msg)

		st.Parents = append(st.Parents, gatewayv1.RouteParentStatus{
			ParentRef:      p.ref,
			ControllerName: c.cfg.ControllerName,
			Conditions:     conds,
		})
	}
	return st
}

func acceptedMessage(r *route, p *parent) string {
	var ports []string
	for _, a := range p.atts {
		if !a.conflicted {
			ports = append(ports, fmt.Sprint(a.port.Port))
		}
	}
	msg := fmt.Sprintf("Route attached to port %s of Service %s/%s", strings.Join(ports, ", "), p.namespace, p.name)
	if p.namespace != r.namespace {
		msg += fmt.Sprintf(" as a consumer route: it applies to clients in namespace %s only", r.namespace)
	}
	return msg
}

// waypointResolved reports whether the parent's traffic goes through a
// waypoint: the Service's own istio.io/use-waypoint label wins ("none" opts
// out), else its namespace's.
func (c *compiler) waypointResolved(p *parent) (ok bool, reason, msg string) {
	if p.svc == nil {
		return false, string(gatewayv1.RouteReasonNoMatchingParent), "parent Service not found"
	}
	labels, owner := p.svc.Labels, "Service "+p.namespace+"/"+p.name
	if v := labels[LabelUseWaypoint]; v == "" {
		if ns := c.namespaces[p.namespace]; ns != nil {
			labels, owner = ns.Labels, "namespace "+p.namespace
		}
	}
	switch v := labels[LabelUseWaypoint]; {
	case v == "":
		return false, ReasonMissingUseWaypointLabel,
			fmt.Sprintf("neither Service %s/%s nor its namespace has the %s label: no waypoint applies this route", p.namespace, p.name, LabelUseWaypoint)
	case strings.EqualFold(v, "none"):
		return false, ReasonMissingUseWaypointLabel, fmt.Sprintf("%s opts out of waypoints (%s=none): no waypoint applies this route", owner, LabelUseWaypoint)
	}
	return true, ReasonResolvedWaypoints, fmt.Sprintf("Service %s/%s uses waypoint %q (%s label of %s)",
		p.namespace, p.name, labels[LabelUseWaypoint], LabelUseWaypoint, owner)
}
