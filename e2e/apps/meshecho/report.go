package meshecho

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/status"
)

// maxErrorText bounds an error message in the summary.
const maxErrorText = 200

// Report counts the outcomes of a client run. Counting is done by RunClient
// under a lock; a returned Report is not modified any more.
type Report struct {
	// Requests is the number of requests made: OK + Errors.
	Requests int `json:"requests"`
	// OK counts requests that succeeded at transport level: any HTTP status,
	// gRPC code OK, TCP banner read and echo matched.
	OK int `json:"ok"`
	// Errors counts the other requests.
	Errors int `json:"errors"`
	// Status counts replies by HTTP status or gRPC code (including non-OK
	// codes, which are also errors).
	Status map[int]int `json:"status"`
	// Versions counts replies by ServiceVersion.
	Versions map[string]int `json:"versions"`
	// Hostnames counts replies by Hostname.
	Hostnames map[string]int `json:"hostnames"`
	// ErrorMessages counts errors by their (shortened) message.
	ErrorMessages map[string]int `json:"errorMessages"`
	// Body is the first successful reply's body (HTTP body, gRPC fields as
	// Key=Value lines, or TCP banner and echo).
	Body string `json:"body,omitempty"`
}

func newReport() *Report {
	return &Report{
		Status:        map[int]int{},
		Versions:      map[string]int{},
		Hostnames:     map[string]int{},
		ErrorMessages: map[string]int{},
	}
}

func (r *Report) add(res result) {
	r.Requests++
	if res.err != nil {
		r.Errors++
		r.ErrorMessages[errorText(res.err)]++
	} else {
		r.OK++
		if r.Body == "" {
			r.Body = res.body
		}
	}
	if res.hasStatus {
		r.Status[res.status]++
	}
	if res.version != "" {
		r.Versions[res.version]++
	}
	if res.hostname != "" {
		r.Hostnames[res.hostname]++
	}
}

// ErrCheck marks a client run whose requests failed or whose statuses were
// not the expected one.
var ErrCheck = errors.New("check failed")

// Check returns an error wrapping ErrCheck if any request failed at
// transport level, or if expectStatus is not 0 and some reply had another
// status.
func (r *Report) Check(expectStatus int) error {
	if r.Errors > 0 {
		return fmt.Errorf("%w: %d of %d requests failed", ErrCheck, r.Errors, r.Requests)
	}
	if expectStatus == 0 {
		return nil
	}
	var other []string
	for _, st := range slices.Sorted(maps.Keys(r.Status)) {
		if st != expectStatus {
			other = append(other, fmt.Sprintf("%d (%d times)", st, r.Status[st]))
		}
	}
	if len(other) > 0 {
		return fmt.Errorf("%w: want status %d for all %d requests, got %s", ErrCheck, expectStatus, r.Requests, strings.Join(other, ", "))
	}
	return nil
}

// WriteText writes the summary: a totals line, then one line per status,
// version, hostname and error message, each group sorted by key.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Requests: %d  OK: %d  Errors: %d\n", r.Requests, r.OK, r.Errors)
	writeCounts(&b, "Status", r.Status)
	writeCounts(&b, "Version", r.Versions)
	writeCounts(&b, "Hostname", r.Hostnames)
	writeCounts(&b, "Error", r.ErrorMessages)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeCounts[K cmp.Ordered](b *strings.Builder, label string, counts map[K]int) {
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(b, "%s %v: %d\n", label, k, counts[k])
	}
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// errorText shortens an error so that equal failures group together:
// socket errors lose the local address (an ephemeral port), URL errors their
// "Get <url>" prefix, gRPC errors are "grpc <Code>: <message>".
func errorText(err error) string {
	var msg string
	if st, ok := status.FromError(err); ok {
		msg = fmt.Sprintf("grpc %s: %s", st.Code(), st.Message())
	} else {
		msg = err.Error()
		var ue *url.Error
		if errors.As(err, &ue) {
			msg = strings.Replace(msg, ue.Error(), ue.Err.Error(), 1)
		}
		var oe *net.OpError
		if errors.As(err, &oe) {
			msg = strings.Replace(msg, oe.Error(), opErrorText(oe), 1)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "timeout: " + msg
		}
	}
	msg = oneLine(msg)
	if r := []rune(msg); len(r) > maxErrorText {
		msg = string(r[:maxErrorText-3]) + "..."
	}
	return msg
}

// opErrorText is oe.Error() without the local address.
func opErrorText(oe *net.OpError) string {
	s := oe.Op + " " + oe.Net
	if oe.Addr != nil {
		s += " " + oe.Addr.String()
	}
	if oe.Err != nil {
		s += ": " + oe.Err.Error()
	}
	return s
}
