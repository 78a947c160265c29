package waypoint

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
)

// covers reports whether the object in the cluster, have, already holds
// everything of want, an apply configuration: every field want sets has the
// same value in have. Fields only have sets (defaults filled in by the API
// server, labels and annotations added by others, status) do not matter:
// server-side apply would leave them alone too. Lists of objects are matched
// element by element in any order (they are keyed lists — containers, ports,
// env, volumes — where others may add elements); lists of scalars are
// atomic and must be equal. When covers is true, applying want would change
// nothing, so the write is skipped.
func covers(have, want any) (bool, error) {
	path, err := uncovered(have, want)
	return path == "", err
}

// uncovered is covers that says where: the path of the first field of want
// that have lacks or holds differently ("" when none).
func uncovered(have, want any) (string, error) {
	h, err := generic(have)
	if err != nil {
		return "", err
	}
	w, err := generic(want)
	if err != nil {
		return "", err
	}
	if wm, ok := w.(map[string]any); ok {
		// Type information is not kept by informers; it is not ours to compare.
		delete(wm, "apiVersion")
		delete(wm, "kind")
	}
	return missing(h, w, ""), nil
}

// generic turns a typed object into maps, slices and scalars, the way it
// is sent over the wire.
func generic(obj any) (any, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", obj, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode %T: %w", obj, err)
	}
	return out, nil
}

// missing returns the path of the first part of want that have does not
// hold, or "".
func missing(have, want any, path string) string {
	switch w := want.(type) {
	case nil:
		return ""
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			if len(w) == 0 && have == nil {
				return ""
			}
			return path
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			if p := missing(h[k], w[k], path+"."+k); p != "" {
				return p
			}
		}
		return ""
	case []any:
		h, _ := have.([]any)
		if len(w) > 0 && isObjectList(w) {
			for i, we := range w {
				if !slices.ContainsFunc(h, func(he any) bool { return missing(he, we, "") == "" }) {
					return fmt.Sprintf("%s[%d]", path, i)
				}
			}
			return ""
		}
		if reflect.DeepEqual(h, w) || (len(w) == 0 && len(h) == 0) {
			return ""
		}
		return path
	default:
		if reflect.DeepEqual(have, want) {
			return ""
		}
		return path
	}
}

func isObjectList(l []any) bool {
	for _, e := range l {
		if _, ok := e.(map[string]any); !ok {
			return false
		}
	}
	return true
}
