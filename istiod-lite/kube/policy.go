package kube

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambientlite/mesh/istiod-lite/model"
)

// AuthorizationPolicies lists the security.istio.io AuthorizationPolicies in
// the cache, their specs decoded into Istio's API types. A spec that does not
// decode is passed on as nil, which the model treats as failing closed (and
// reports); decodeErrs gets one entry per such object.
func (kc *Cache) AuthorizationPolicies() (out []*model.AuthorizationPolicy, decodeErrs []error) {
	for _, u := range list[*unstructured.Unstructured](kc.authzPolicies) {
		spec := &securityv1beta1.AuthorizationPolicy{}
		if err := decodeSpec(u, spec); err != nil {
			spec = nil
			decodeErrs = append(decodeErrs, objErr(u, err))
		}
		out = append(out, &model.AuthorizationPolicy{
			Namespace: u.GetNamespace(), Name: u.GetName(), Generation: u.GetGeneration(),
			Annotations: u.GetAnnotations(), Spec: spec,
		})
	}
	return out, decodeErrs
}

// PeerAuthentications lists the PeerAuthentications in the cache, as
// AuthorizationPolicies does.
func (kc *Cache) PeerAuthentications() (out []*model.PeerAuthentication, decodeErrs []error) {
	for _, u := range list[*unstructured.Unstructured](kc.peerAuths) {
		spec := &securityv1beta1.PeerAuthentication{}
		if err := decodeSpec(u, spec); err != nil {
			spec = nil
			decodeErrs = append(decodeErrs, objErr(u, err))
		}
		out = append(out, &model.PeerAuthentication{
			Namespace: u.GetNamespace(), Name: u.GetName(), Generation: u.GetGeneration(),
			CreationTimestamp: u.GetCreationTimestamp().Time, Spec: spec,
		})
	}
	return out, decodeErrs
}

// decodeSpec fills m from the object's spec; no spec is an empty message.
func decodeSpec(u *unstructured.Unstructured, m proto.Message) error {
	raw, ok := u.Object["spec"]
	if !ok || raw == nil {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(b, m)
}

func objErr(u *unstructured.Unstructured, err error) error {
	return fmt.Errorf("%s %s/%s: spec does not decode (the policy fails closed): %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
}
