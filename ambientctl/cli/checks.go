package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/ambientlite/mesh/install"
)

// What check holds the cluster to.
const (
	minKubernetesVersion = "1.30.0"
	// rootExpiryWarning: a CA root expiring within this warns.
	rootExpiryWarning = 30 * 24 * time.Hour
	rootCertKey       = "root-cert.pem"
)

// The CRDs the mesh needs, by group.
var (
	gatewayAPICRDs = []string{
		"gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
		"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io",
		"referencegrants.gateway.networking.k8s.io",
	}
	securityCRDs = []string{"authorizationpolicies.security.istio.io", "peerauthentications.security.istio.io"}
)

// checks is every check, in the order they run. Categories are runs of
// equal category names.
func checks() []check {
	ns := install.Namespace
	return []check{
		{
			category: "kubernetes-api", description: "can reach the Kubernetes API", fatal: true, pre: true, post: true,
			hint: "check the kubeconfig (--kubeconfig, --context) and that the cluster runs: kubectl cluster-info",
			run: func(ctx context.Context, s *checkState) error {
				c, err := s.env.clients(ctx)
				s.c = c
				return err
			},
		},
		{
			category: "kubernetes-version", description: "is running Kubernetes v" + minKubernetesVersion + " or newer", pre: true, post: true,
			hint: "upgrade the cluster: the Gateway API CRDs and in-pod capture need v" + minKubernetesVersion,
			run:  checkKubernetesVersion,
		},
		{
			category: "pre-install", description: "can create and patch every object install applies", pre: true,
			hint: "ask a cluster administrator for these permissions, or use a context that has them (--context)",
			run:  checkInstallPermissions,
		},
		{
			category: "pre-install", description: "Gateway API CRDs are absent or from the experimental channel", pre: true,
			hint: "install applies the experimental channel (HTTPRoute retry); remove a standard-channel install first, or keep it and expect no retries",
			run: func(ctx context.Context, s *checkState) error {
				ch, err := s.gatewayAPIChannel(ctx)
				if err != nil || ch == "" || ch == "experimental" {
					return err
				}
				return warnf("the installed Gateway API CRDs are the %s channel", ch)
			},
		},
		{
			category: "pre-install", description: "no other control plane runs in " + ns, pre: true,
			hint: "uninstall it first (istioctl uninstall --purge for Istio): two meshes cannot capture the same pods",
			run:  checkNoForeignControlPlane,
		},
		{
			category: "crds", description: "Gateway API CRDs are installed", post: true,
			hint: "ambientctl install applies them",
			run:  func(ctx context.Context, s *checkState) error { return s.crdsEstablished(ctx, gatewayAPICRDs) },
		},
		{
			category: "crds", description: "Gateway API CRDs are the experimental channel", post: true,
			hint: "without it HTTPRoute retry is not available; ambientctl install applies the experimental channel",
			run: func(ctx context.Context, s *checkState) error {
				ch, err := s.gatewayAPIChannel(ctx)
				if err != nil || ch == "experimental" || ch == "" {
					return err
				}
				return warnf("gateways.gateway.networking.k8s.io is from the %s channel", ch)
			},
		},
		{
			category: "crds", description: "security.istio.io CRDs are installed", post: true,
			hint: "ambientctl install applies them",
			run:  func(ctx context.Context, s *checkState) error { return s.crdsEstablished(ctx, securityCRDs) },
		},
		{
			category: "control-plane", description: "the control plane is installed", fatal: true, post: true,
			hint: "install it: ambientctl install",
			run: func(ctx context.Context, s *checkState) error {
				_, err := s.c.Kube.AppsV1().Deployments(ns).Get(ctx, "istiod", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("no Deployment istiod in namespace %s", ns)
				}
				return err
			},
		},
		{
			category: "control-plane", description: "istiod is ready", post: true,
			hint: fmt.Sprintf("kubectl -n %s describe deployment istiod; kubectl -n %s logs deployment/istiod", ns, ns),
			run:  checkIstiodReady,
		},
		{
			category: "control-plane", description: "GatewayClass " + waypointGatewayClass + " is accepted", post: true,
			hint: fmt.Sprintf("istiod-lite's leader accepts it: kubectl -n %s logs deployment/istiod; ambientctl install applies it", ns),
			run:  checkGatewayClass,
		},
		{
			category: "control-plane", description: "the CA root certificate is valid", post: true,
			hint: fmt.Sprintf("istiod-lite publishes its root in ConfigMap %s/%s: replace an expiring root (Secret cacerts or istio-ca-secret) and restart istiod", ns, rootCertConfigMap),
			run:  checkRootCert,
		},
		{
			category: "data-plane", description: "a ztunnel is ready on every node", post: true,
			hint: fmt.Sprintf("kubectl -n %s get pods -l %s -o wide; kubectl -n %s logs <ztunnel pod>", ns, selectorZtunnel, ns),
			run:  checkZtunnelPerNode,
		},
		{
			category: "data-plane", description: "every ztunnel is connected to istiod", post: true,
			hint: "ambientctl proxy-status shows each one; a ztunnel's log says why it cannot connect",
			run:  func(ctx context.Context, s *checkState) error { return s.proxiesConnected(ctx, "ztunnel") },
		},
		{
			category: "data-plane", description: "every waypoint is connected to istiod", post: true,
			hint: "ambientctl proxy-status; ambientctl waypoint status -A",
			run:  func(ctx context.Context, s *checkState) error { return s.proxiesConnected(ctx, "waypoint") },
		},
		{
			category: "data-plane", description: "every proxy is in sync with istiod", post: true,
			hint: "ambientctl proxy-status; a NACK is in the proxy's log and istiod's (istiod_lite_xds_nacks_total)",
			run:  checkInSync,
		},
		{
			category: "data-plane", description: "enrolled workloads hold their certificates", post: true,
			hint: "ambientctl ztunnel-config certificates --node <node>; the ztunnel's and istiod's logs name the CA's answer",
			run:  checkWorkloadCertificates,
		},
	}
}

// checkState is what the checks of one run share: the clients and what was
// read once.
type checkState struct {
	env *Env
	c   *Clients

	proxies      []proxyStatus
	proxiesErr   error
	proxiesRead  bool
	ztunnels     []corev1.Pod
	ztunnelsRead bool
	ztunnelsErr  error
}

func checkKubernetesVersion(ctx context.Context, s *checkState) error {
	info, err := s.c.Kube.Discovery().ServerVersion()
	if err != nil {
		return err
	}
	v, err := utilversion.ParseGeneric(info.GitVersion)
	if err != nil {
		return fmt.Errorf("the API server reports version %q: %w", info.GitVersion, err)
	}
	if v.LessThan(utilversion.MustParseGeneric(minKubernetesVersion)) {
		return fmt.Errorf("the cluster runs Kubernetes %s", info.GitVersion)
	}
	return nil
}

func checkInstallPermissions(ctx context.Context, s *checkState) error {
	objs, err := install.Render(nil)
	if err != nil {
		return err
	}
	perms, err := permissionsFor(objs, "create", "patch")
	if err != nil {
		return err
	}
	missing, err := missingPermissions(ctx, s.c.Kube, perms)
	if err != nil || len(missing) == 0 {
		return err
	}
	var lines []string
	for _, p := range missing {
		lines = append(lines, "missing: "+p.String())
	}
	return errors.New(strings.Join(lines, "\n"))
}

// gatewayAPIChannel is the channel annotation of the installed Gateway CRD,
// "" if it is not installed.
func (s *checkState) gatewayAPIChannel(ctx context.Context) (string, error) {
	crd, err := s.c.Dynamic.Resource(gvrCRD).Get(ctx, "gateways.gateway.networking.k8s.io", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	ch := crd.GetAnnotations()["gateway.networking.k8s.io/channel"]
	if ch == "" {
		ch = "unknown"
	}
	return ch, nil
}

func checkNoForeignControlPlane(ctx context.Context, s *checkState) error {
	ns := install.Namespace
	var foreign []string
	if d, err := s.c.Kube.AppsV1().Deployments(ns).Get(ctx, "istiod", metav1.GetOptions{}); err == nil && !ours(d.Labels) {
		foreign = append(foreign, "deployment/istiod")
	} else if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if d, err := s.c.Kube.AppsV1().DaemonSets(ns).Get(ctx, "ztunnel", metav1.GetOptions{}); err == nil && !ours(d.Labels) {
		foreign = append(foreign, "daemonset/ztunnel")
	} else if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%s in %s not installed by Ambient Lite (no label app.kubernetes.io/part-of=ambient-lite)", strings.Join(foreign, " and "), ns)
	}
	return nil
}

// ours reports whether labels mark an object of the chart.
func ours(labels map[string]string) bool {
	return labels["app.kubernetes.io/part-of"] == "ambient-lite"
}

func (s *checkState) crdsEstablished(ctx context.Context, names []string) error {
	var missing, pending []string
	for _, n := range names {
		crd, err := s.c.Dynamic.Resource(gvrCRD).Get(ctx, n, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, n)
		case err != nil:
			return err
		case !conditionTrue(crd, "Established"):
			pending = append(pending, n)
		}
	}
	var msgs []string
	if len(missing) > 0 {
		msgs = append(msgs, "missing: "+strings.Join(missing, ", "))
	}
	if len(pending) > 0 {
		msgs = append(msgs, "not established: "+strings.Join(pending, ", "))
	}
	if msgs != nil {
		return errors.New(strings.Join(msgs, "\n"))
	}
	return nil
}

func checkIstiodReady(ctx context.Context, s *checkState) error {
	d, err := s.c.Kube.AppsV1().Deployments(install.Namespace).Get(ctx, "istiod", metav1.GetOptions{})
	if err != nil {
		return err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if d.Status.ReadyReplicas < want || d.Status.UpdatedReplicas < want {
		return fmt.Errorf("%d/%d replicas ready (%d up to date)", d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas)
	}
	return nil
}

func checkGatewayClass(ctx context.Context, s *checkState) error {
	gc, err := s.c.Dynamic.Resource(gvrGatewayClass).Get(ctx, waypointGatewayClass, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("GatewayClass %s not found", waypointGatewayClass)
	}
	if err != nil {
		return err
	}
	if ctrl, _, _ := unstructured.NestedString(gc.Object, "spec", "controllerName"); ctrl != "istio.io/mesh-controller" {
		return fmt.Errorf("its controllerName is %q, not istio.io/mesh-controller: another mesh serves it", ctrl)
	}
	if !conditionTrue(gc, "Accepted") {
		return errors.New("no Accepted=True condition yet")
	}
	return nil
}

func checkRootCert(ctx context.Context, s *checkState) error {
	cm, err := s.c.Kube.CoreV1().ConfigMaps(install.Namespace).Get(ctx, rootCertConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("ConfigMap %s/%s not found: istiod-lite has not published its root yet", install.Namespace, rootCertConfigMap)
	}
	if err != nil {
		return err
	}
	rest := []byte(cm.Data[rootCertKey])
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("%s in ConfigMap %s: %w", rootCertKey, rootCertConfigMap, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("ConfigMap %s holds no certificate under %s", rootCertConfigMap, rootCertKey)
	}
	now := s.env.Now()
	var warn []string
	for _, c := range certs {
		name := c.Subject.String()
		switch {
		case now.After(c.NotAfter):
			return fmt.Errorf("root %q expired on %s: no workload can get a certificate", name, timestamp(c.NotAfter))
		case now.Before(c.NotBefore):
			return fmt.Errorf("root %q is not valid before %s (is the clock right?)", name, timestamp(c.NotBefore))
		case c.NotAfter.Sub(now) < rootExpiryWarning:
			warn = append(warn, fmt.Sprintf("root %q expires on %s, in %s", name, timestamp(c.NotAfter), humanDuration(c.NotAfter.Sub(now))))
		}
	}
	if warn != nil {
		return warning{strings.Join(warn, "\n")}
	}
	return nil
}

func (s *checkState) ztunnelPods(ctx context.Context) ([]corev1.Pod, error) {
	if !s.ztunnelsRead {
		s.ztunnels, s.ztunnelsErr = ztunnelPods(ctx, s.c)
		s.ztunnelsRead = true
	}
	return s.ztunnels, s.ztunnelsErr
}

func checkZtunnelPerNode(ctx context.Context, s *checkState) error {
	if _, err := s.c.Kube.AppsV1().DaemonSets(install.Namespace).Get(ctx, "ztunnel", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return fmt.Errorf("no DaemonSet ztunnel in %s: ambientctl install", install.Namespace)
	} else if err != nil {
		return err
	}
	nodes, err := s.c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	pods, err := s.ztunnelPods(ctx)
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for i := range pods {
		if podReady(&pods[i]) {
			ready[pods[i].Spec.NodeName] = true
		}
	}
	var without []string
	for _, n := range nodes.Items {
		if !ready[n.Name] {
			without = append(without, n.Name)
		}
	}
	slices.Sort(without)
	if len(without) > 0 {
		return fmt.Errorf("no ready ztunnel on %d of %d nodes: %s", len(without), len(nodes.Items), strings.Join(without, ", "))
	}
	return nil
}

// proxyStatuses reads the proxies once for the checks that need them.
func (s *checkState) proxyStatuses(ctx context.Context) ([]proxyStatus, error) {
	if !s.proxiesRead {
		var warnings []string
		s.proxies, warnings, s.proxiesErr = proxyStatuses(ctx, s.c)
		for _, w := range warnings {
			fmt.Fprintln(s.env.Stderr, "warning:", w)
		}
		s.proxiesRead = true
	}
	return s.proxies, s.proxiesErr
}

func (s *checkState) proxiesConnected(ctx context.Context, typ string) error {
	rows, err := s.proxyStatuses(ctx)
	if err != nil {
		return err
	}
	var down, unknown []string
	for _, r := range rows {
		if r.Type != typ {
			continue
		}
		switch r.Status {
		case syncNotConnected:
			line := r.Name
			if r.Detail != "" {
				line += ": " + r.Detail
			}
			down = append(down, line)
		case syncUnknown:
			unknown = append(unknown, r.Name)
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("not connected:\n%s", strings.Join(down, "\n"))
	}
	if len(unknown) > 0 {
		return warnf("an istiod replica could not be read; not seen connected: %s", strings.Join(unknown, ", "))
	}
	return nil
}

func checkInSync(ctx context.Context, s *checkState) error {
	rows, err := s.proxyStatuses(ctx)
	if err != nil {
		return err
	}
	var nacked, stale []string
	for _, r := range rows {
		switch r.Status {
		case syncNacked:
			nacked = append(nacked, r.Name+": "+r.Detail)
		case syncStale:
			stale = append(stale, fmt.Sprintf("%s: %s (last ACK %s ago)", r.Name, r.Detail, age(s.env.Now(), r.LastAck)))
		}
	}
	if len(nacked) > 0 {
		return fmt.Errorf("rejected config:\n%s", strings.Join(append(nacked, stale...), "\n"))
	}
	if len(stale) > 0 {
		return warning{"waiting for an ACK (a push in flight; run check again):\n" + strings.Join(stale, "\n")}
	}
	return nil
}

// checkWorkloadCertificates: every pod ztunnel captured (annotation
// ambient.istio.io/redirection=enabled) has a valid certificate of its
// identity in the ztunnel of its node.
func checkWorkloadCertificates(ctx context.Context, s *checkState) error {
	pods, err := s.c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	byNode := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Annotations[annotationRedirection] == "enabled" && p.Status.Phase == corev1.PodRunning {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
		}
	}
	if len(byNode) == 0 {
		return nil
	}
	zts, err := s.ztunnelPods(ctx)
	if err != nil {
		return err
	}
	var problems []string
	for _, node := range sortedKeys(byNode) {
		i := slices.IndexFunc(zts, func(p corev1.Pod) bool { return p.Spec.NodeName == node })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("node %s: no ztunnel for %d enrolled pods", node, len(byNode[node])))
			continue
		}
		d, err := fetchConfigDump(ctx, s.c, &zts[i])
		if err != nil {
			problems = append(problems, fmt.Sprintf("node %s: ztunnel %s: %s", node, zts[i].Name, describe(err)))
			continue
		}
		for _, p := range byNode[node] {
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			suffix := "/ns/" + p.Namespace + "/sa/" + sa
			state := "none"
			for _, c := range d.Certificates {
				if strings.HasSuffix(c.Identity, suffix) {
					state = c.State
					if c.Error != "" {
						state += ": " + c.Error
					}
					if c.State == "valid" && s.env.Now().After(c.NotAfter) {
						state = "expired"
					}
				}
			}
			if state != "valid" {
				problems = append(problems, fmt.Sprintf("%s/%s (sa %s) on %s: certificate %s", p.Namespace, p.Name, sa, node, state))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// humanDuration says d in the largest whole unit: "10 days", "5 hours",
// "42 minutes".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	default:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
