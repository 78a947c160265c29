package cli

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/spf13/cobra"

	"github.com/ambientlite/mesh/install"
)

// valuesFlags are helm's ways of giving chart values: files, then each
// --set, in the order given.
type valuesFlags struct {
	files, sets, setStrings []string
}

func (v *valuesFlags) add(c *cobra.Command) {
	c.Flags().StringArrayVarP(&v.files, "values", "f", nil, "a values file (YAML), as helm -f; repeatable")
	c.Flags().StringArrayVar(&v.sets, "set", nil, "set a chart value, key=value[,key=value] as helm --set (e.g. cni.binDir=/usr/lib/cni); repeatable")
	c.Flags().StringArrayVar(&v.setStrings, "set-string", nil, "as --set, keeping the value a string; repeatable")
}

func (v *valuesFlags) values() (install.Values, error) {
	vals := install.Values{}
	for _, f := range v.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := vals.MergeYAML(b); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	for _, s := range v.sets {
		if err := vals.Set(s); err != nil {
			return nil, err
		}
	}
	for _, s := range v.setStrings {
		if err := vals.SetString(s); err != nil {
			return nil, err
		}
	}
	return vals, nil
}

type installOptions struct {
	values  valuesFlags
	dryRun  bool
	timeout time.Duration
}

func newInstall(env *Env) *cobra.Command {
	var o installOptions
	c := &cobra.Command{
		Use:   "install",
		Short: "Install Ambient Lite: CRDs, istiod-lite, ztunnel and the waypoint GatewayClass",
		Long: `install server-side applies the ambient-lite chart (embedded in ambientctl) to the
cluster, then waits until the CRDs are established, istiod is ready, a ztunnel is ready on
every node and the GatewayClass istio-waypoint is accepted. Running it again applies only
what changed. Values are the chart's (see install/README.md).`,
		Example: `  ambientctl install
  ambientctl install --set cni.binDir=/usr/lib/cni --set cni.confDir=/var/lib/ambient-lite/cluster/cni
  ambientctl install --set global.hub=registry.example.com/mesh,global.tag=v0.2.0
  ambientctl install --dry-run > ambient-lite.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runInstall(cmd.Context(), env, o) },
	}
	o.values.add(c)
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the manifests instead of applying them")
	c.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for each part to be ready")
	return c
}

func runInstall(ctx context.Context, env *Env, o installOptions) error {
	vals, err := o.values.values()
	if err != nil {
		return err
	}
	r, err := install.RenderChart(vals)
	if err != nil {
		return err
	}
	if o.dryRun {
		_, err := env.Stdout.Write(install.Manifest(r.Docs()))
		return err
	}
	c, err := env.clients(ctx)
	if err != nil {
		return err
	}
	start := env.Now()
	w := env.Stdout
	fmt.Fprintf(w, "Installing Ambient Lite %s into %s (namespace %s)\n", imageTag(r), c.Server, install.Namespace)

	perms, err := permissionsFor(r.Objects(), "create", "patch")
	if err != nil {
		return err
	}
	missing, err := missingPermissions(ctx, c.Kube, perms)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return permissionError{what: "install Ambient Lite", missing: missing}
	}

	fmt.Fprintln(w, "CRDs (Gateway API experimental channel, security.istio.io)")
	if err := applyAll(ctx, env, c.Dynamic, r.CRDs); err != nil {
		return err
	}
	var crdNames []string
	for _, d := range r.CRDs {
		if d.Object.GetKind() == "CustomResourceDefinition" {
			crdNames = append(crdNames, d.Object.GetName())
		}
	}
	status, err := env.waitFor(ctx, o.timeout, "CRDs established", func(ctx context.Context) (bool, string, error) {
		n, err := establishedCRDs(ctx, c.Dynamic, crdNames)
		return n == len(crdNames), fmt.Sprintf("%d/%d", n, len(crdNames)), err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "✔ CRDs established: %s\n", status)

	fmt.Fprintln(w, "Control plane and data plane")
	if err := applyAll(ctx, env, c.Dynamic, r.Templates); err != nil {
		return err
	}
	if err := prune(ctx, env, c.Dynamic, r); err != nil {
		return err
	}
	for _, wt := range readiness(r) {
		status, err := env.waitFor(ctx, o.timeout, wt.what, func(ctx context.Context) (bool, string, error) {
			return wt.probe(ctx, c.Dynamic)
		})
		if err != nil {
			return fmt.Errorf("%w\n%s", err, wt.hint)
		}
		fmt.Fprintf(w, "✔ %s: %s\n", wt.what, status)
	}
	fmt.Fprintf(w, "✔ Ambient Lite %s installed in %s\n\n%s", imageTag(r), env.Now().Sub(start).Round(time.Second), r.Notes)
	if !strings.HasSuffix(r.Notes, "\n") {
		fmt.Fprintln(w)
	}
	return nil
}

// applyAll applies docs in order, one line per object.
func applyAll(ctx context.Context, env *Env, dc dynamic.Interface, docs []install.Doc) error {
	for _, d := range docs {
		what, err := apply(ctx, dc, d.Object)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "  %s %s\n", ref(d.Object), what)
	}
	return nil
}

// prunableKinds are the kinds install deletes when the chart no longer
// renders an object it applied before (PodDisruptionBudget with one
// replica). Never a Namespace or a CRD: those hold what users made.
var prunableKinds = []schema.GroupKind{
	{Kind: "ServiceAccount"}, {Kind: "ConfigMap"}, {Kind: "Secret"}, {Kind: "Service"},
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}, {Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"},
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}, {Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"},
	{Group: "apps", Kind: "Deployment"}, {Group: "apps", Kind: "DaemonSet"},
	{Group: "policy", Kind: "PodDisruptionBudget"}, {Group: "gateway.networking.k8s.io", Kind: "GatewayClass"},
}

// prune deletes the objects of the chart's kinds, labelled as the chart
// labels them and applied by ambientctl, that r no longer holds.
func prune(ctx context.Context, env *Env, dc dynamic.Interface, r *install.Rendered) error {
	keep := map[string]bool{}
	for _, d := range r.Templates {
		keep[d.Object.GroupVersionKind().GroupKind().String()+"/"+d.Object.GetNamespace()+"/"+d.Object.GetName()] = true
	}
	for _, gk := range prunableKinds {
		res := resources[gk]
		var ri dynamic.ResourceInterface = dc.Resource(res.gvr)
		if res.namespaced {
			ri = dc.Resource(res.gvr).Namespace(install.Namespace)
		}
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=ambient-lite"})
		if err != nil {
			return fmt.Errorf("list %s to prune: %w", res.gvr.Resource, err)
		}
		for _, item := range sortedItems(list.Items) {
			if keep[gk.String()+"/"+item.GetNamespace()+"/"+item.GetName()] || !slices.ContainsFunc(item.GetManagedFields(),
				func(m metav1.ManagedFieldsEntry) bool { return m.Manager == fieldManager }) {
				continue
			}
			item.SetGroupVersionKind(res.gvr.GroupVersion().WithKind(gk.Kind))
			if err := deleteObject(ctx, dc, &item, metav1.DeletePropagationBackground); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "  %s deleted (no longer in the chart)\n", ref(&item))
		}
	}
	return nil
}

// establishedCRDs counts the CRDs among names whose Established condition
// is True.
func establishedCRDs(ctx context.Context, dc dynamic.Interface, names []string) (int, error) {
	n := 0
	for _, name := range names {
		crd, err := dc.Resource(gvrCRD).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return n, err
		}
		if conditionTrue(crd, "Established") {
			n++
		}
	}
	return n, nil
}

// conditionTrue reports whether obj's status has condition typ with status
// "True".
func conditionTrue(obj *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			return m["status"] == "True"
		}
	}
	return false
}

// readinessWait is one thing install waits for after applying.
type readinessWait struct {
	what  string
	hint  string
	probe func(context.Context, dynamic.Interface) (bool, string, error)
}

// readiness lists what install waits for: every Deployment and DaemonSet
// the chart holds, then the GatewayClass accepted by istiod-lite.
func readiness(r *install.Rendered) []readinessWait {
	var out []readinessWait
	for _, d := range r.Templates {
		o := d.Object
		ns, name := o.GetNamespace(), o.GetName()
		switch o.GetKind() {
		case "Deployment":
			out = append(out, readinessWait{
				what: name, hint: fmt.Sprintf("see: kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, name, ns, name),
				probe: func(ctx context.Context, dc dynamic.Interface) (bool, string, error) {
					dep, err := dc.Resource(gvrDeployment).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						return false, "", err
					}
					return deploymentReady(dep)
				},
			})
		case "DaemonSet":
			out = append(out, readinessWait{
				what: name, hint: fmt.Sprintf("see: kubectl -n %s describe daemonset %s; kubectl -n %s logs daemonset/%s", ns, name, ns, name),
				probe: func(ctx context.Context, dc dynamic.Interface) (bool, string, error) {
					ds, err := dc.Resource(gvrDaemonSet).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						return false, "", err
					}
					return daemonSetReady(ds)
				},
			})
		}
	}
	for _, d := range r.Templates {
		if d.Object.GetKind() != "GatewayClass" {
			continue
		}
		name := d.Object.GetName()
		out = append(out, readinessWait{
			what: "GatewayClass " + name, hint: "istiod-lite accepts it once it leads; see: kubectl -n " + install.Namespace + " logs deployment/istiod",
			probe: func(ctx context.Context, dc dynamic.Interface) (bool, string, error) {
				gc, err := dc.Resource(gvrGatewayClass).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, "", err
				}
				if conditionTrue(gc, "Accepted") {
					return true, "accepted", nil
				}
				return false, "not accepted yet", nil
			},
		})
	}
	return out
}

// deploymentReady: the current generation rolled out and every replica
// updated and available.
func deploymentReady(dep *unstructured.Unstructured) (bool, string, error) {
	want, found, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas")
	if !found {
		want = 1
	}
	observed, _, _ := unstructured.NestedInt64(dep.Object, "status", "observedGeneration")
	updated, _, _ := unstructured.NestedInt64(dep.Object, "status", "updatedReplicas")
	available, _, _ := unstructured.NestedInt64(dep.Object, "status", "availableReplicas")
	total, _, _ := unstructured.NestedInt64(dep.Object, "status", "replicas")
	status := fmt.Sprintf("%d/%d replicas ready", min(updated, available), want)
	if total > want {
		status += fmt.Sprintf(" (%d old still running)", total-want)
	}
	done := observed >= dep.GetGeneration() && updated >= want && available >= want && total <= want
	return done, status, nil
}

// daemonSetReady: the current generation rolled out on every node it is
// scheduled to.
func daemonSetReady(ds *unstructured.Unstructured) (bool, string, error) {
	observed, _, _ := unstructured.NestedInt64(ds.Object, "status", "observedGeneration")
	desired, _, _ := unstructured.NestedInt64(ds.Object, "status", "desiredNumberScheduled")
	updated, _, _ := unstructured.NestedInt64(ds.Object, "status", "updatedNumberScheduled")
	available, _, _ := unstructured.NestedInt64(ds.Object, "status", "numberAvailable")
	status := fmt.Sprintf("%d/%d nodes ready", min(updated, available), desired)
	done := observed >= ds.GetGeneration() && observed > 0 && updated >= desired && available >= desired
	return done, status, nil
}

// imageTag is the tag the rendered chart deploys (of istiod-lite's image).
func imageTag(r *install.Rendered) string {
	for _, d := range r.Templates {
		if d.Object.GetKind() != "Deployment" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(d.Object.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			if img, ok := c.(map[string]any)["image"].(string); ok {
				return tagOf(img)
			}
		}
	}
	return "?"
}

// tagOf returns an image reference's tag, or its digest, or "latest".
func tagOf(image string) string {
	if _, d, ok := strings.Cut(image, "@"); ok {
		return d
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return "latest"
}
