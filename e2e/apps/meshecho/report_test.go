package meshecho

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReportCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		rep     Report
		expect  int
		wantErr string
	}{
		{name: "all ok", rep: Report{Requests: 2, OK: 2, Status: map[int]int{503: 2}}},
		{name: "expected status", rep: Report{Requests: 2, OK: 2, Status: map[int]int{200: 2}}, expect: 200},
		{name: "other status", rep: Report{Requests: 3, OK: 3, Status: map[int]int{200: 1, 503: 2}}, expect: 200,
			wantErr: "check failed: want status 200 for all 3 requests, got 503 (2 times)"},
		{name: "transport errors", rep: Report{Requests: 3, OK: 2, Errors: 1, Status: map[int]int{200: 2}}, expect: 200,
			wantErr: "check failed: 1 of 3 requests failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rep.Check(tc.expect)
			var got string
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrCheck) {
					t.Errorf("Check = %v, not ErrCheck", err)
				}
			}
			if got != tc.wantErr {
				t.Errorf("Check = %q, want %q", got, tc.wantErr)
			}
		})
	}
}

func TestReportWriteText(t *testing.T) {
	t.Parallel()
	rep := newReport()
	for _, res := range []result{
		{status: 200, hasStatus: true, version: "v2", hostname: "b"},
		{status: 14, hasStatus: true, err: errors.New("boom")},
		{status: 5, hasStatus: true, version: "v1", hostname: "a"},
		{err: errors.New("boom")},
		{status: 200, hasStatus: true, version: "v10", hostname: "c"},
	} {
		rep.add(res)
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `Requests: 5  OK: 3  Errors: 2
Status 5: 1
Status 14: 1
Status 200: 2
Version v1: 1
Version v10: 1
Version v2: 1
Hostname a: 1
Hostname b: 1
Hostname c: 1
Error boom: 2
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("text (-want +got):\n%s", diff)
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	remote := &net.TCPAddr{IP: net.IPv4(10, 96, 0, 12), Port: 9080}
	reset := func(localPort int) error {
		return fmt.Errorf("reading banner: %w", &net.OpError{Op: "read", Net: "tcp",
			Source: &net.TCPAddr{IP: net.IPv4(10, 244, 0, 7), Port: localPort}, Addr: remote, Err: errors.New("connection reset by peer")})
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "local port dropped", err: reset(41234), want: "reading banner: read tcp 10.96.0.12:9080: connection reset by peer"},
		{name: "same text for another port", err: reset(51000), want: "reading banner: read tcp 10.96.0.12:9080: connection reset by peer"},
		{name: "long message shortened", err: errors.New(strings.Repeat("x", 300)), want: strings.Repeat("x", maxErrorText-3) + "..."},
		{name: "one line", err: errors.New("a\nb"), want: "a b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorText(tc.err); got != tc.want {
				t.Errorf("errorText = %q, want %q", got, tc.want)
			}
		})
	}
}
