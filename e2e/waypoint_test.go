//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambientlite/mesh/internal/hbone"
	"github.com/ambientlite/mesh/internal/meshcert"
)

// TestWaypointGateway: a Gateway of class istio-waypoint becomes a ready
// waypoint Deployment, its Gateway says Programmed=True with the Service's
// address, and the waypoint carries a mesh client's HBONE tunnel (L4 only
// for now) to the echo app.
func TestWaypointGateway(t *testing.T) {
	installMesh(t)
	ctx := t.Context()
	cs := clientset(t)
	ns := namespace(t, "wp")
	kubectl(t, manifest(t, "echo.yaml", ns), "apply", "-f", "-")
	kubectl(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: %s
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
`, ns), "apply", "-f", "-")

	start := time.Now()
	kubectl(t, "", "-n", ns, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=120s")
	t.Logf("gateway → Programmed in %v", time.Since(start).Round(100*time.Millisecond))
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/waypoint", "--timeout=60s")

	gw := kubectl(t, "", "-n", ns, "get", "gateway", "waypoint", "-o", "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status} {.status.addresses[*].value}")
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "True " + svc.Spec.ClusterIP; !strings.HasPrefix(gw, want) {
		t.Errorf("gateway Accepted + addresses = %q, want prefix %q", gw, want)
	}
	owners := kubectl(t, "", "-n", ns, "get", "deployment,service,serviceaccount", "waypoint", "-o", "jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {end}")
	if owners != "Gateway/waypoint Gateway/waypoint Gateway/waypoint " {
		t.Errorf("owner references: %q", owners)
	}

	// A mesh client (the app identity of this namespace) tunnels through the
	// waypoint pod's HBONE port to an echo pod.
	app := runPod(t, cs, ns, "app", "app")
	dir := t.TempDir()
	tokenFile, rootFile := filepath.Join(dir, "token"), filepath.Join(dir, "root.pem")
	must(t, os.WriteFile(tokenFile, []byte(boundToken(t, cs, app, "istio-ca")), 0o600))
	must(t, os.WriteFile(rootFile, []byte(rootPEM(t, cs, ns)), 0o600))
	istiod, err := cs.CoreV1().Services("istio-system").Get(ctx, "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := meshcert.NewClient(meshcert.Config{
		Address: istiod.Spec.ClusterIP + ":15012", ServerName: istiodHost,
		RootCertFile: rootFile, TokenFile: tokenFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer certs.Close()
	src := hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "app"}
	cert, err := certs.Fetch(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	d := &hbone.Dialer{
		Certificate: func(context.Context, hbone.Identity) (*tls.Certificate, error) { return &cert.TLS, nil },
		Roots:       cert.Roots,
	}
	defer d.Close()
	wpPods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=waypoint"})
	if err != nil || len(wpPods.Items) == 0 {
		t.Fatalf("waypoint pods: %v %v", wpPods, err)
	}
	echoPods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil || len(echoPods.Items) == 0 {
		t.Fatalf("echo pods: %v %v", echoPods, err)
	}
	kubectl(t, "", "-n", ns, "wait", "--for=condition=Ready", "pod", "-l", "app=echo", "--timeout=60s")
	st, err := d.DialContext(ctx, hbone.Target{
		Address:     net.JoinHostPort(wpPods.Items[0].Status.PodIP, "15008"),
		Authority:   net.JoinHostPort(echoPods.Items[0].Status.PodIP, "8080"),
		Source:      src,
		Destination: hbone.Identity{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "waypoint"},
	})
	if err != nil {
		t.Fatalf("HBONE through the waypoint: %v", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(st, "GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
	status, err := bufio.NewReader(st).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("echo through the waypoint answered %q", status)
	}

	// Deleting the Gateway removes what was made for it (owner references).
	kubectl(t, "", "-n", ns, "delete", "gateway", "waypoint")
	poll(t, 60*time.Second, func() error {
		_, err := cs.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("deployment waypoint still there")
		}
		return nil
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
