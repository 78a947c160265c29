package xds

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

func TestStoreVersionsAreContentHashes(t *testing.T) {
	a, b := NewStore(nil), NewStore(nil)
	// Map fields are encoded deterministically, so equal content hashes equal.
	for _, s := range []*Store{a, b} {
		if err := s.Set(AddressType, map[string]proto.Message{"w": workload("w", "10.0.0.1", 1)}); err != nil {
			t.Fatal(err)
		}
	}
	ra, _ := a.Get(AddressType, "w")
	rb, _ := b.Get(AddressType, "w")
	if ra.Version == "" || ra.Version != rb.Version {
		t.Errorf("versions %q and %q, want equal and set", ra.Version, rb.Version)
	}
	if err := a.Update(AddressType, map[string]proto.Message{"w": workload("w", "10.0.0.1", 2)}, nil); err != nil {
		t.Fatal(err)
	}
	if rc, _ := a.Get(AddressType, "w"); rc.Version == ra.Version {
		t.Error("changed content kept its version")
	}
	var back workloadapi.Address
	if err := ra.Any.UnmarshalTo(&back); err != nil || ra.Any.TypeUrl != AddressType {
		t.Errorf("Any %s does not unpack: %v", ra.Any.TypeUrl, err)
	}
}

func TestStoreGeneration(t *testing.T) {
	s := NewStore(nil)
	w := map[string]proto.Message{"w": workload("w", "10.0.0.1", 1)}
	steps := []struct {
		name string
		do   func() error
		bump bool
	}{
		{"first set", func() error { return s.Set(AddressType, w) }, true},
		{"same set", func() error { return s.Set(AddressType, w) }, false},
		{"same upsert", func() error { return s.Update(AddressType, w, nil) }, false},
		{"remove absent", func() error { return s.Update(AddressType, nil, []string{"x"}) }, false},
		{"remove", func() error { return s.Update(AddressType, nil, []string{"w"}) }, true},
		{"other type", func() error {
			return s.Update(AuthorizationType, map[string]proto.Message{"p": &security.Authorization{Name: "p"}}, nil)
		}, true},
	}
	for _, st := range steps {
		before := s.Generation()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if bumped := s.Generation() != before; bumped != st.bump {
			t.Errorf("%s: generation bumped %v, want %v", st.name, bumped, st.bump)
		}
	}
	if diff := cmp.Diff([]int{0, 1}, []int{s.Len(AddressType), s.Len(AuthorizationType)}); diff != "" {
		t.Errorf("lengths (-want +got):\n%s", diff)
	}
}

func TestStoreRejectsBadResources(t *testing.T) {
	s := NewStore(nil)
	for name, tc := range map[string]struct {
		typeURL string
		res     map[string]proto.Message
		want    string
	}{
		"wrong type": {AuthorizationType, map[string]proto.Message{"w": workload("w", "10.0.0.1", 1)}, "is a type.googleapis.com/istio.workload.Address"},
		"no name":    {AddressType, map[string]proto.Message{"": workload("w", "10.0.0.1", 1)}, "no name"},
		"nil":        {AddressType, map[string]proto.Message{"w": nil}, "is nil"},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.Set(tc.typeURL, tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if g := s.Generation(); g != 0 {
		t.Errorf("generation %d after refused sets, want 0", g)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Store: NewStore(nil), Authenticator: tokenAuth{}}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"defaults":          {func(*Config) {}, ""},
		"no store":          {func(c *Config) { c.Store = nil }, "Store is required"},
		"no authenticator":  {func(c *Config) { c.Authenticator = nil }, "Authenticator is required"},
		"negative":          {func(c *Config) { c.Debounce = -1 }, "negative"},
		"max below window":  {func(c *Config) { c.Debounce, c.DebounceMax = 200e6, 100e6 }, "less than Debounce"},
		"long window grows": {func(c *Config) { c.Debounce = 2e9 }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mut(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
