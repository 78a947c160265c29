package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/ambientlite/mesh/install"
)

// Labels and annotations of enrolment (Istio's).
const (
	labelDataplaneMode      = "istio.io/dataplane-mode"
	labelUseWaypoint        = "istio.io/use-waypoint"
	labelWaypointFor        = "istio.io/waypoint-for"
	annotationRedirection   = "ambient.istio.io/redirection"
	dataplaneModeAmbient    = "ambient"
	waypointGatewayClass    = "istio-waypoint"
	rootCertConfigMap       = "istio-ca-root-cert"
	labelManagedBy          = "app.kubernetes.io/managed-by"
	rootCertManagedByIstiod = "istiod-lite"
)

type uninstallOptions struct {
	values   valuesFlags
	keepCRDs bool
	purge    bool
	dryRun   bool
	timeout  time.Duration
}

func newUninstall(env *Env) *cobra.Command {
	var o uninstallOptions
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Ambient Lite and give every pod its plain networking back",
		Long: `uninstall takes every workload out of the mesh first (removes istio.io/dataplane-mode=ambient
from namespaces and pods and istio.io/use-waypoint from namespaces, then waits until ztunnel
has released every captured pod), deletes the waypoints (Gateways of class istio-waypoint),
then everything install applied, the istio-ca-root-cert ConfigMaps istiod-lite wrote, and
the CRDs (unless --keep-crds; a CRD that another field manager also applied is kept unless
--purge).`,
		Example: `  ambientctl uninstall
  ambientctl uninstall --keep-crds
  ambientctl uninstall --dry-run`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runUninstall(cmd.Context(), env, o) },
	}
	o.values.add(c)
	c.Flags().BoolVar(&o.keepCRDs, "keep-crds", false, "keep the CRDs (and so every HTTPRoute, Gateway and policy stored in them)")
	c.Flags().BoolVar(&o.purge, "purge", false, "delete the CRDs even when another field manager (kubectl, another installer) applied them too")
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be changed and removed, change nothing")
	c.Flags().DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for pods to be released and objects to go")
	return c
}

func runUninstall(ctx context.Context, env *Env, o uninstallOptions) error {
	vals, err := o.values.values()
	if err != nil {
		return err
	}
	r, err := install.RenderChart(vals)
	if err != nil {
		return err
	}
	c, err := env.clients(ctx)
	if err != nil {
		return err
	}
	w := env.Stdout
	verb := func(s string) string {
		if o.dryRun {
			return "would be " + s
		}
		return s
	}
	if o.dryRun {
		fmt.Fprintf(w, "Uninstalling Ambient Lite from %s (dry run: nothing is changed)\n", c.Server)
	} else {
		fmt.Fprintf(w, "Uninstalling Ambient Lite from %s\n", c.Server)
		perms, err := permissionsFor(r.Objects(), "delete")
		if err != nil {
			return err
		}
		perms = append(perms,
			permission{Verb: "patch", Resource: "namespaces"}, permission{Verb: "patch", Resource: "pods"},
			permission{Verb: "delete", Group: "gateway.networking.k8s.io", Resource: "gateways"},
			permission{Verb: "delete", Resource: "configmaps"})
		missing, err := missingPermissions(ctx, c.Kube, perms)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return permissionError{what: "uninstall Ambient Lite", missing: missing}
		}
	}

	// 1. Out of the mesh: without the labels the node agent removes each
	// pod's capture rules, so the pods keep working once ztunnel is gone.
	fmt.Fprintln(w, "Workloads out of the mesh")
	changed := 0
	for _, u := range []struct {
		kind, label, selector string
		namespaced            bool
	}{
		{"namespace", labelDataplaneMode, labelDataplaneMode + "=" + dataplaneModeAmbient, false},
		{"namespace", labelUseWaypoint, labelUseWaypoint, false},
		{"pod", labelDataplaneMode, labelDataplaneMode + "=" + dataplaneModeAmbient, true},
	} {
		gvr := gvrNamespace
		if u.namespaced {
			gvr = gvrPod
		}
		list, err := c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: u.selector})
		if err != nil {
			return fmt.Errorf("list %ss labelled %s: %w", u.kind, u.selector, err)
		}
		for _, item := range sortedItems(list.Items) {
			name := item.GetName()
			if u.namespaced {
				name = item.GetNamespace() + "/" + name
			}
			fmt.Fprintf(w, "  %s/%s: label %s=%s %s\n", u.kind, name, u.label, item.GetLabels()[u.label], verb("removed"))
			changed++
			if o.dryRun {
				continue
			}
			if err := removeLabel(ctx, c.Dynamic, gvr, &item, u.label); err != nil {
				return err
			}
		}
	}
	if changed == 0 {
		fmt.Fprintln(w, "  no namespace or pod is labelled into the mesh")
	}
	if !o.dryRun {
		if err := waitReleased(ctx, env, c.Dynamic, o.timeout); err != nil {
			return err
		}
	}

	// 2. Waypoints: their Deployments, Services and ServiceAccounts go with
	// them (owner references).
	fmt.Fprintln(w, "Waypoints")
	gws, err := c.Dynamic.Resource(gvrGateway).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("list Gateways: %w", err)
	}
	n := 0
	if gws != nil {
		for _, gw := range sortedItems(gws.Items) {
			if class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName"); class != waypointGatewayClass {
				continue
			}
			n++
			fmt.Fprintf(w, "  gateway/%s in %s %s\n", gw.GetName(), gw.GetNamespace(), verb("deleted"))
			if !o.dryRun {
				if err := deleteObject(ctx, c.Dynamic, &gw, metav1.DeletePropagationBackground); err != nil {
					return err
				}
			}
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "  none")
	}

	// 3. What install applied, in reverse order. The DaemonSet goes in the
	// foreground: it keeps a deletionTimestamp while its pods stop, which
	// tells them the mesh is leaving the node (not an upgrade).
	fmt.Fprintln(w, "Control plane and data plane")
	tmpl := slices.Clone(r.Templates)
	slices.Reverse(tmpl)
	for _, d := range tmpl {
		policy := metav1.DeletePropagationBackground
		if d.Object.GetKind() == "DaemonSet" {
			policy = metav1.DeletePropagationForeground
		}
		if err := deleteReported(ctx, env, c.Dynamic, d.Object, policy, o.dryRun); err != nil {
			return err
		}
		if d.Object.GetKind() == "DaemonSet" && !o.dryRun {
			// ztunnel's node agent asks, as it stops, whether its
			// DaemonSet is going (then it removes the CNI plugin): its
			// RBAC must outlive its pods.
			if _, err := env.waitFor(ctx, o.timeout, "ztunnel stopping", func(ctx context.Context) (bool, string, error) {
				pods, err := c.Dynamic.Resource(gvrPod).Namespace(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"})
				if err != nil {
					return false, "", err
				}
				return len(pods.Items) == 0, fmt.Sprintf("%d ztunnel pods still running", len(pods.Items)), nil
			}); err != nil {
				return err
			}
		}
	}
	if !o.dryRun {
		// istiod-lite would write the root ConfigMaps again while it runs.
		if _, err := env.waitFor(ctx, o.timeout, "istiod stopping", func(ctx context.Context) (bool, string, error) {
			pods, err := c.Dynamic.Resource(gvrPod).Namespace(install.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
			if err != nil {
				return false, "", err
			}
			return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items)), nil
		}); err != nil {
			return err
		}
	}
	cms, err := c.Dynamic.Resource(gvrConfigMap).List(ctx, metav1.ListOptions{LabelSelector: labelManagedBy + "=" + rootCertManagedByIstiod})
	if err != nil {
		return fmt.Errorf("list the root certificate ConfigMaps: %w", err)
	}
	roots := 0
	for _, cm := range sortedItems(cms.Items) {
		if cm.GetName() != rootCertConfigMap || cm.GetNamespace() == install.Namespace {
			continue
		}
		roots++
		if !o.dryRun {
			if err := deleteObject(ctx, c.Dynamic, &cm, metav1.DeletePropagationBackground); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(w, "  configmap/%s in %d namespaces %s\n", rootCertConfigMap, roots, verb("deleted"))

	// 4. The CRDs, unless kept or shared.
	fmt.Fprintln(w, "CRDs")
	if o.keepCRDs {
		fmt.Fprintln(w, "  kept (--keep-crds)")
	} else {
		crds := slices.Clone(r.CRDs)
		slices.Reverse(crds)
		for _, d := range crds {
			if err := deleteCRD(ctx, env, c.Dynamic, d.Object, o.purge, o.dryRun); err != nil {
				return err
			}
		}
	}
	if o.dryRun {
		return nil
	}
	if _, err := env.waitFor(ctx, o.timeout, "namespace "+install.Namespace+" deleted", func(ctx context.Context) (bool, string, error) {
		_, err := c.Dynamic.Resource(gvrNamespace).Get(ctx, install.Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "gone", nil
		}
		return false, "terminating", err
	}); err != nil {
		return err
	}
	fmt.Fprintln(w, "✔ Ambient Lite removed; every pod has its plain networking back")
	return nil
}

// waitReleased waits until no pod carries the redirection annotation: the
// node agent has taken each one's capture rules out. If ztunnel is not
// running, nothing will release them: say which pods are left.
func waitReleased(ctx context.Context, env *Env, dc dynamic.Interface, timeout time.Duration) error {
	captured := func(ctx context.Context) ([]string, error) {
		pods, err := dc.Resource(gvrPod).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, p := range sortedItems(pods.Items) {
			if p.GetAnnotations()[annotationRedirection] == "enabled" {
				out = append(out, p.GetNamespace()+"/"+p.GetName())
			}
		}
		return out, nil
	}
	_, err := env.waitFor(ctx, timeout, "pods released by ztunnel", func(ctx context.Context) (bool, string, error) {
		left, err := captured(ctx)
		return len(left) == 0, fmt.Sprintf("%d still captured", len(left)), err
	})
	if err == nil {
		fmt.Fprintln(env.Stdout, "✔ no pod is captured any more")
		return nil
	}
	left, lerr := captured(ctx)
	if lerr != nil {
		return err
	}
	return fmt.Errorf("%d pods are still captured (%s): ztunnel on their node did not release them; "+
		"check it runs (kubectl -n %s get pods -l app=ztunnel -o wide) and run uninstall again, "+
		"or delete those pods: once ztunnel is gone their traffic would fail", len(left), strings.Join(left, ", "), install.Namespace)
}

// removeLabel removes one label from obj (JSON merge patch).
func removeLabel(ctx context.Context, dc dynamic.Interface, gvr schema.GroupVersionResource, obj *unstructured.Unstructured, label string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{label: nil}}})
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = dc.Resource(gvr)
	if obj.GetNamespace() != "" {
		ri = dc.Resource(gvr).Namespace(obj.GetNamespace())
	}
	if _, err := ri.Patch(ctx, obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove label %s from %s: %w", label, ref(obj), err)
	}
	return nil
}

// deleteReported deletes obj and prints the outcome.
func deleteReported(ctx context.Context, env *Env, dc dynamic.Interface, obj *unstructured.Unstructured, policy metav1.DeletionPropagation, dryRun bool) error {
	ri, err := client(dc, obj)
	if err != nil {
		return err
	}
	_, err = ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		fmt.Fprintf(env.Stdout, "  %s not found\n", ref(obj))
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", ref(obj), err)
	case dryRun:
		fmt.Fprintf(env.Stdout, "  %s would be deleted\n", ref(obj))
		return nil
	}
	if err := deleteObject(ctx, dc, obj, policy); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "  %s deleted\n", ref(obj))
	return nil
}

func deleteObject(ctx context.Context, dc dynamic.Interface, obj *unstructured.Unstructured, policy metav1.DeletionPropagation) error {
	ri, err := client(dc, obj)
	if err != nil {
		return err
	}
	err = ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", ref(obj), err)
	}
	return nil
}

// deleteCRD deletes a CRD (or the Gateway API's admission policy) unless a
// field manager other than ambientctl applied it too: then someone else
// installed it, and it stays (unless purge).
func deleteCRD(ctx context.Context, env *Env, dc dynamic.Interface, obj *unstructured.Unstructured, purge, dryRun bool) error {
	ri, err := client(dc, obj)
	if err != nil {
		return err
	}
	cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		fmt.Fprintf(env.Stdout, "  %s not found\n", ref(obj))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", ref(obj), err)
	}
	if others := otherManagers(cur); len(others) > 0 && !purge {
		fmt.Fprintf(env.Stdout, "  %s kept: also applied by %s (--purge deletes it)\n", ref(obj), strings.Join(others, ", "))
		return nil
	}
	return deleteReported(ctx, env, dc, obj, metav1.DeletePropagationBackground, dryRun)
}

// otherManagers lists the field managers of obj's spec and metadata other
// than ambientctl (status writers such as the API server do not count).
func otherManagers(obj *unstructured.Unstructured) []string {
	var out []string
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == fieldManager || mf.Subresource != "" || slices.Contains(out, mf.Manager) {
			continue
		}
		out = append(out, mf.Manager)
	}
	slices.Sort(out)
	return out
}

// sortedItems sorts objects by namespace and name.
func sortedItems(items []unstructured.Unstructured) []unstructured.Unstructured {
	slices.SortFunc(items, func(a, b unstructured.Unstructured) int {
		if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return items
}
