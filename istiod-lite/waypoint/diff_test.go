package waypoint

import "testing"

func TestMissing(t *testing.T) {
	tests := []struct {
		name       string
		have, want any
		path       string // "" = covered
	}{
		{"equal scalars", 1.0, 1.0, ""},
		{"different scalars", 1.0, 2.0, "."},
		{"extra fields in have", map[string]any{"a": "x", "b": "y"}, map[string]any{"a": "x"}, ""},
		{"missing field", map[string]any{"b": "y"}, map[string]any{"a": "x"}, "..a"},
		{"nested", map[string]any{"m": map[string]any{"l": "v", "other": "o"}}, map[string]any{"m": map[string]any{"l": "v"}}, ""},
		{"nested differs", map[string]any{"m": map[string]any{"l": "w"}}, map[string]any{"m": map[string]any{"l": "v"}}, "..m.l"},
		{"null in want is no wish", map[string]any{}, map[string]any{"a": nil}, ""},
		{"empty map in want, absent in have", map[string]any{}, map[string]any{"a": map[string]any{}}, ""},
		{
			"object list: defaults and extra elements in have, any order",
			[]any{map[string]any{"name": "x", "v": 1.0}, map[string]any{"name": "a", "v": 2.0, "default": true}},
			[]any{map[string]any{"name": "a", "v": 2.0}},
			"",
		},
		{"object list: element missing", []any{map[string]any{"name": "a"}}, []any{map[string]any{"name": "b"}}, ".[0]"},
		{"scalar list: atomic, equal", []any{"ALL"}, []any{"ALL"}, ""},
		{"scalar list: atomic, extra element differs", []any{"ALL", "NET_RAW"}, []any{"ALL"}, "."},
		{"scalar list: order matters", []any{"b", "a"}, []any{"a", "b"}, "."},
	}
	for _, tt := range tests {
		if got := missing(tt.have, tt.want, "."); got != tt.path {
			t.Errorf("%s: missing = %q, want %q", tt.name, got, tt.path)
		}
	}
}

func TestRecent(t *testing.T) {
	var r recent
	// Created: until the informer has it, our copy stands in.
	r.remember("Service", "ns", "wp", "", "ours")
	if got, ok := r.fresher("Service", "ns", "wp", false, ""); !ok || got != "ours" {
		t.Fatalf("fresh create not used: %v %v", got, ok)
	}
	if _, ok := r.fresher("Service", "ns", "wp", true, "7"); ok {
		t.Fatal("record used although the informer has the object")
	}
	// Updated over version 7: the informer at 7 is stale, at 8 it is not.
	r.remember("Service", "ns", "wp", "7", "ours")
	if _, ok := r.fresher("Service", "ns", "wp", true, "7"); !ok {
		t.Fatal("stale informer copy preferred over our write")
	}
	r.observe("Service", "ns", "wp", "8", false)
	if _, ok := r.fresher("Service", "ns", "wp", true, "7"); ok {
		t.Fatal("record kept after the informer moved on")
	}
	// A deletion seen by the informer ends a create record.
	r.remember("Service", "ns", "wp", "", "ours")
	r.observe("Service", "ns", "wp", "9", true)
	if _, ok := r.fresher("Service", "ns", "wp", false, ""); ok {
		t.Fatal("record of a deleted object used")
	}
	// Fakes keep no resource versions: "" is never "unchanged".
	r.remember("Service", "ns", "wp", "", "ours")
	if _, ok := r.fresher("Service", "ns", "wp", true, ""); ok {
		t.Fatal("empty resourceVersion taken as unchanged")
	}
	r.remember("Deployment", "ns", "wp", "3", "ours")
	r.forget("ns", "wp")
	if _, ok := r.fresher("Deployment", "ns", "wp", true, "3"); ok {
		t.Fatal("forget kept a record")
	}
}

// Two writes before the informer shows the first: both older versions are
// stale, and the informer's arrival at the first write does not bring back
// the older copy.
func TestRecentWritesInSuccession(t *testing.T) {
	var r recent
	r.remember("Deployment", "ns", "wp", "1", "v2")
	r.remember("Deployment", "ns", "wp", "2", "v3")
	for _, rv := range []string{"1", "2"} {
		if got, ok := r.fresher("Deployment", "ns", "wp", true, rv); !ok || got != "v3" {
			t.Errorf("informer at %s: got %v %v, want our v3", rv, got, ok)
		}
	}
	r.observe("Deployment", "ns", "wp", "2", false)
	if _, ok := r.fresher("Deployment", "ns", "wp", true, "2"); !ok {
		t.Error("informer at the first of two writes taken as fresh")
	}
	r.observe("Deployment", "ns", "wp", "3", false)
	if _, ok := r.fresher("Deployment", "ns", "wp", true, "3"); ok {
		t.Error("record kept after the informer caught up")
	}
}
