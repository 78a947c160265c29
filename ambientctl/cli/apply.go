package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// fieldManager is the server-side apply field manager of every write
// ambientctl makes.
const fieldManager = "ambientctl"

// resource is where the API server serves a kind.
type resource struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}

// resources maps every kind ambientctl writes to its resource. A static
// table rather than discovery: the chart's kinds are known, and the
// GatewayClass must be mapped before its CRD is established.
var resources = map[schema.GroupKind]resource{
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 {schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, false},
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        {schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}, false},
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: {schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"}, false},
	{Group: "", Kind: "Namespace"}:                                                    {schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, false},
	{Group: "", Kind: "ServiceAccount"}:                                               {schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, true},
	{Group: "", Kind: "Service"}:                                                      {schema.GroupVersionResource{Version: "v1", Resource: "services"}, true},
	{Group: "", Kind: "ConfigMap"}:                                                    {schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, true},
	{Group: "", Kind: "Secret"}:                                                       {schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, true},
	{Group: "", Kind: "Pod"}:                                                          {schema.GroupVersionResource{Version: "v1", Resource: "pods"}, true},
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         {schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, false},
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  {schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, false},
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}:                                {schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, true},
	{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:                         {schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}, true},
	{Group: "apps", Kind: "Deployment"}:                                               {schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, true},
	{Group: "apps", Kind: "DaemonSet"}:                                                {schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, true},
	{Group: "policy", Kind: "PodDisruptionBudget"}:                                    {schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}, true},
	{Group: "gateway.networking.k8s.io", Kind: "GatewayClass"}:                        {schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}, false},
	{Group: "gateway.networking.k8s.io", Kind: "Gateway"}:                             {schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}, true},
}

// Resources read by name elsewhere.
var (
	gvrCRD          = resources[schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}].gvr
	gvrNamespace    = resources[schema.GroupKind{Kind: "Namespace"}].gvr
	gvrPod          = resources[schema.GroupKind{Kind: "Pod"}].gvr
	gvrConfigMap    = resources[schema.GroupKind{Kind: "ConfigMap"}].gvr
	gvrDeployment   = resources[schema.GroupKind{Group: "apps", Kind: "Deployment"}].gvr
	gvrDaemonSet    = resources[schema.GroupKind{Group: "apps", Kind: "DaemonSet"}].gvr
	gvrGateway      = resources[schema.GroupKind{Group: "gateway.networking.k8s.io", Kind: "Gateway"}].gvr
	gvrGatewayClass = resources[schema.GroupKind{Group: "gateway.networking.k8s.io", Kind: "GatewayClass"}].gvr
)

func resourceFor(obj *unstructured.Unstructured) (resource, error) {
	gvk := obj.GroupVersionKind()
	r, ok := resources[gvk.GroupKind()]
	if !ok {
		return resource{}, fmt.Errorf("%s: ambientctl does not know where kind %s is served", ref(obj), gvk.Kind)
	}
	r.gvr.Version = gvk.Version
	return r, nil
}

// client returns the dynamic client of obj's resource (and namespace).
func client(dc dynamic.Interface, obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	r, err := resourceFor(obj)
	if err != nil {
		return nil, err
	}
	if r.namespaced {
		return dc.Resource(r.gvr).Namespace(obj.GetNamespace()), nil
	}
	return dc.Resource(r.gvr), nil
}

// ref names obj as kubectl does: "deployment/istiod".
func ref(obj *unstructured.Unstructured) string {
	return strings.ToLower(obj.GetKind()) + "/" + obj.GetName()
}

// apply server-side applies obj (field manager ambientctl, taking over
// fields others own, as kubectl apply --server-side --force-conflicts) and
// says what happened: created, configured or unchanged.
func apply(ctx context.Context, dc dynamic.Interface, obj *unstructured.Unstructured) (string, error) {
	ri, err := client(dc, obj)
	if err != nil {
		return "", err
	}
	before, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	existed := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%s: %w", ref(obj), err)
	}
	after, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return "", fmt.Errorf("apply %s: %w", ref(obj), err)
	}
	switch {
	case !existed:
		return "created", nil
	case before.GetResourceVersion() == after.GetResourceVersion():
		return "unchanged", nil
	default:
		return "configured", nil
	}
}

// permission is one verb on one resource, cluster-wide or in a namespace.
type permission struct {
	Verb, Group, Resource, Namespace string
}

func (p permission) String() string {
	res := p.Resource
	if p.Group != "" {
		res += "." + p.Group
	}
	if p.Namespace == "" {
		return fmt.Sprintf("%s %s (cluster-wide)", p.Verb, res)
	}
	return fmt.Sprintf("%s %s in namespace %s", p.Verb, res, p.Namespace)
}

// permissionsFor lists verbs on the resource of each object, without
// duplicates, in the objects' order.
func permissionsFor(objs []*unstructured.Unstructured, verbs ...string) ([]permission, error) {
	var out []permission
	for _, o := range objs {
		r, err := resourceFor(o)
		if err != nil {
			return nil, err
		}
		ns := ""
		if r.namespaced {
			ns = o.GetNamespace()
		}
		for _, v := range verbs {
			p := permission{Verb: v, Group: r.gvr.Group, Resource: r.gvr.Resource, Namespace: ns}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// missingPermissions asks the API server (SelfSubjectAccessReview) which of
// perms the caller lacks.
func missingPermissions(ctx context.Context, kc kubernetes.Interface, perms []permission) ([]permission, error) {
	var missing []permission
	for _, p := range perms {
		r, err := kc.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: p.Verb, Group: p.Group, Resource: p.Resource, Namespace: p.Namespace,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("ask the API server for permissions (SelfSubjectAccessReview): %w", err)
		}
		if !r.Status.Allowed {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// permissionError lists permissions the caller lacks for what.
type permissionError struct {
	what    string
	missing []permission
}

func (e permissionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "you may not %s: missing permission", e.what)
	if len(e.missing) > 1 {
		b.WriteString("s")
	}
	b.WriteString(":")
	for _, p := range e.missing {
		b.WriteString("\n  " + p.String())
	}
	b.WriteString("\nask a cluster administrator for them, or use a kubeconfig context that has them (--context)")
	return b.String()
}

// waitFor calls probe every env.Poll until it reports done, printing its
// status on a line of its own each time it changes. After timeout it
// returns an error naming what and the last status.
func (e *Env) waitFor(ctx context.Context, timeout time.Duration, what string, probe func(context.Context) (bool, string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		done, status, err := probe(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			status = describe(err)
		}
		if done {
			return status, nil
		}
		if status != last {
			fmt.Fprintf(e.Stdout, "  %s: %s\n", what, status)
			last = status
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.Poll):
			continue
		}
		break
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return "", ctx.Err()
	}
	return "", fmt.Errorf("%s: not ready after %s (%s)", what, timeout, last)
}
