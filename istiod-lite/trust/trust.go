// Package trust gives istiod-lite its certificate authority from Kubernetes
// Secrets, as Istio does: a user-provided intermediate in Secret "cacerts",
// or else a self-signed root made once and kept in Secret "istio-ca-secret"
// so that restarts and replicas share one trust root. It also publishes the
// trust roots as ConfigMap "istio-ca-root-cert" in every namespace.
package trust

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ambientlite/mesh/istiod-lite/ca"
)

// Names of the Secrets and ConfigMap, Istio's.
const (
	PluggedSecret     = "cacerts"
	SelfSignedSecret  = "istio-ca-secret"
	RootConfigMap     = "istio-ca-root-cert"
	RootConfigMapKey  = "root-cert.pem"
	DefaultNamespace  = "istio-system"
	managedByLabel    = "app.kubernetes.io/managed-by"
	managedByValue    = "istiod-lite"
	selfSignedSecType = "istio.io/ca-root"
)

// Source says where an Authority came from.
type Source string

const (
	FromPlugged   Source = "plugged"     // Secret cacerts
	FromPersisted Source = "self-signed" // Secret istio-ca-secret, made earlier
	FromNewlyMade Source = "new"         // a new root, just stored in istio-ca-secret
)

// LoadAuthority returns the mesh CA: from Secret cacerts in namespace when it
// exists (a bad one is an error, never silently replaced), else from
// istio-ca-secret, else a new self-signed root stored there. When two
// replicas start together, the one whose Create loses reads the winner's.
func LoadAuthority(ctx context.Context, client kubernetes.Interface, namespace string, cfg ca.Config, log *slog.Logger) (*ca.Authority, Source, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets := client.CoreV1().Secrets(namespace)
	s, err := secrets.Get(ctx, PluggedSecret, metav1.GetOptions{})
	switch {
	case err == nil:
		a, err := ca.FromCACerts(s.Data, cfg)
		if err != nil {
			return nil, "", fmt.Errorf("secret %s/%s: %w", namespace, PluggedSecret, err)
		}
		return a, FromPlugged, nil
	case !apierrors.IsNotFound(err):
		return nil, "", fmt.Errorf("read secret %s/%s: %w", namespace, PluggedSecret, err)
	}

	for attempt := 0; attempt < 2; attempt++ {
		s, err := secrets.Get(ctx, SelfSignedSecret, metav1.GetOptions{})
		if err == nil {
			a, err := ca.FromCACerts(s.Data, cfg)
			if err != nil {
				return nil, "", fmt.Errorf("secret %s/%s (the self-signed root made earlier; delete it to make a new root, which every workload must then trust): %w",
					namespace, SelfSignedSecret, err)
			}
			return a, FromPersisted, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, "", fmt.Errorf("read secret %s/%s: %w", namespace, SelfSignedSecret, err)
		}
		now := time.Now
		if cfg.Now != nil {
			now = cfg.Now
		}
		a, err := ca.NewSelfSigned(cfg, now())
		if err != nil {
			return nil, "", err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:      SelfSignedSecret,
				Namespace: namespace,
				Labels:    map[string]string{managedByLabel: managedByValue},
			},
			Type: selfSignedSecType,
			Data: a.SecretData(),
		}, metav1.CreateOptions{})
		if err == nil {
			log.Info("made a new self-signed mesh root", "secret", namespace+"/"+SelfSignedSecret, "trustDomain", a.TrustDomain())
			return a, FromNewlyMade, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, "", fmt.Errorf("store the new root in secret %s/%s: %w", namespace, SelfSignedSecret, err)
		}
		// Another replica stored its root first: use that one.
	}
	return nil, "", fmt.Errorf("secret %s/%s: created by someone else and then not readable", namespace, SelfSignedSecret)
}
