package install

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// splitDocs cuts a rendered file into its YAML documents, keeping each
// document's text (comments included) and parsing it. Documents holding only
// comments or whitespace are dropped.
func splitDocs(source, text string) ([]Doc, error) {
	var docs []Doc
	var cur strings.Builder
	flush := func() error {
		body := strings.TrimLeft(cur.String(), "\n")
		cur.Reset()
		var m map[string]any
		if err := yaml.Unmarshal([]byte(body), &m); err != nil {
			return fmt.Errorf("%s: document %d: %w", source, len(docs)+1, err)
		}
		if len(m) == 0 {
			return nil
		}
		obj := &unstructured.Unstructured{Object: m}
		if obj.GetAPIVersion() == "" || obj.GetKind() == "" || obj.GetName() == "" {
			return fmt.Errorf("%s: document %d has no apiVersion, kind or metadata.name", source, len(docs)+1)
		}
		body = strings.TrimRight(body, "\n") + "\n"
		docs = append(docs, Doc{Source: source, YAML: body, Object: obj})
		return nil
	}
	for line := range strings.Lines(text) {
		if isSeparator(line) {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur.WriteString(line)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

// isSeparator reports whether line is a YAML document separator: "---",
// optionally followed by spaces or a comment.
func isSeparator(line string) bool {
	rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "---")
	if !ok {
		return false
	}
	rest = strings.TrimSpace(rest)
	return rest == "" || strings.HasPrefix(rest, "#")
}
