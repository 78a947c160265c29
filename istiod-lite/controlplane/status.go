package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/ambientlite/mesh/istiod-lite/kube"
	"github.com/ambientlite/mesh/istiod-lite/route"
)

// routeStatuses hands the latest compiled route status from the pipeline
// (every replica) to the status writer (the leader only).
type routeStatuses struct {
	mu      sync.Mutex
	latest  map[string]route.RouteStatus // "<kind>/<ns>/<name>"
	changed chan struct{}
}

func newRouteStatuses() *routeStatuses {
	return &routeStatuses{changed: make(chan struct{}, 1)}
}

func routeKey(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func (r *routeStatuses) publish(st []route.RouteStatus) {
	m := make(map[string]route.RouteStatus, len(st))
	for _, s := range st {
		m[routeKey(s.Kind, s.Namespace, s.Name)] = s
	}
	r.mu.Lock()
	r.latest = m
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *routeStatuses) get() map[string]route.RouteStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}

// statusWriter writes the route status istiod-lite owns (parent entries with
// its controller name) on HTTPRoutes and GRPCRoutes, leaving other
// controllers' entries alone, and only when something differs.
type statusWriter struct {
	client     gatewayclient.Interface
	cache      *kube.Cache
	statuses   *routeStatuses
	controller gatewayv1.GatewayController
	log        *slog.Logger
}

func (w *statusWriter) run(ctx context.Context) error {
	// Resync now and then (lost writes); soon after a failed round
	// (usually a conflict with a newer version not yet in the cache).
	retry := time.NewTicker(10 * time.Second)
	defer retry.Stop()
	for {
		if err := w.writeAll(ctx); err != nil && ctx.Err() == nil {
			if apierrors.IsConflict(err) {
				w.log.Debug("route status conflict, retrying", "err", err)
			} else {
				w.log.Warn("route status", "err", err)
			}
			retry.Reset(500 * time.Millisecond)
		} else {
			retry.Reset(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.statuses.changed:
		case <-retry.C:
		}
	}
}

func (w *statusWriter) writeAll(ctx context.Context) error {
	want := w.statuses.get()
	if want == nil {
		return nil // no compilation yet
	}
	var firstErr error
	note := func(err error) {
		if err != nil && !apierrors.IsNotFound(err) && firstErr == nil {
			firstErr = err
		}
	}
	now := metav1.Now()
	for _, r := range w.cache.HTTPRoutes() {
		st := want[routeKey(route.KindHTTPRoute, r.Namespace, r.Name)]
		if parents, changed := w.merge(r.Status.Parents, st.Parents, now); changed {
			cp := r.DeepCopy()
			cp.Status.Parents = parents
			_, err := w.client.GatewayV1().HTTPRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{FieldManager: "istiod-lite"})
			w.logWrite("HTTPRoute", r.Namespace, r.Name, err)
			note(err)
		}
	}
	for _, r := range w.cache.GRPCRoutes() {
		st := want[routeKey(route.KindGRPCRoute, r.Namespace, r.Name)]
		if parents, changed := w.merge(r.Status.Parents, st.Parents, now); changed {
			cp := r.DeepCopy()
			cp.Status.Parents = parents
			_, err := w.client.GatewayV1().GRPCRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{FieldManager: "istiod-lite"})
			w.logWrite("GRPCRoute", r.Namespace, r.Name, err)
			note(err)
		}
	}
	return firstErr
}

func (w *statusWriter) logWrite(kind, ns, name string, err error) {
	if err != nil {
		w.log.Debug("route status write failed (will retry)", "kind", kind, "namespace", ns, "name", name, "err", err)
		return
	}
	w.log.Debug("route status written", "kind", kind, "namespace", ns, "name", name)
}

// merge returns the route's parent statuses with ours replaced by want:
// entries of other controllers stay as they are and in place; conditions
// keep their lastTransitionTime when their status did not change.
func (w *statusWriter) merge(have, want []gatewayv1.RouteParentStatus, now metav1.Time) ([]gatewayv1.RouteParentStatus, bool) {
	var out []gatewayv1.RouteParentStatus
	mine := map[string]gatewayv1.RouteParentStatus{}
	for _, p := range have {
		if p.ControllerName == w.controller {
			mine[parentKey(p.ParentRef)] = p
			continue
		}
		out = append(out, p)
	}
	for _, p := range want {
		merged := gatewayv1.RouteParentStatus{ParentRef: p.ParentRef, ControllerName: p.ControllerName}
		if old, ok := mine[parentKey(p.ParentRef)]; ok {
			merged.Conditions = append([]metav1.Condition(nil), old.Conditions...)
		}
		for _, c := range p.Conditions {
			if c.LastTransitionTime.IsZero() {
				c.LastTransitionTime = now
			}
			meta.SetStatusCondition(&merged.Conditions, c)
		}
		// Conditions we no longer report go away.
		keep := merged.Conditions[:0]
		for _, c := range merged.Conditions {
			if meta.FindStatusCondition(p.Conditions, c.Type) != nil {
				keep = append(keep, c)
			}
		}
		merged.Conditions = keep
		out = append(out, merged)
	}
	return out, !apiequality.Semantic.DeepEqual(normalize(out), normalize(have))
}

func normalize(p []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	if len(p) == 0 {
		return nil
	}
	return p
}

func parentKey(r gatewayv1.ParentReference) string {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	var port string
	if r.Port != nil {
		port = fmt.Sprint(*r.Port)
	}
	return fmt.Sprintf("%s/%s/%s/%s/%s/%s", s((*string)(r.Group)), s((*string)(r.Kind)), s((*string)(r.Namespace)), r.Name, s((*string)(r.SectionName)), port)
}
