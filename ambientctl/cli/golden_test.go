package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sversion "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambientlite/mesh/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Names of the test mesh: two nodes, two istiod replicas, a ztunnel per
// node, bookinfo enrolled with a waypoint.
const (
	istiodA   = "istiod-5d6f7c8b9-a1b2c"
	istiodB   = "istiod-5d6f7c8b9-d4e5f"
	ztunnelA  = "ztunnel-x7k2p"
	ztunnelB  = "ztunnel-p9r4t"
	waypointP = "waypoint-6f7b8c9d4-k2l3m"
	hub       = "localhost/ambientlite/"
)

var (
	partOf     = map[string]string{"app.kubernetes.io/part-of": "ambient-lite"}
	redirected = map[string]string{annotationRedirection: "enabled"}
)

// meshCluster is a cluster with Ambient Lite installed and healthy.
func meshCluster(t *testing.T) *fixture {
	f := newFixture(t)
	f.namespace = "bookinfo"
	f.add(
		node("node-a"), node("node-b"),
		namespace("istio-system", partOf), namespace("default", nil),
		namespace("bookinfo", map[string]string{labelDataplaneMode: dataplaneModeAmbient, labelUseWaypoint: "waypoint"}),
		namespace("legacy", nil),
		deployment("istio-system", "istiod", 2, 2, partOf), daemonSet("istio-system", "ztunnel", partOf),
		pod("istio-system", istiodA, "node-a", "istiod", hub+"istiod-lite:dev", map[string]string{"app": "istiod"}, nil, true),
		pod("istio-system", istiodB, "node-b", "istiod", hub+"istiod-lite:dev", map[string]string{"app": "istiod"}, nil, true),
		pod("istio-system", ztunnelA, "node-a", "ztunnel", hub+"ztunnel:dev", map[string]string{"app": "ztunnel"}, nil, true),
		pod("istio-system", ztunnelB, "node-b", "ztunnel", hub+"ztunnel:dev", map[string]string{"app": "ztunnel"}, nil, true),
		pod("bookinfo", waypointP, "node-a", "waypoint", hub+"waypoint:dev",
			map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", labelGatewayName: "waypoint"}, nil, true),
		pod("bookinfo", "productpage-v1-7d4c9f8b6-h2x9k", "node-a", "bookinfo-productpage", hub+"meshecho:dev", map[string]string{"app": "productpage"}, redirected, true),
		pod("bookinfo", "reviews-v1-5b8f6c7d9-q8w4z", "node-b", "bookinfo-reviews", hub+"meshecho:dev", map[string]string{"app": "reviews"}, redirected, true),
		pod("legacy", "client-6d5c4b3a2-z9y8x", "node-a", "default", hub+"meshecho:dev", nil, nil, true),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: rootCertConfigMap, Labels: map[string]string{labelManagedBy: rootCertManagedByIstiod}},
			Data: map[string]string{rootCertKey: rootCertPEM(t, 10*365*24*time.Hour)}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: rootCertConfigMap, Labels: map[string]string{labelManagedBy: rootCertManagedByIstiod}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: rootCertConfigMap, Labels: map[string]string{labelManagedBy: rootCertManagedByIstiod}}},
		&gatewayv1.GatewayClass{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "GatewayClass"},
			ObjectMeta: metav1.ObjectMeta{Name: waypointGatewayClass, Labels: partOf},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: "istio.io/mesh-controller"},
			Status:     gatewayv1.GatewayClassStatus{Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted"}}}},
		waypointGW("bookinfo", "waypoint", "service", true),
		waypointGW("legacy", "legacy-wp", "", false),
		&gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "ingress"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "other"}},
	)
	for _, n := range append(append([]string{}, gatewayAPICRDs...), "backendtlspolicies.gateway.networking.k8s.io") {
		f.addUnstructured(crd(n, "experimental", true, fieldManager))
	}
	for _, n := range securityCRDs {
		f.addUnstructured(crd(n, "", true, fieldManager))
	}
	f.admin.serve(t, "istio-system", istiodA, istiodMonitorPort, istiodSyncz, "istiod-a.json")
	f.admin.serve(t, "istio-system", istiodB, istiodMonitorPort, istiodSyncz, "istiod-b.json")
	f.admin.serve(t, "istio-system", ztunnelA, ztunnelAdminPort, ztunnelConfigDump, "ztunnel-node-a.json")
	f.admin.serve(t, "istio-system", ztunnelB, ztunnelAdminPort, ztunnelConfigDump, "ztunnel-node-b.json")
	return f
}

// unhealthyMesh breaks meshCluster in every way check looks for.
func unhealthyMesh(t *testing.T) *fixture {
	f := newFixture(t)
	f.namespace = "bookinfo"
	f.add(
		node("node-a"), node("node-b"),
		namespace("istio-system", partOf),
		namespace("bookinfo", map[string]string{labelDataplaneMode: dataplaneModeAmbient, labelUseWaypoint: "waypoint"}),
		deployment("istio-system", "istiod", 2, 1, partOf), daemonSet("istio-system", "ztunnel", partOf),
		pod("istio-system", istiodA, "node-a", "istiod", hub+"istiod-lite:dev", map[string]string{"app": "istiod"}, nil, true),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: istiodB, Labels: map[string]string{"app": "istiod"}},
			Spec:   corev1.PodSpec{NodeName: "node-b", Containers: []corev1.Container{{Image: hub + "istiod-lite:dev"}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending}},
		pod("istio-system", ztunnelA, "node-a", "ztunnel", hub+"ztunnel:dev", map[string]string{"app": "ztunnel"}, nil, true),
		pod("istio-system", ztunnelB, "node-b", "ztunnel", hub+"ztunnel:dev", map[string]string{"app": "ztunnel"}, nil, false),
		pod("bookinfo", waypointP, "node-a", "waypoint", hub+"waypoint:dev",
			map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", labelGatewayName: "waypoint"}, nil, true),
		pod("bookinfo", "productpage-v1-7d4c9f8b6-h2x9k", "node-a", "bookinfo-productpage", hub+"meshecho:dev", nil, redirected, true),
		pod("bookinfo", "reviews-v1-5b8f6c7d9-q8w4z", "node-b", "bookinfo-reviews", hub+"meshecho:dev", nil, redirected, true),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: rootCertConfigMap},
			Data: map[string]string{rootCertKey: rootCertPEM(t, 10*24*time.Hour)}},
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: waypointGatewayClass}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "istio.io/mesh-controller"}},
	)
	for _, n := range gatewayAPICRDs {
		f.addUnstructured(crd(n, "standard", n != "grpcroutes.gateway.networking.k8s.io"))
	}
	f.addUnstructured(crd(securityCRDs[0], "", true))
	f.admin.serve(t, "istio-system", istiodA, istiodMonitorPort, istiodSyncz, "istiod-a-unhealthy.json")
	f.admin.serve(t, "istio-system", ztunnelA, ztunnelAdminPort, ztunnelConfigDump, "ztunnel-node-a.json")
	f.admin.serve(t, "istio-system", ztunnelB, ztunnelAdminPort, ztunnelConfigDump, "ztunnel-node-b-pending.json")
	return f
}

// emptyCluster has nodes and the usual namespaces, nothing of the mesh.
func emptyCluster(t *testing.T) *fixture {
	f := newFixture(t)
	f.add(node("node-a"), node("node-b"), namespace("default", nil), namespace("kube-system", nil))
	return f
}

func waypointGW(ns, name, forType string, programmed bool) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{
		TypeMeta:   metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: waypointGatewayClass,
			Listeners: []gatewayv1.Listener{{Name: waypointListener, Port: waypointPort, Protocol: waypointProtocol}}},
	}
	if forType != "" {
		gw.Labels = map[string]string{labelWaypointFor: forType}
	}
	if programmed {
		gw.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: "True", Reason: "Programmed", Message: "Deployment " + ns + "/" + name + " has 1/1 available replicas"}}
		gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Value: "10.96.10.99"}}
	} else {
		gw.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: "False", Reason: "Pending", Message: "Deployment " + ns + "/" + name + " has 0/1 available replicas"}}
	}
	return gw
}

// goldenCase runs commands against a fixture and compares what they print
// with testdata/<name>.golden.
type goldenCase struct {
	name  string
	setup func(*testing.T) *fixture
	// cmds run in order against the same fixture; each is one command line.
	cmds []string
	// collapseCRDs shortens each CRD document of stdout to one line.
	collapseCRDs bool
}

func TestGolden(t *testing.T) {
	unreachable := func(t *testing.T) *fixture {
		f := meshCluster(t)
		f.connectErr = unreachableError{server: "https://10.0.0.1:6443", err: fmt.Errorf("dial tcp 10.0.0.1:6443: connect: %w", syscall.ECONNREFUSED)}
		return f
	}
	cases := []goldenCase{
		// Usage errors: usage and exit 2.
		{name: "usage-unknown-command", setup: meshCluster, cmds: []string{"instal"}},
		{name: "usage-unknown-flag", setup: meshCluster, cmds: []string{"proxy-status --bogus"}},
		{name: "usage-unknown-subcommand", setup: meshCluster, cmds: []string{"waypoint lst"}},
		{name: "usage-extra-argument", setup: meshCluster, cmds: []string{"check now"}},
		{name: "usage-bad-output", setup: meshCluster, cmds: []string{"version -o xml"}},
		{name: "help-group", setup: meshCluster, cmds: []string{"ztunnel-config"}},

		// check
		{name: "check-healthy", setup: meshCluster, cmds: []string{"check"}},
		{name: "check-healthy-json", setup: meshCluster, cmds: []string{"check -o json"}},
		{name: "check-unhealthy", setup: unhealthyMesh, cmds: []string{"check"}},
		{name: "check-not-installed", setup: emptyCluster, cmds: []string{"check"}},
		{name: "check-unreachable", setup: unreachable, cmds: []string{"check"}},
		{name: "check-pre", setup: emptyCluster, cmds: []string{"check --pre"}},
		{name: "check-pre-problems", setup: func(t *testing.T) *fixture {
			f := emptyCluster(t)
			f.kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &k8sversion.Info{GitVersion: "v1.29.4"}
			f.denied["create clusterroles.rbac.authorization.k8s.io"] = true
			f.denied["patch clusterroles.rbac.authorization.k8s.io"] = true
			f.denied["create customresourcedefinitions.apiextensions.k8s.io"] = true
			f.add(namespace("istio-system", nil), deployment("istio-system", "istiod", 1, 1, map[string]string{"app": "istiod"}))
			f.addUnstructured(crd("gateways.gateway.networking.k8s.io", "standard", true, "kubectl"))
			return f
		}, cmds: []string{"check --pre -o yaml"}},

		// proxy-status
		{name: "proxy-status", setup: meshCluster, cmds: []string{"proxy-status"}},
		{name: "proxy-status-unhealthy", setup: unhealthyMesh, cmds: []string{"proxy-status"}},
		{name: "proxy-status-json", setup: meshCluster, cmds: []string{"proxy-status -o json"}},
		{name: "proxy-status-unreachable", setup: unreachable, cmds: []string{"proxy-status"}},
		{name: "proxy-status-not-installed", setup: emptyCluster, cmds: []string{"proxy-status"}},

		// ztunnel-config
		{name: "ztunnel-config-choose-node", setup: meshCluster, cmds: []string{"ztunnel-config workloads", "zc workloads --node node-c"}},
		{name: "ztunnel-config-workloads", setup: meshCluster, cmds: []string{"ztunnel-config workloads --node node-a"}},
		{name: "ztunnel-config-services", setup: meshCluster, cmds: []string{"ztunnel-config services --node node-a -n bookinfo"}},
		{name: "ztunnel-config-policies", setup: meshCluster, cmds: []string{"ztunnel-config policies --node node-a"}},
		{name: "ztunnel-config-certificates", setup: meshCluster, cmds: []string{"ztunnel-config certificates --node node-a", "zc certs --node node-b"}},
		{name: "ztunnel-config-connections", setup: meshCluster, cmds: []string{"ztunnel-config connections --node node-a"}},
		{name: "ztunnel-config-all", setup: meshCluster, cmds: []string{"ztunnel-config all --node node-b"}},
		{name: "ztunnel-config-json", setup: meshCluster, cmds: []string{"ztunnel-config policies --node node-a -n bookinfo -o json", "zc certificates --node node-a -o yaml"}},
		{name: "ztunnel-config-not-installed", setup: emptyCluster, cmds: []string{"ztunnel-config workloads"}},

		// version
		{name: "version", setup: meshCluster, cmds: []string{"version", "version -o json"}},
		{name: "version-client", setup: unreachable, cmds: []string{"version --client"}},
		{name: "version-unreachable", setup: unreachable, cmds: []string{"version"}},
		{name: "version-not-installed", setup: emptyCluster, cmds: []string{"version"}},

		// waypoint
		{name: "waypoint-generate", setup: meshCluster, cmds: []string{"waypoint generate -n bookinfo", "waypoint generate --name reviews-wp --for workload"}},
		{name: "waypoint-generate-bad", setup: meshCluster, cmds: []string{"waypoint generate --for pods", "waypoint generate --name none"}},
		{name: "waypoint-apply", setup: func(t *testing.T) *fixture {
			f := meshCluster(t)
			f.programGateways = true
			f.add(namespace("shop", map[string]string{labelDataplaneMode: dataplaneModeAmbient}))
			return f
		}, cmds: []string{"waypoint apply -n shop --enroll-namespace --wait", "waypoint apply -n shop --enroll-namespace", "waypoint list -n shop"}},
		{name: "waypoint-apply-not-ambient", setup: meshCluster, cmds: []string{"waypoint apply -n default", "waypoint apply -n nowhere"}},
		{name: "waypoint-apply-overwrite", setup: meshCluster, cmds: []string{"waypoint apply --name reviews-wp --enroll-namespace", "waypoint apply --name reviews-wp --enroll-namespace --overwrite"}},
		{name: "waypoint-apply-not-installed", setup: emptyCluster, cmds: []string{"waypoint apply -n default"}},
		{name: "waypoint-list", setup: meshCluster, cmds: []string{"waypoint list", "waypoint list -A", "waypoint list -n default", "waypoint list -A -o yaml"}},
		{name: "waypoint-status", setup: meshCluster, cmds: []string{"waypoint status", "waypoint status -A --wait=false", "waypoint status -n legacy --name legacy-wp --waypoint-timeout 20ms", "waypoint status -n bookinfo --name ingress"}},
		{name: "waypoint-delete", setup: meshCluster, cmds: []string{"waypoint delete waypoint", "waypoint delete -n legacy --all", "waypoint delete gone", "waypoint delete", "waypoint list -A"}},

		// install
		{name: "install", setup: emptyCluster, cmds: []string{"install --set cni.binDir=/usr/lib/cni --set cni.confDir=/var/lib/ambient-lite/cluster/cni", "install --set cni.binDir=/usr/lib/cni --set cni.confDir=/var/lib/ambient-lite/cluster/cni"}},
		{name: "install-upgrade", setup: emptyCluster, cmds: []string{"install", "install --set global.tag=v0.2.0 --set istiod.replicas=1"}},
		{name: "install-dry-run", setup: unreachable, cmds: []string{"install --dry-run --set global.hub=registry.example.com/mesh"}, collapseCRDs: true},
		{name: "install-bad-values", setup: emptyCluster, cmds: []string{"install --set cni.binDIr=/usr/lib/cni", "install --set global.logLevel=verbose", "install --set foo"}},
		{name: "install-forbidden", setup: func(t *testing.T) *fixture {
			f := emptyCluster(t)
			f.denied["create clusterroles.rbac.authorization.k8s.io"] = true
			f.denied["patch clusterroles.rbac.authorization.k8s.io"] = true
			f.denied["create namespaces"] = true
			return f
		}, cmds: []string{"install"}},
		{name: "install-not-ready", setup: func(t *testing.T) *fixture {
			f := emptyCluster(t)
			f.stuck = true
			return f
		}, cmds: []string{"install --timeout 20ms"}},
		{name: "install-unreachable", setup: unreachable, cmds: []string{"install"}},

		// uninstall
		{name: "uninstall", setup: installedWithWorkloads, cmds: []string{"uninstall --dry-run", "uninstall", "uninstall"}},
		{name: "uninstall-keep-crds", setup: installedWithWorkloads, cmds: []string{"uninstall --keep-crds"}},
		{name: "uninstall-purge", setup: installedWithWorkloads, cmds: []string{"uninstall --purge"}},
		{name: "uninstall-not-released", setup: func(t *testing.T) *fixture {
			f := installedWithWorkloads(t)
			f.noNodeAgent = true
			return f
		}, cmds: []string{"uninstall --timeout 20ms"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			var out bytes.Buffer
			for _, line := range tc.cmds {
				var stdout, stderr bytes.Buffer
				err := RunEnv(context.Background(), strings.Fields(line), f.env(&stdout, &stderr))
				if msg := Message(err); msg != "" {
					stderr.WriteString(msg + "\n")
				}
				so := normalize(stdout.String())
				if tc.collapseCRDs {
					so = collapseCRDs(so)
				}
				fmt.Fprintf(&out, "$ ambientctl %s\n%s", line, so)
				if stderr.Len() > 0 {
					fmt.Fprintf(&out, "[stderr]\n%s", normalize(stderr.String()))
				}
				fmt.Fprintf(&out, "[exit %d]\n\n", ExitCode(err))
			}
			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), out.Bytes(), *update)
		})
	}
}

// normalize hides what depends on the Go toolchain that built the test.
func normalize(s string) string {
	s = strings.ReplaceAll(s, runtime.Version(), "go1.x")
	return strings.ReplaceAll(s, runtime.GOOS+"/"+runtime.GOARCH, "os/arch")
}

// installedWithWorkloads is an empty cluster after `ambientctl install`,
// with workloads enrolled, a waypoint, root ConfigMaps istiod-lite wrote,
// and a CRD that another tool applied too.
func installedWithWorkloads(t *testing.T) *fixture {
	f := emptyCluster(t)
	var sink bytes.Buffer
	if err := RunEnv(context.Background(), []string{"install"}, f.env(&sink, &sink)); err != nil {
		t.Fatalf("install: %v\n%s", err, sink.String())
	}
	f.add(
		namespace("bookinfo", map[string]string{labelDataplaneMode: dataplaneModeAmbient, labelUseWaypoint: "waypoint"}),
		namespace("legacy", nil),
		pod("istio-system", istiodA, "node-a", "istiod", hub+"istiod-lite:dev", map[string]string{"app": "istiod"}, nil, true),
		pod("bookinfo", "productpage-v1-7d4c9f8b6-h2x9k", "node-a", "bookinfo-productpage", hub+"meshecho:dev", nil, redirected, true),
		pod("bookinfo", "reviews-v1-5b8f6c7d9-q8w4z", "node-b", "bookinfo-reviews", hub+"meshecho:dev", nil, redirected, true),
		pod("legacy", "client-6d5c4b3a2-z9y8x", "node-a", "default", hub+"meshecho:dev", map[string]string{labelDataplaneMode: dataplaneModeAmbient}, redirected, true),
		pod("legacy", "db-0", "node-b", "default", hub+"meshecho:dev", map[string]string{labelDataplaneMode: "none"}, nil, true),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: rootCertConfigMap, Labels: map[string]string{labelManagedBy: rootCertManagedByIstiod}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: rootCertConfigMap, Labels: map[string]string{labelManagedBy: rootCertManagedByIstiod}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: "app-config"}},
		waypointGW("bookinfo", "waypoint", "service", true),
		&gatewayv1.Gateway{TypeMeta: metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "ingress"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "other"}},
	)
	// Another tool (kubectl) applied the Gateway CRD as well.
	gwCRD := f.getDyn(gvrCRD, "", "gateways.gateway.networking.k8s.io")
	gwCRD.SetManagedFields(append(gwCRD.GetManagedFields(), metav1.ManagedFieldsEntry{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}))
	if err := f.dyn.Tracker().Update(gvrCRD, gwCRD, ""); err != nil {
		t.Fatal(err)
	}
	return f
}

// collapseCRDs replaces each CustomResourceDefinition document of a YAML
// stream by one comment line (their text is package crds', tested there).
func collapseCRDs(s string) string {
	var out strings.Builder
	for i, doc := range strings.Split(s, "---\n") {
		if i > 0 {
			out.WriteString("---\n")
		}
		if strings.Contains(doc, "\nkind: CustomResourceDefinition\n") || strings.HasPrefix(doc, "kind: CustomResourceDefinition\n") {
			name := ""
			for line := range strings.Lines(doc) {
				if n, ok := strings.CutPrefix(line, "  name: "); ok {
					name = strings.TrimSpace(n)
					break
				}
			}
			fmt.Fprintf(&out, "# CustomResourceDefinition %s (%d lines)\n", name, strings.Count(doc, "\n"))
			continue
		}
		out.WriteString(doc)
	}
	return out.String()
}
