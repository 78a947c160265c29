package kube

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// stripUnstructured drops managed fields and status from custom resources
// read through the dynamic client: readers need metadata and spec only.
func stripUnstructured(obj any) (any, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d, nil
	}
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
		delete(u.Object, "status")
	}
	return obj, nil
}
