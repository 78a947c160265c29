//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/pkg/workloadapi"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	addressType = "type.googleapis.com/istio.workload.Address"
	authzType   = "type.googleapis.com/istio.security.Authorization"
	istiodHost  = "istiod.istio-system.svc"
)

// TestControlPlane checks istiod-lite in the local cluster as ztunnel and
// workloads meet it: over the real protocols, with real service-account
// tokens bound to real pods.
func TestControlPlane(t *testing.T) {
	installMesh(t)
	ctx := t.Context()
	cs := clientset(t)

	roots := rootPool(t, cs, "default")
	conn := dialIstiod(t, cs, roots)

	// A stand-in for ztunnel: a pod running as istio-system/ztunnel on the
	// node, whose bound token the CA and the config server must accept.
	ztunnelPod := runPod(t, cs, "istio-system", "ztunnel", "e2e-fake-ztunnel")
	ztunnelToken := boundToken(t, cs, ztunnelPod, "istio-ca")

	ns := namespace(t, "cp")
	app := runPod(t, cs, ns, "app", "app")
	appToken := boundToken(t, cs, app, "istio-ca")
	appID := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/app", ns)
	appUID := fmt.Sprintf("Kubernetes//Pod/%s/app", ns)

	t.Run("config follows the ambient label", func(t *testing.T) {
		ads := openADS(t, ctx, conn, ztunnelToken)
		w := ads.waitFor(t, "initial workload", 10*time.Second, func(s adsState) bool { return s.workload(appUID) != nil })
		if p := w.workload(appUID).GetTunnelProtocol(); p != workloadapi.TunnelProtocol_NONE {
			t.Fatalf("pod of a namespace without the label: tunnel protocol %v, want NONE", p)
		}
		start := time.Now()
		kubectl(t, "", "label", "namespace", ns, "istio.io/dataplane-mode=ambient")
		ads.waitFor(t, "workload enrolled", 5*time.Second, func(s adsState) bool {
			return s.workload(appUID).GetTunnelProtocol() == workloadapi.TunnelProtocol_HBONE
		})
		enrolled := time.Since(start)
		start = time.Now()
		kubectl(t, "", "label", "namespace", ns, "istio.io/dataplane-mode-")
		ads.waitFor(t, "workload withdrawn", 5*time.Second, func(s adsState) bool {
			return s.workload(appUID).GetTunnelProtocol() == workloadapi.TunnelProtocol_NONE
		})
		withdrawn := time.Since(start)
		t.Logf("label → pushed: enrolled in %v, withdrawn in %v (kubectl included)", enrolled.Round(time.Millisecond), withdrawn.Round(time.Millisecond))
		if enrolled > time.Second || withdrawn > time.Second {
			t.Errorf("push took longer than 1s: enrolled %v, withdrawn %v", enrolled, withdrawn)
		}
		// An AuthorizationPolicy reaches ztunnel as istio.security.Authorization.
		kubectl(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-app, namespace: %s}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/%s/sa/app"]}}]
`, ns, ns), "apply", "-f", "-")
		ads.waitFor(t, "policy pushed", 5*time.Second, func(s adsState) bool { return s.authz[ns+"/allow-app"] != nil })
		kubectl(t, "", "-n", ns, "delete", "authorizationpolicy", "allow-app")
		ads.waitFor(t, "policy withdrawn", 5*time.Second, func(s adsState) bool { return s.authz[ns+"/allow-app"] == nil })

		kubectl(t, "", "delete", "pod", "-n", ns, "app", "--wait=false")
		ads.waitFor(t, "deleted pod removed", 30*time.Second, func(s adsState) bool { return s.workload(appUID) == nil })
	})
	// The pod above is gone; run it again for the CA checks.
	app = runPod(t, cs, ns, "app", "app2")
	appToken = boundToken(t, cs, app, "istio-ca")
	ca := pb.NewIstioCertificateServiceClient(conn)

	t.Run("ztunnel gets the identity of a pod on its node", func(t *testing.T) {
		chain, err := createCert(ctx, ca, ztunnelToken, appID, appID)
		if err != nil {
			t.Fatal(err)
		}
		checkChain(t, chain, roots, appID)
	})
	t.Run("ztunnel is refused an identity with no pod on its node", func(t *testing.T) {
		other := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/nobody", ns)
		_, err := createCert(ctx, ca, ztunnelToken, other, other)
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("a workload gets its own identity", func(t *testing.T) {
		chain, err := createCert(ctx, ca, appToken, appID, "")
		if err != nil {
			t.Fatal(err)
		}
		checkChain(t, chain, roots, appID)
	})
	t.Run("a workload is refused another identity", func(t *testing.T) {
		other := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", ns)
		_, err := createCert(ctx, ca, appToken, other, other)
		wantCode(t, err, codes.PermissionDenied)
		_, err = createCert(ctx, ca, appToken, other, "")
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("wrong audience and no token are refused", func(t *testing.T) {
		wrong := boundToken(t, cs, app, "not-istio")
		_, err := createCert(ctx, ca, wrong, appID, "")
		wantCode(t, err, codes.Unauthenticated)
		_, err = createCert(ctx, ca, "", appID, "")
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("malformed CSR is refused", func(t *testing.T) {
		md := metadata.Pairs("authorization", "Bearer "+appToken)
		_, err := ca.CreateCertificate(metadata.NewOutgoingContext(ctx, md), &pb.IstioCertificateRequest{Csr: "-----BEGIN CERTIFICATE REQUEST-----\nbm9wZQ==\n-----END CERTIFICATE REQUEST-----\n"})
		wantCode(t, err, codes.InvalidArgument)
	})

	t.Run("metrics count what was issued and refused", func(t *testing.T) {
		pods, err := cs.CoreV1().Pods("istio-system").List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		replicas := 0

		for _, p := range pods.Items {
			if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				text.WriteString(httpGet(t, "http://"+p.Status.PodIP+":15014/metrics"))
				replicas++
			}
		}
		// Both replicas serve; one leads the writers (a lease handed over
		// during the rollout may take a few seconds to be taken).
		if replicas != 2 {
			t.Errorf("%d replicas serving, want 2", replicas)
		}
		poll(t, 20*time.Second, func() error {
			leaders := 0
			for _, p := range pods.Items {
				if p.Status.PodIP != "" && p.DeletionTimestamp == nil &&
					strings.Contains(httpGet(t, "http://"+p.Status.PodIP+":15014/debug/syncz"), `"leader": true`) {
					leaders++
				}
			}
			if leaders != 1 {
				return fmt.Errorf("%d replicas leading, want 1", leaders)
			}
			return nil
		})
		for _, m := range []string{"istiod_lite_ca_certificates_issued_total", "istiod_lite_ca_certificates_refused_total", "istiod_lite_xds_pushes_total", "istiod_lite_translations_total"} {
			if sumMetric(text.String(), m) <= 0 {
				t.Errorf("metric %s is zero or missing", m)
			}
		}
	})
	t.Run("restart keeps the root", func(t *testing.T) {
		before := rootPEM(t, cs, ns)
		kubectl(t, "", "-n", "istio-system", "rollout", "restart", "deployment/istiod")
		kubectl(t, "", "-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=120s")
		if after := rootPEM(t, cs, ns); after != before {
			t.Fatal("root-cert.pem changed across a restart")
		}
		// The new replicas' certificates still verify against the old root,
		// and a workload's connection made before the restart carries on.
		for range 5 {
			chain, err := createCert(ctx, ca, appToken, appID, "")
			if err != nil {
				t.Fatalf("after restart, on the connection made before: %v", err)
			}
			checkChain(t, chain, roots, appID)
		}
	})
}

// rootPool reads ConfigMap istio-ca-root-cert in ns, waiting for it.
func rootPool(t *testing.T, cs kubernetes.Interface, ns string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM(t, cs, ns))) {
		t.Fatal("istio-ca-root-cert has no certificate")
	}
	return pool
}

func rootPEM(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	var got string
	poll(t, 30*time.Second, func() error {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(t.Context(), "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = cm.Data["root-cert.pem"]
		return nil
	})
	return got
}

// dialIstiod connects to the istiod Service's cluster IP (kube-proxy routes
// it from the host), verifying istiod's certificate against the mesh root.
func dialIstiod(t *testing.T, cs kubernetes.Interface, roots *x509.CertPool) *grpc.ClientConn {
	t.Helper()
	svc, err := cs.CoreV1().Services("istio-system").Get(t.Context(), "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: istiodHost, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(svc.Spec.ClusterIP+":15012", grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// runPod runs a pause pod as service account sa (created if missing) and
// waits until it is running; it is deleted when the test ends.
func runPod(t *testing.T, cs kubernetes.Interface, ns, sa, name string) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	poll(t, 30*time.Second, func() error {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("old pod %s/%s still there", ns, name)
		}
		return nil
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			ServiceAccountName:            sa,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "pause", Image: kube.Image("pause"), ImagePullPolicy: corev1.PullIfNotPresent}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	var got *corev1.Pod
	poll(t, 60*time.Second, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod %s/%s is %s", ns, name, p.Status.Phase)
		}
		got = p
		return nil
	})
	return got
}

// boundToken asks the API server for a token of the pod's service account
// bound to the pod, as the kubelet projects one.
func boundToken(t *testing.T, cs kubernetes.Interface, p *corev1.Pod, audience string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(t.Context(), p.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// createCert sends a CSR for want (a SPIFFE URI) with token, impersonating
// impersonate when it is not empty.
func createCert(ctx context.Context, c pb.IstioCertificateServiceClient, token, want, impersonate string) ([]string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(want)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, err
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		ValidityDuration: int64((24 * time.Hour).Seconds()),
	}
	if impersonate != "" {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{"ImpersonatedIdentity": structpb.NewStringValue(impersonate)}}
	}
	if token != "" {
		ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.CreateCertificate(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetCertChain(), nil
}

func checkChain(t *testing.T, chain []string, roots *x509.CertPool, want string) {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("chain has %d elements, want leaf … root", len(chain))
	}
	var certs []*x509.Certificate
	for _, p := range chain {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			t.Fatalf("chain element is not PEM: %q", p)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("leaf SAN %v, want %s", leaf.URIs, want)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("leaf key is %T, want ECDSA", leaf.PublicKey)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("leaf lifetime %v, want 24h", d)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not chain to istio-ca-root-cert: %v", err)
	}
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %v", want)
	}
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// poll retries f until it returns nil or the deadline passes.
func poll(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// sumMetric adds up every sample of a metric in Prometheus text format.
func sumMetric(text, name string) float64 {
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
