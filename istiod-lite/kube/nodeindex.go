package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambientlite/mesh/istiod-lite/ca"
)

const nodeIdentityIndex = "node-identity"

// nodeIdentityKey is the index key of an identity on a node.
func nodeIdentityKey(node, namespace, serviceAccount string) string {
	return node + "/" + namespace + "/" + serviceAccount
}

// indexNodeIdentity indexes a pod by (node, namespace, service account) while
// it is scheduled and not finished: those are the identities a node agent may
// ask certificates for.
func indexNodeIdentity(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" || p.Spec.HostNetwork {
		return nil, nil
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil, nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return []string{nodeIdentityKey(p.Spec.NodeName, p.Namespace, sa)}, nil
}

// IdentityRunsOnNode implements ca.NodeChecker from the pod cache: true when
// a scheduled, unfinished pod with id's service account runs on node.
func (kc *Cache) IdentityRunsOnNode(ctx context.Context, id ca.Identity, node string) (bool, error) {
	if !kc.pods.HasSynced() {
		return false, fmt.Errorf("pod cache not synced yet")
	}
	objs, err := kc.pods.GetIndexer().ByIndex(nodeIdentityIndex, nodeIdentityKey(node, id.Namespace, id.ServiceAccount))
	if err != nil {
		return false, fmt.Errorf("pod index: %w", err)
	}
	return len(objs) > 0, nil
}

var _ ca.NodeChecker = (*Cache)(nil)
