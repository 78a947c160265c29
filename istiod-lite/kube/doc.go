// Package kube is istiod-lite's view of the Kubernetes API: informers on the
// objects the ambient model and the route compiler read (with only the fields
// they use kept in memory), snapshots of them, change notifications, the
// index of which identities run on which node, and the service-account token
// authenticator (TokenReview) shared by the CA and the config server.
package kube
