// Package e2e holds Ambient Lite's end-to-end tests. They run (with the
// build tag e2e, see `make e2e`) against the real local Kubernetes cluster
// that package e2e/cluster starts.
package e2e
