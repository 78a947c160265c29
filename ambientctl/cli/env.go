package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// Env is how commands reach the world: output streams, the cluster, the
// clock. Run fills it from the flags; tests replace Connect and Now.
type Env struct {
	Stdout, Stderr io.Writer
	// Kube is what --kubeconfig and --context say.
	Kube KubeFlags
	// Connect returns clients for the cluster k names, having checked that
	// its API server answers. Default: connect (client-go, port-forward).
	Connect func(ctx context.Context, k KubeFlags) (*Clients, error)
	// Now is the clock ages and expiries are measured with. Default
	// time.Now.
	Now func() time.Time
	// Poll is how often waits look again. Default 1s.
	Poll time.Duration
}

func (e *Env) defaults() {
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Connect == nil {
		e.Connect = connect
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Poll == 0 {
		e.Poll = time.Second
	}
}

// KubeFlags are the kubectl-style flags naming the cluster.
type KubeFlags struct {
	Kubeconfig, Context string
}

// Clients reach one cluster.
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Gateway gatewayclient.Interface
	// Admin reads the proxies' and istiod's HTTP endpoints.
	Admin Admin
	// Namespace is the kubeconfig context's namespace: the default of -n.
	Namespace string
	// Server is the API server's URL, for messages.
	Server string
}

// requestTimeout bounds each API request; dialTimeout a TCP connect.
const (
	requestTimeout = 30 * time.Second
	dialTimeout    = 10 * time.Second
)

// connect builds clients from the kubeconfig (kubectl's loading rules:
// --kubeconfig, else $KUBECONFIG, else ~/.kube/config; --context overrides
// the current context) and asks the API server for /version.
func connect(ctx context.Context, k KubeFlags) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, configError{err}
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, configError{err}
	}
	rc.Timeout = requestTimeout
	rc.Dial = (&net.Dialer{Timeout: dialTimeout}).DialContext
	rc.WarningHandler = rest.NoWarnings{}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, configError{err}
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, configError{err}
	}
	gc, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return nil, configError{err}
	}
	if err := kc.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Error(); err != nil {
		return nil, unreachableError{server: rc.Host, err: err}
	}
	return &Clients{
		Kube: kc, Dynamic: dc, Gateway: gc,
		Admin:     &portForward{config: rc, kube: kc},
		Namespace: ns, Server: rc.Host,
	}, nil
}

// configError is a kubeconfig that cannot be used.
type configError struct{ err error }

func (e configError) Error() string {
	if clientcmd.IsEmptyConfig(e.err) {
		return "no Kubernetes configuration: set KUBECONFIG or pass --kubeconfig"
	}
	return "kubeconfig: " + e.err.Error()
}
func (e configError) Unwrap() error { return e.err }

// unreachableError is an API server that did not answer.
type unreachableError struct {
	server string
	err    error
}

func (e unreachableError) Error() string {
	if apierrors.IsUnauthorized(e.err) || apierrors.IsForbidden(e.err) {
		return fmt.Sprintf("the Kubernetes API server at %s refused the kubeconfig's credentials: %s", e.server, apierrors.ReasonForError(e.err))
	}
	return fmt.Sprintf("cannot reach the Kubernetes API server at %s: %s", e.server, rootCause(e.err))
}
func (e unreachableError) Unwrap() error { return e.err }

// describe is the one line Message prints for err: network failures are
// reduced to their cause, API errors to the server's message.
func describe(err error) string {
	var u unreachableError
	var c configError
	switch {
	case errors.As(err, &u), errors.As(err, &c):
		return err.Error()
	case isNetworkError(err):
		return "lost the Kubernetes API server: " + rootCause(err)
	}
	return strings.TrimSpace(err.Error())
}

// isNetworkError reports whether err is a failure to talk to a server (not
// an answer from it).
func isNetworkError(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	var ce *x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ue) || errors.As(err, &oe) || errors.As(err, &ce) || errors.As(err, &ua) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrDeadlineExceeded)
}

// rootCause strips client-go's and net/http's wrapping ("Get \"https://…\":
// dial tcp …: connect: connection refused" → "dial tcp …: connect:
// connection refused").
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return "its certificate is signed by an unknown authority (check the kubeconfig's certificate-authority-data)"
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// clients connects once per command and remembers the result.
func (e *Env) clients(ctx context.Context) (*Clients, error) {
	return e.Connect(ctx, e.Kube)
}
