package waypoint

import (
	"sync"
	"time"
)

// recentTTL bounds how long a record is trusted: an informer that has not
// shown our write after this long has missed it (a relist), and the cache
// is believed again.
const recentTTL = 30 * time.Second

// recent remembers the objects the controller wrote until its informers
// have caught up with them. An informer delivers our own write a little
// after the write returns; a reconcile in between (another event for the
// same Gateway) would otherwise read the object as it was before, see a
// difference, and write again. client-go's mutation cache solves the same
// problem by comparing resource versions as integers, which the API does not
// promise; this compares them only for equality.
type recent struct {
	mu sync.Mutex
	m  map[recentKey]recentWrite
}

type recentKey struct{ kind, namespace, name string }

type recentWrite struct {
	// stale are the resourceVersions older than obj: the one our write
	// replaced and, after writes in quick succession, the ones before it
	// ("" stands for "no such object").
	stale map[string]bool
	obj   any
	at    time.Time
}

// remember records obj, just written over the version before.
func (r *recent) remember(kind, namespace, name, before string, obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[recentKey]recentWrite{}
	}
	k := recentKey{kind, namespace, name}
	stale := r.m[k].stale
	if stale == nil {
		stale = map[string]bool{}
	}
	stale[before] = true
	r.m[k] = recentWrite{stale: stale, obj: obj, at: time.Now()}
}

// observe is told of every informer event: once the informer shows a
// version that is not one our last write replaced (so ours, or a later
// one), or a deletion, the record has served its purpose.
func (r *recent) observe(kind, namespace, name, resourceVersion string, deleted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := recentKey{kind, namespace, name}
	if w, ok := r.m[k]; ok && (deleted || !w.stale[resourceVersion]) {
		delete(r.m, k)
	}
}

// fresher returns what we last wrote if the informer still shows a version
// that write replaced (found and resourceVersion describe the informer's
// copy). Otherwise the record is dropped. An empty resourceVersion (only
// fakes have them) is never taken for an old one.
func (r *recent) fresher(kind, namespace, name string, found bool, resourceVersion string) (any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := recentKey{kind, namespace, name}
	w, ok := r.m[k]
	if !ok {
		return nil, false
	}
	stale := (found && resourceVersion != "" && w.stale[resourceVersion]) || (!found && w.stale[""])
	if stale && time.Since(w.at) < recentTTL {
		return w.obj, true
	}
	delete(r.m, k)
	return nil, false
}

// forget drops every record of a Gateway's objects (the Gateway is gone).
func (r *recent) forget(namespace, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.m {
		if k.namespace == namespace && k.name == name {
			delete(r.m, k)
		}
	}
}
