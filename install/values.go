package install

import (
	"fmt"

	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Values are chart values, shaped as values.yaml: nested maps. The zero
// value (nil) means the defaults.
type Values map[string]any

// Set merges one --set assignment in Helm's syntax ("a.b=c,d.e[0]=f") into
// v. Values that look like numbers or booleans become numbers or booleans,
// as with helm --set; SetString keeps them strings.
func (v Values) Set(assignment string) error {
	if err := strvals.ParseInto(assignment, v); err != nil {
		return fmt.Errorf("--set %s: %w", assignment, err)
	}
	return nil
}

// SetString is Set with every value kept a string (helm --set-string).
func (v Values) SetString(assignment string) error {
	if err := strvals.ParseIntoString(assignment, v); err != nil {
		return fmt.Errorf("--set-string %s: %w", assignment, err)
	}
	return nil
}

// MergeYAML merges a values file into v: maps merge key by key, anything
// else in data replaces what v holds (helm -f).
func (v Values) MergeYAML(data []byte) error {
	var in map[string]any
	if err := yaml.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("values file: %w", err)
	}
	merge(v, in)
	return nil
}

func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// clone copies v deeply enough that rendering never changes the caller's
// maps (Helm's coalescing writes into the values it is given).
func (v Values) clone() map[string]any {
	out := make(map[string]any, len(v))
	for k, val := range v {
		if m, ok := val.(map[string]any); ok {
			out[k] = Values(m).clone()
			continue
		}
		out[k] = val
	}
	return out
}

// Defaults returns the chart's values.yaml, parsed.
func Defaults() (Values, error) {
	b, err := ChartFile("values.yaml")
	if err != nil {
		return nil, err
	}
	v := Values{}
	if err := v.MergeYAML(b); err != nil {
		return nil, err
	}
	return v, nil
}
