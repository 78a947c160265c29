package model

import (
	"slices"

	"google.golang.org/protobuf/proto"
)

// Changes lists istio.workload.Address resource names (workload uids and
// "<ns>/<hostname>" service names) that differ between two Views.
type Changes struct {
	// Updated were added or changed; send them again.
	Updated []string
	// Removed are gone; send them as removed resources.
	Removed []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Updated) == 0 && len(c.Removed) == 0 }

// Diff compares two Views by proto equality. A nil View is empty. Both lists
// are sorted.
func Diff(old, new *View) Changes {
	before, after := resources(old), resources(new)
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

// resources indexes a View by resource name.
func resources(v *View) map[string]proto.Message {
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
