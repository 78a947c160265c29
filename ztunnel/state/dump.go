package state

import (
	"cmp"
	"maps"
	"slices"
)

// Snapshot is the store's content for the admin /config_dump, in the JSON
// shape of ztunnel's dump (src/state.rs, ProxyState's Serialize), which
// istioctl ztunnel-config reads: workloads by uid, services by key with
// their endpoints, policies by name.
type Snapshot struct {
	Workloads []*Workload    `json:"workloads"`
	Services  []ServiceState `json:"services"`
	Policies  []*Policy      `json:"policies"`
}

// ServiceState is a service and its endpoints.
type ServiceState struct {
	*Service
	// Endpoints by workload uid, healthy or not.
	Endpoints map[string]EndpointState `json:"endpoints"`
}

// EndpointState is one endpoint of a service, as ztunnel dumps it.
type EndpointState struct {
	WorkloadUID string       `json:"workloadUid"`
	Service     string       `json:"service"`
	Port        Ports        `json:"port"`
	Status      HealthStatus `json:"status"`
}

// Snapshot returns the current content. It shares the store's (read-only)
// workloads, services and policies; marshal it with encoding/json.
func (s *Store) Snapshot() *Snapshot {
	v := s.cur.Load()
	out := &Snapshot{
		Workloads: slices.SortedFunc(maps.Values(v.workloads), func(a, b *Workload) int { return cmp.Compare(a.UID, b.UID) }),
		Services:  []ServiceState{},
		Policies:  []*Policy{},
	}
	if out.Workloads == nil {
		out.Workloads = []*Workload{}
	}
	for _, key := range slices.Sorted(maps.Keys(v.services)) {
		st := ServiceState{Service: v.services[key], Endpoints: map[string]EndpointState{}}
		if set := v.endpoints[key]; set != nil {
			for _, ep := range set.all {
				st.Endpoints[ep.Workload.UID] = EndpointState{
					WorkloadUID: ep.Workload.UID, Service: key, Port: ep.Ports, Status: ep.Workload.Status,
				}
			}
		}
		out.Services = append(out.Services, st)
	}
	for _, name := range slices.Sorted(maps.Keys(v.policies)) {
		out.Policies = append(out.Policies, v.policies[name])
	}
	return out
}
