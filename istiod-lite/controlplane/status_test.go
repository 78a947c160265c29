package controlplane

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestStatusMerge(t *testing.T) {
	w := &statusWriter{controller: "istio.io/gateway-controller"}
	svc := gatewayv1.ParentReference{Group: new(gatewayv1.Group("")), Kind: new(gatewayv1.Kind("Service")), Name: "reviews"}
	gw := gatewayv1.ParentReference{Name: "public"}
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	cond := func(typ string, st metav1.ConditionStatus, reason string, at metav1.Time) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, ObservedGeneration: 2, LastTransitionTime: at}
	}
	other := gatewayv1.RouteParentStatus{ParentRef: gw, ControllerName: "example.com/gateway", Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", old)}}
	have := []gatewayv1.RouteParentStatus{
		other,
		{ParentRef: svc, ControllerName: w.controller, Conditions: []metav1.Condition{
			cond("Accepted", "True", "Accepted", old), cond("ResolvedRefs", "True", "ResolvedRefs", old), cond("Stale", "True", "X", old)}},
	}
	// Same Accepted, ResolvedRefs turned False, Stale no longer reported.
	want := []gatewayv1.RouteParentStatus{{ParentRef: svc, ControllerName: w.controller, Conditions: []metav1.Condition{
		cond("Accepted", "True", "Accepted", metav1.Time{}), cond("ResolvedRefs", "False", "BackendNotFound", metav1.Time{})}}}
	got, changed := w.merge(have, want, now)
	if !changed {
		t.Fatal("merge reported no change")
	}
	if len(got) != 2 || got[0].ControllerName != "example.com/gateway" {
		t.Fatalf("other controller's entry not kept first: %+v", got)
	}
	cs := got[1].Conditions
	if len(cs) != 2 {
		t.Fatalf("conditions %+v, want Accepted and ResolvedRefs only", cs)
	}
	if cs[0].Type != "Accepted" || !cs[0].LastTransitionTime.Equal(&old) {
		t.Errorf("unchanged Accepted lost its transition time: %+v", cs[0])
	}
	if cs[1].Type != "ResolvedRefs" || cs[1].Status != "False" || !cs[1].LastTransitionTime.Equal(&now) {
		t.Errorf("changed ResolvedRefs: %+v", cs[1])
	}
	// Merging the result again changes nothing: no write loop.
	if _, changed := w.merge(got, want, now); changed {
		t.Error("second merge reported a change")
	}
	// A route that lost its Service parent loses our entry only.
	got, changed = w.merge(got, nil, now)
	if !changed || len(got) != 1 || got[0].ControllerName != "example.com/gateway" {
		t.Errorf("after the parent went away: %+v (changed %v)", got, changed)
	}
	// Nothing of ours, nothing wanted: no write.
	if _, changed := w.merge([]gatewayv1.RouteParentStatus{other}, nil, now); changed {
		t.Error("write for a route that is not ours")
	}
}
