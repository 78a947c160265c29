package waypoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

var applyOptions = metav1.ApplyOptions{FieldManager: FieldManager, Force: true}

// reconcile brings one key to its desired state: the GatewayClass, or a
// Gateway — get, compute, apply, then write status if it changed.
func (c *Controller) reconcile(ctx context.Context, key types.NamespacedName) error {
	if key == classKey {
		wrote, err := ensureGatewayClass(ctx, c.cfg.Gateway, c.cfg.Now)
		for _, kind := range wrote {
			c.metrics.writes.WithLabelValues(kind).Inc()
			c.log.Info("wrote", "kind", kind, "name", ClassName)
		}
		return err
	}

	gw, err := c.gateways.Gateways(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		c.recent.forget(key.Namespace, key.Name)
		return nil // deleted: its objects go with it (owner references)
	}
	if err != nil {
		return fmt.Errorf("get Gateway %s: %w", key, err)
	}
	if f, ok := c.recent.fresher("Gateway", gw.Namespace, gw.Name, true, gw.ResourceVersion); ok {
		gw = f.(*gatewayv1.Gateway) // our status write, not yet in the cache
	}
	if gw.Spec.GatewayClassName != ClassName || gw.DeletionTimestamp != nil || !c.classIsOurs() {
		return nil
	}
	log := c.log.With("gateway", key.String())

	v := check(gw)
	var obs observation
	if v.accepted {
		obs = c.ensureObjects(ctx, log, gw, v)
	}
	st := gatewayStatus(gw, v, obs, c.cfg.DomainSuffix, c.cfg.Now())
	var statusErr error
	if !equality.Semantic.DeepEqual(st, gw.Status) {
		upd := gw.DeepCopy()
		upd.Status = st
		if res, err := c.cfg.Gateway.GatewayV1().Gateways(gw.Namespace).UpdateStatus(ctx, upd,
			metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			statusErr = fmt.Errorf("update status of Gateway %s: %w", key, err)
		} else {
			c.recent.remember("Gateway", gw.Namespace, gw.Name, gw.ResourceVersion, res)
			c.metrics.writes.WithLabelValues(writeGatewayStatus).Inc()
			log.Info("status updated", "accepted", conditionSummary(st.Conditions, gatewayv1.GatewayConditionAccepted),
				"programmed", conditionSummary(st.Conditions, gatewayv1.GatewayConditionProgrammed))
			if c := meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayConditionProgrammed)); c != nil && c.Status != metav1.ConditionTrue {
				log.Info("waypoint not programmed", "reason", c.Reason, "message", c.Message)
			}
		}
	}
	return errors.Join(obs.applyErr, statusErr)
}

func conditionSummary(conds []metav1.Condition, typ gatewayv1.GatewayConditionType) string {
	for _, c := range conds {
		if c.Type == string(typ) {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return ""
}

// classIsOurs: the GatewayClass istio-waypoint has our controllerName, or
// does not exist (yet): like Istio, the built-in class name alone is enough.
func (c *Controller) classIsOurs() bool {
	gc, err := c.classes.Get(ClassName)
	if apierrors.IsNotFound(err) {
		return true
	}
	return err == nil && gc.Spec.ControllerName == ControllerName
}

// ensureObjects applies the ServiceAccount, Service and Deployment of an
// accepted Gateway. If any of the three exists without an owner reference
// to this Gateway, nothing is written and the conflict is reported. An
// object is written only when it lacks something of what we want.
func (c *Controller) ensureObjects(ctx context.Context, log *slog.Logger, gw *gatewayv1.Gateway, v verdict) observation {
	var obs observation
	want, err := render(gw, *v.mesh, c.cfg)
	if err != nil {
		obs.applyErr = err
		return obs
	}
	ns, name := gw.Namespace, gw.Name
	kube := c.cfg.Kube

	sa, saFound, err := current(ctx, &c.recent, writeServiceAccount, ns, name,
		func() (*corev1.ServiceAccount, error) { return c.serviceAccounts.ServiceAccounts(ns).Get(name) },
		func(ctx context.Context) (*corev1.ServiceAccount, error) {
			return kube.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		})
	if err != nil {
		obs.applyErr = fmt.Errorf("get ServiceAccount %s/%s: %w", ns, name, err)
		return obs
	}
	svc, svcFound, err := current(ctx, &c.recent, writeService, ns, name,
		func() (*corev1.Service, error) { return c.services.Services(ns).Get(name) },
		func(ctx context.Context) (*corev1.Service, error) {
			return kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		})
	if err != nil {
		obs.applyErr = fmt.Errorf("get Service %s/%s: %w", ns, name, err)
		return obs
	}
	dep, depFound, err := current(ctx, &c.recent, writeDeployment, ns, name,
		func() (*appsv1.Deployment, error) { return c.deployments.Deployments(ns).Get(name) },
		func(ctx context.Context) (*appsv1.Deployment, error) {
			return kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		})
	if err != nil {
		obs.applyErr = fmt.Errorf("get Deployment %s/%s: %w", ns, name, err)
		return obs
	}

	var foreign []string
	if saFound && !ownedBy(sa, gw.UID) {
		foreign = append(foreign, "ServiceAccount")
	}
	if svcFound && !ownedBy(svc, gw.UID) {
		foreign = append(foreign, "Service")
	}
	if depFound && !ownedBy(dep, gw.UID) {
		foreign = append(foreign, "Deployment")
	}
	if len(foreign) > 0 {
		obs.conflict = conflictMessage(gw, foreign)
		log.Debug("not deploying: objects in the way", "objects", strings.Join(foreign, ","))
		return obs
	}

	written := func(kind, before string, obj any) {
		c.recent.remember(kind, ns, name, before, obj)
		c.metrics.writes.WithLabelValues(kind).Inc()
		log.Info("applied", "kind", kind, "name", ns+"/"+name, "created", before == "")
	}
	fail := func(kind string, err error) observation {
		obs.applyErr = fmt.Errorf("apply %s %s/%s: %w", kind, ns, name, err)
		return obs
	}

	if need, err := needsApply(log, writeServiceAccount, sa, saFound, want.serviceAccount); err != nil {
		return fail(writeServiceAccount, err)
	} else if need {
		if saFound {
			want.serviceAccount.WithResourceVersion(sa.ResourceVersion)
		}
		res, err := kube.CoreV1().ServiceAccounts(ns).Apply(ctx, want.serviceAccount, applyOptions)
		if err != nil {
			return fail(writeServiceAccount, err)
		}
		written(writeServiceAccount, rv(sa, saFound), res)
	}

	obs.service = svc
	if need, err := needsApply(log, writeService, svc, svcFound, want.service); err != nil {
		return fail(writeService, err)
	} else if need {
		if svcFound {
			want.service.WithResourceVersion(svc.ResourceVersion)
		}
		if obs.service, err = kube.CoreV1().Services(ns).Apply(ctx, want.service, applyOptions); err != nil {
			return fail(writeService, err)
		}
		written(writeService, rv(svc, svcFound), obs.service)
	}

	obs.deployment = dep
	if need, err := needsApply(log, writeDeployment, dep, depFound, want.deployment); err != nil {
		return fail(writeDeployment, err)
	} else if need {
		if depFound {
			want.deployment.WithResourceVersion(dep.ResourceVersion)
		}
		if obs.deployment, err = kube.AppsV1().Deployments(ns).Apply(ctx, want.deployment, applyOptions); err != nil {
			return fail(writeDeployment, err)
		}
		written(writeDeployment, rv(dep, depFound), obs.deployment)
	}
	return obs
}

// current finds an object: in the informer cache, unless we wrote a newer
// version the cache has not seen yet; or, when neither has it, from the API
// server — a cache that lags must not make us take over an object someone
// else just created.
func current[T metav1.Object](ctx context.Context, rec *recent, kind, ns, name string,
	cached func() (T, error), live func(context.Context) (T, error)) (T, bool, error) {
	obj, err := cached()
	if err != nil && !apierrors.IsNotFound(err) {
		return obj, false, err
	}
	found := err == nil
	var version string
	if found {
		version = obj.GetResourceVersion()
	}
	if f, ok := rec.fresher(kind, ns, name, found, version); ok {
		return f.(T), true, nil
	}
	if found {
		return obj, true, nil
	}
	obj, err = live(ctx)
	if apierrors.IsNotFound(err) {
		var zero T
		return zero, false, nil
	}
	return obj, err == nil, err
}

// rv is the resourceVersion of obj, "" if not found.
func rv(obj metav1.Object, found bool) string {
	if !found {
		return ""
	}
	return obj.GetResourceVersion()
}

// needsApply: the object is missing, or lacks something of want (logged
// with the path of the first difference).
func needsApply(log *slog.Logger, kind string, have any, found bool, want any) (bool, error) {
	if !found {
		return true, nil
	}
	path, err := uncovered(have, want)
	if path != "" {
		log.Debug("object differs from what is wanted", "kind", kind, "at", path)
	}
	return path != "", err
}

// ownedBy: obj has an owner reference to the object with this UID (ours
// have controller=true; Istio's, which we adopt, have no controller flag).
func ownedBy(obj metav1.Object, uid types.UID) bool {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.UID == uid {
			return true
		}
	}
	return false
}

// conflictMessage names the objects in the way, e.g. "Service ns/name
// already exists but is not owned by this Gateway ...".
func conflictMessage(gw *gatewayv1.Gateway, kinds []string) string {
	exists, is, they, them := "exists", "is", "it is", "it"
	if len(kinds) > 1 {
		exists, is, they, them = "exist", "are", "they are", "them"
	}
	what := strings.Join(kinds, " and ")
	if len(kinds) > 2 {
		what = strings.Join(kinds[:len(kinds)-1], ", ") + " and " + kinds[len(kinds)-1]
	}
	return fmt.Sprintf("%s %s/%s already %s but %s not owned by this Gateway (no ownerReference to it); "+
		"the waypoint is not deployed and %s left untouched. Delete %s or give the Gateway another name",
		what, gw.Namespace, gw.Name, exists, is, they, them)
}
