package meshecho

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStderr string // a substring of stderr
	}{
		{name: "no command", args: nil, wantStderr: "Usage:\n  meshecho server"},
		{name: "unknown command", args: []string{"serve"}, wantStderr: `unknown command "serve"`},
		{name: "help for unknown command", args: []string{"help", "nope"}, wantStderr: `unknown command "nope"`},
		{name: "server unknown flag", args: []string{"server", "--bogus"}, wantStderr: "flag provided but not defined: -bogus"},
		{name: "server bad number", args: []string{"server", "--fail-rate", "lots"}, wantStderr: `invalid value "lots" for flag -fail-rate`},
		{name: "server fail rate out of range", args: []string{"server", "--fail-rate", "2"}, wantStderr: "fail rate 2: want a fraction from 0 to 1"},
		{name: "server fail code", args: []string{"server", "--fail-code", "42"}, wantStderr: "fail code 42: want an HTTP status from 200 to 599"},
		{name: "server http port 0", args: []string{"server", "--http-port", "0"}, wantStderr: "--http-port 0: want a port from 1 to 65535"},
		{name: "server port too big", args: []string{"server", "--tcp-port", "70000"}, wantStderr: "--tcp-port 70000: want a port from 0 to 65535"},
		{name: "server bad call", args: []string{"server", "--call", "ratings:9080"}, wantStderr: `upstream call "ratings:9080": want an http:// or https:// URL`},
		{name: "server bad log level", args: []string{"server", "--log-level", "loud"}, wantStderr: `invalid value "loud" for flag -log-level`},
		{name: "server argument", args: []string{"server", "extra"}, wantStderr: `unexpected argument "extra"`},
		{name: "client without URL", args: []string{"client", "-n", "3"}, wantStderr: "missing URL"},
		{name: "client two URLs", args: []string{"client", "http://a:1", "http://b:1"}, wantStderr: `unexpected argument "http://b:1" after the URL`},
		{name: "client scheme", args: []string{"client", "ftp://a:1"}, wantStderr: `unsupported scheme "ftp"`},
		{name: "client without port", args: []string{"client", "http://a/"}, wantStderr: "want host:port after http://"},
		{name: "client bad header", args: []string{"client", "-H", "NoColon", "http://a:1"}, wantStderr: `header "NoColon": want "Name: value"`},
		{name: "client zero count", args: []string{"client", "-n", "0", "http://a:1"}, wantStderr: "-n 0: want at least 1"},
		{name: "client zero concurrency", args: []string{"client", "-c", "0", "http://a:1"}, wantStderr: "--concurrency 0: want at least 1"},
		{name: "client output", args: []string{"client", "-o", "yaml", "http://a:1"}, wantStderr: `-o "yaml": want text or json`},
		{name: "client timeout", args: []string{"client", "--timeout", "0s", "http://a:1"}, wantStderr: "--timeout 0s: want a positive duration"},
		{name: "client expect-status on tcp", args: []string{"client", "--expect-status", "200", "tcp://a:1"}, wantStderr: "--expect-status does not apply to tcp://"},
		{name: "client unknown flag", args: []string{"client", "--retries", "3", "http://a:1"}, wantStderr: "flag provided but not defined: -retries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCLI(t, tc.args...)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("Run = %v, want a usage error", err)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
			if !strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr lacks the usage text:\n%s", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStdout string // prefix
		wantStderr string // prefix
	}{
		{name: "help", args: []string{"help"}, wantStdout: "meshecho: echo server and load client"},
		{name: "help server", args: []string{"help", "server"}, wantStdout: "Usage: meshecho server [flags]"},
		{name: "help client", args: []string{"help", "client"}, wantStdout: "Usage: meshecho client [flags] URL"},
		{name: "server -h", args: []string{"server", "-h"}, wantStderr: "Usage: meshecho server [flags]"},
		{name: "client --help", args: []string{"client", "--help"}, wantStderr: "Usage: meshecho client [flags] URL"},
		{name: "version", args: []string{"version"}, wantStdout: "meshecho "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCLI(t, tc.args...)
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
			if !strings.HasPrefix(stdout, tc.wantStdout) || (tc.wantStdout == "" && stdout != "") {
				t.Errorf("stdout = %q, want it to start with %q", stdout, tc.wantStdout)
			}
			if !strings.HasPrefix(stderr, tc.wantStderr) || (tc.wantStderr == "" && stderr != "") {
				t.Errorf("stderr = %q, want it to start with %q", stderr, tc.wantStderr)
			}
		})
	}
}

// TestUsageListsEveryFlag keeps the hand-written usage texts in step with
// the flags defined.
func TestUsageListsEveryFlag(t *testing.T) {
	t.Parallel()
	var so serverOptions
	var co clientOptions
	for _, tc := range []struct {
		name  string
		fs    *flag.FlagSet
		usage string
	}{
		{"server", so.flagSet(io.Discard), serverUsage},
		{"client", co.flagSet(io.Discard), clientUsage},
	} {
		tc.fs.VisitAll(func(f *flag.Flag) {
			dash := "--"
			if len(f.Name) == 1 {
				dash = "-"
			}
			if !strings.Contains(tc.usage, "  "+dash+f.Name+" ") && !strings.Contains(tc.usage, "  "+dash+f.Name+",") &&
				!strings.Contains(tc.usage, ", "+dash+f.Name+" ") {
				t.Errorf("%s usage does not document %s%s", tc.name, dash, f.Name)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		args           []string
		wantPositional []string
		wantN          int
	}{
		{name: "flags first", args: []string{"-n", "3", "u"}, wantPositional: []string{"u"}, wantN: 3},
		{name: "flags after", args: []string{"u", "-n", "3"}, wantPositional: []string{"u"}, wantN: 3},
		{name: "interleaved", args: []string{"a", "-n", "2", "b"}, wantPositional: []string{"a", "b"}, wantN: 2},
		{name: "double dash ends flags", args: []string{"a", "--", "-n", "5"}, wantPositional: []string{"a", "-n", "5"}, wantN: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			n := fs.Int("n", 1, "")
			got, err := parseFlags(fs, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantPositional, got); diff != "" {
				t.Errorf("positional arguments (-want +got):\n%s", diff)
			}
			if *n != tc.wantN {
				t.Errorf("-n = %d, want %d", *n, tc.wantN)
			}
		})
	}
}
