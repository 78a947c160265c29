// Package model translates a snapshot of Kubernetes objects into Istio's
// ambient view: the workloadapi.Workload and workloadapi.Service resources
// that ztunnel receives as istio.workload.Address over delta ADS, and the
// security.Authorization resources (istio.security.Authorization) that
// AuthorizationPolicies and PeerAuthentications become for ztunnel, and the
// routeapi.WaypointPolicy resources that AuthorizationPolicies with
// targetRefs become for waypoints.
//
// The translation is pure: Build takes a Snapshot and a Config and returns a
// View, with no clients, clocks or logging. Objects that cannot be translated
// are skipped and reported as Problems; everything else still translates.
// Diff, DiffAuthorizations and DiffWaypointPolicies compare two Views by
// proto equality so that the xDS server can push only the resources that
// changed.
//
// The rules follow Istio's ambient index (pilot/pkg/serviceregistry/ambient);
// README.md lists them with the Istio files they were checked against.
package model
