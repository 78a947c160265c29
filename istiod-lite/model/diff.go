package model

import (
	"slices"

	"google.golang.org/protobuf/proto"
)

// Changes lists resource names that differ between two Views: from Diff,
// istio.workload.Address names (workload uids and "<ns>/<hostname>"
// service names); from DiffAuthorizations, istio.security.Authorization
// names ("<ns>/<name>"); from DiffWaypointPolicies, WaypointPolicy names
// ("<ns>/<name>").
type Changes struct {
	// Updated were added or changed; send them again.
	Updated []string
	// Removed are gone; send them as removed resources.
	Removed []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Updated) == 0 && len(c.Removed) == 0 }

// Diff compares the istio.workload.Address resources (Workloads and
// Services) of two Views by proto equality. A nil View is empty. Both lists
// are sorted.
func Diff(old, new *View) Changes {
	return diffResources(addressResources(old), addressResources(new))
}

// DiffAuthorizations compares the istio.security.Authorization resources
// of two Views by proto equality, like Diff. A policy that changes only
// which workloads it applies to changes those workloads' Address
// resources (authorization_policies), which Diff reports.
func DiffAuthorizations(old, new *View) Changes {
	return diffResources(authorizationResources(old), authorizationResources(new))
}

// DiffWaypointPolicies compares the WaypointPolicy resources of two Views
// by proto equality, like Diff.
func DiffWaypointPolicies(old, new *View) Changes {
	return diffResources(waypointPolicyResources(old), waypointPolicyResources(new))
}

func diffResources(before, after map[string]proto.Message) Changes {
	var c Changes
	for name, m := range after {
		if o, ok := before[name]; !ok || !proto.Equal(o, m) {
			c.Updated = append(c.Updated, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			c.Removed = append(c.Removed, name)
		}
	}
	slices.Sort(c.Updated)
	slices.Sort(c.Removed)
	return c
}

// addressResources indexes a View's Address resources by name.
func addressResources(v *View) map[string]proto.Message {
	out := map[string]proto.Message{}
	if v == nil {
		return out
	}
	for _, w := range v.Workloads {
		out[w.GetUid()] = w
	}
	for _, s := range v.Services {
		out[ServiceResourceName(s)] = s
	}
	return out
}

// authorizationResources indexes a View's Authorization resources by name.
func authorizationResources(v *View) map[string]proto.Message {
	out := map[string]proto.Message{}
	if v == nil {
		return out
	}
	for _, a := range v.Authorizations {
		out[AuthorizationResourceName(a)] = a
	}
	return out
}

// waypointPolicyResources indexes a View's WaypointPolicy resources by name.
func waypointPolicyResources(v *View) map[string]proto.Message {
	out := map[string]proto.Message{}
	if v == nil {
		return out
	}
	for _, p := range v.WaypointPolicies {
		out[p.ResourceName()] = p
	}
	return out
}
