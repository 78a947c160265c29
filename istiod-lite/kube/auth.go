package kube

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ambientlite/mesh/istiod-lite/ca"
	"github.com/ambientlite/mesh/istiod-lite/xds"
)

// DefaultAudience is the token audience Istio's proxies present to istiod
// (the projected token "istio-token" with audience istio-ca).
const DefaultAudience = "istio-ca"

// Keys of a bound service-account token's user extra, as TokenReview
// returns them.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// ErrNoToken is returned when a call carries no bearer token.
var ErrNoToken = errors.New(`no service-account token: send it as "authorization: Bearer <token>" metadata`)

// TokenAuthenticator authenticates gRPC callers by the Kubernetes
// service-account token in their "authorization: Bearer" metadata, asking
// the API server (TokenReview) with the accepted audiences. The caller's node
// is the node of the pod the token is bound to.
type TokenAuthenticator struct {
	// Client makes TokenReviews. Required.
	Client kubernetes.Interface
	// Audiences accepted. Default [DefaultAudience].
	Audiences []string
	// TrustDomain of the SPIFFE identities reported to the config server.
	// Default "cluster.local".
	TrustDomain string
	// Pod looks a pod up (the cache's Pod); nil means the node comes from
	// the token's node-name extra only.
	Pod func(namespace, name string) (*corev1.Pod, bool)
	// CacheTTL is how long a successful review is reused for the same
	// token. Default one minute; negative disables the cache.
	CacheTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[[sha256.Size]byte]reviewed
}

type reviewed struct {
	caller ca.Caller
	until  time.Time
}

func (a *TokenAuthenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Review authenticates ctx's caller.
func (a *TokenAuthenticator) Review(ctx context.Context) (ca.Caller, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return ca.Caller{}, err
	}
	key := sha256.Sum256([]byte(token))
	ttl := a.CacheTTL
	if ttl == 0 {
		ttl = time.Minute
	}
	if ttl > 0 {
		a.mu.Lock()
		r, ok := a.cache[key]
		a.mu.Unlock()
		if ok && a.now().Before(r.until) {
			return r.caller, nil
		}
	}
	caller, err := a.review(ctx, token)
	if err != nil {
		return ca.Caller{}, err
	}
	if ttl > 0 {
		now := a.now()
		a.mu.Lock()
		if a.cache == nil {
			a.cache = map[[sha256.Size]byte]reviewed{}
		}
		for k, r := range a.cache {
			if !now.Before(r.until) {
				delete(a.cache, k)
			}
		}
		a.cache[key] = reviewed{caller: caller, until: now.Add(ttl)}
		a.mu.Unlock()
	}
	return caller, nil
}

func (a *TokenAuthenticator) review(ctx context.Context, token string) (ca.Caller, error) {
	if a.Client == nil {
		return ca.Caller{}, errors.New("token authenticator has no API client")
	}
	auds := a.Audiences
	if len(auds) == 0 {
		auds = []string{DefaultAudience}
	}
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: auds},
	}, metav1.CreateOptions{})
	if err != nil {
		return ca.Caller{}, fmt.Errorf("token review: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return ca.Caller{}, fmt.Errorf("token rejected (audiences %v): %s", auds, msg)
	}
	if !intersects(st.Audiences, auds) {
		return ca.Caller{}, fmt.Errorf("token audiences %v do not include any of %v", st.Audiences, auds)
	}
	ns, sa, ok := serviceAccountOf(st.User.Username)
	if !ok {
		return ca.Caller{}, fmt.Errorf("user %q is not a service account", st.User.Username)
	}
	caller := ca.Caller{Identity: ca.Identity{Namespace: ns, ServiceAccount: sa}}
	podName, podUID := first(st.User.Extra[extraPodName]), first(st.User.Extra[extraPodUID])
	if podName != "" && a.Pod != nil {
		if p, ok := a.Pod(ns, podName); ok && (podUID == "" || string(p.UID) == podUID) {
			caller.Node = p.Spec.NodeName
		}
	}
	if caller.Node == "" {
		caller.Node = first(st.User.Extra[extraNodeName])
	}
	return caller, nil
}

// CA returns the authenticator in the form the CA asks for.
func (a *TokenAuthenticator) CA() ca.Authenticator { return caAuth{a} }

// XDS returns the authenticator in the form the config server asks for.
func (a *TokenAuthenticator) XDS() xds.Authenticator { return xdsAuth{a} }

type caAuth struct{ a *TokenAuthenticator }

func (c caAuth) Authenticate(ctx context.Context) (ca.Caller, error) { return c.a.Review(ctx) }

type xdsAuth struct{ a *TokenAuthenticator }

func (x xdsAuth) Authenticate(ctx context.Context) (xds.Proxy, error) {
	c, err := x.a.Review(ctx)
	if err != nil {
		return xds.Proxy{}, err
	}
	td := x.a.TrustDomain
	if td == "" {
		td = ca.DefaultTrustDomain
	}
	return xds.Proxy{
		Identity: fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", td, c.Identity.Namespace, c.Identity.ServiceAccount),
		Node:     c.Node,
	}, nil
}

func bearerToken(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", ErrNoToken
	}
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && strings.TrimSpace(t) != "" {
			return strings.TrimSpace(t), nil
		}
	}
	return "", ErrNoToken
}

// serviceAccountOf parses "system:serviceaccount:<ns>:<name>".
func serviceAccountOf(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
