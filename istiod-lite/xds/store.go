package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TypeURLPrefix is the prefix of every xDS type URL.
const TypeURLPrefix = "type.googleapis.com/"

// Istio's ambient resource types, as ztunnel subscribes to them
// (ztunnel src/xds/types.rs ADDRESS_TYPE, AUTHORIZATION_TYPE).
const (
	AddressType       = TypeURLPrefix + "istio.workload.Address"
	AuthorizationType = TypeURLPrefix + "istio.security.Authorization"
)

// Resource is one named resource as it is sent: the message packed in an
// Any and its version, a hash of the content.
type Resource struct {
	Name    string
	Version string
	Any     *anypb.Any
}

// typeSnapshot is the immutable state of one type: it is replaced, never
// modified, so readers may keep it without a lock.
type typeSnapshot struct {
	resources map[string]Resource
	// changedAt is when the last change to this type was stored.
	changedAt time.Time
}

// Store holds the resources served, per type URL. It is safe for concurrent
// use. Every change bumps the store generation and wakes the streams. The
// zero value is not usable; use NewStore.
type Store struct {
	now func() time.Time

	mu      sync.Mutex
	gen     uint64
	types   map[string]*typeSnapshot
	changed chan struct{} // closed on the next change, then replaced
}

// NewStore returns an empty store. now is the clock used to time pushes;
// nil means time.Now.
func NewStore(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{now: now, types: map[string]*typeSnapshot{}, changed: make(chan struct{})}
}

// Set replaces every resource of typeURL with resources (name → message).
// Every message must be of typeURL's type.
func (s *Store) Set(typeURL string, resources map[string]proto.Message) error {
	packed, err := pack(typeURL, resources)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.types[typeURL]
	if old != nil && sameResources(old.resources, packed) {
		return nil
	}
	s.commitLocked(typeURL, packed)
	return nil
}

// Update upserts and removes resources of typeURL, leaving the others as
// they are. Removing a name that does not exist is not an error. A call
// that changes nothing (same content, absent removals) does not bump the
// generation.
func (s *Store) Update(typeURL string, upserts map[string]proto.Message, removals []string) error {
	packed, err := pack(typeURL, upserts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur map[string]Resource
	if old := s.types[typeURL]; old != nil {
		cur = old.resources
	}
	changed := false
	for n, r := range packed {
		if o, ok := cur[n]; !ok || o.Version != r.Version {
			changed = true
			break
		}
	}
	for _, n := range removals {
		if _, ok := cur[n]; ok {
			changed = true
			break
		}
	}
	if !changed {
		return nil
	}
	next := make(map[string]Resource, len(cur)+len(packed))
	maps.Copy(next, cur)
	for _, n := range removals {
		delete(next, n)
	}
	maps.Copy(next, packed)
	s.commitLocked(typeURL, next)
	return nil
}

func (s *Store) commitLocked(typeURL string, resources map[string]Resource) {
	s.gen++
	s.types[typeURL] = &typeSnapshot{resources: resources, changedAt: s.now()}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Generation is the number of changes stored so far.
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Get returns one resource.
func (s *Store) Get(typeURL, name string) (Resource, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.types[typeURL]
	if t == nil {
		return Resource{}, false
	}
	r, ok := t.resources[name]
	return r, ok
}

// Len is the number of resources of typeURL.
func (s *Store) Len(typeURL string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.types[typeURL]; t != nil {
		return len(t.resources)
	}
	return 0
}

// watch returns the current generation, a channel closed on the next
// change, and the current snapshot of every type (shared, read-only).
func (s *Store) watch() (uint64, <-chan struct{}, map[string]*typeSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.changed, maps.Clone(s.types)
}

// changes returns a channel closed on the next change.
func (s *Store) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func sameResources(a, b map[string]Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for n, r := range a {
		if o, ok := b[n]; !ok || o.Version != r.Version {
			return false
		}
	}
	return true
}

func pack(typeURL string, msgs map[string]proto.Message) (map[string]Resource, error) {
	out := make(map[string]Resource, len(msgs))
	for name, m := range msgs {
		r, err := newResource(typeURL, name, m)
		if err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// newResource packs m and computes its version: the first 128 bits of the
// SHA-256 of its deterministic encoding, so identical content always has
// the same version, across restarts and replicas.
func newResource(typeURL, name string, m proto.Message) (Resource, error) {
	if name == "" {
		return Resource{}, fmt.Errorf("xds: resource of type %s has no name", typeURL)
	}
	if m == nil {
		return Resource{}, fmt.Errorf("xds: resource %s/%s is nil", typeURL, name)
	}
	got := TypeURLPrefix + string(m.ProtoReflect().Descriptor().FullName())
	if got != typeURL {
		return Resource{}, fmt.Errorf("xds: resource %q is a %s, not a %s", name, got, typeURL)
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		return Resource{}, fmt.Errorf("xds: marshal %s/%s: %w", typeURL, name, err)
	}
	sum := sha256.Sum256(b)
	return Resource{
		Name:    name,
		Version: hex.EncodeToString(sum[:16]),
		Any:     &anypb.Any{TypeUrl: typeURL, Value: b},
	}, nil
}
