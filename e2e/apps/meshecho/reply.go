package meshecho

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// headerLines renders h as "Name: value" lines, one per value, sorted by
// name (values keep their order).
func headerLines(h http.Header) []string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	var lines []string
	for _, k := range names {
		for _, v := range h[k] {
			lines = append(lines, fmt.Sprintf("%s: %s", k, v))
		}
	}
	return lines
}

// replyFields returns the top-level Key=Value lines of an echo body; lines of
// upstream replies (indented) are skipped. A repeated key keeps its first
// value.
func replyFields(body string) map[string]string {
	fields := make(map[string]string)
	for l := range strings.SplitSeq(body, "\n") {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSuffix(l, "\r"), "=")
		if !ok {
			continue
		}
		if _, dup := fields[k]; !dup {
			fields[k] = v
		}
	}
	return fields
}

// parseBanner reads the TCP banner "ServiceVersion=<v> Hostname=<name>".
func parseBanner(line string) (version, hostname string, err error) {
	fields := make(map[string]string)
	for f := range strings.FieldsSeq(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	version, vok := fields["ServiceVersion"]
	hostname, hok := fields["Hostname"]
	if !vok || !hok {
		return "", "", fmt.Errorf("unexpected banner %q: want ServiceVersion=<v> Hostname=<name>", strings.TrimSpace(line))
	}
	return version, hostname, nil
}
