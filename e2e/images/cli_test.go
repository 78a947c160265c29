package images

import (
	"bytes"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestRunUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantErrHas string // in stderr, before the usage text
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"argument", []string{"pause"}, `unexpected argument "pause"`},
		{"load and push", []string{"--load", "--push", "registry.example/mesh"}, "--load and --push exclude each other"},
		{"unknown image", []string{"--only", "pause,nope"}, `unknown image "nope" (known: ` + strings.Join(Names(), ", ") + `)`},
		{"bad tag", []string{"--tag", "not a tag"}, `tag "not a tag" do not make an image reference`},
		{"bad push prefix", []string{"--push", "Registry/UPPER"}, `prefix "Registry/UPPER"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(t.Context(), tc.args, &stdout, &stderr)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("Run(%q) = %v, want ErrUsage", tc.args, err)
			}
			if !strings.Contains(stderr.String(), tc.wantErrHas) || !strings.Contains(stderr.String(), "usage: images") {
				t.Errorf("stderr lacks %q and the usage:\n%s", tc.wantErrHas, stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := Run(t.Context(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"usage: images", "images: " + strings.Join(Names(), ", "), "  echo-advanced: registry.k8s.io/gateway-api/echo-advanced:v1.5.1\n", "-tools-dir", "-push REGISTRY/PREFIX"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestRunPush builds with the command and pushes to an in-process registry.
func TestRunPush(t *testing.T) {
	host := newRegistry(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := Run(t.Context(), []string{"--out", out, "--tag", "v1", "--push", host + "/mesh", "--only", " pause "}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Run: %v\nstderr:\n%s", err, stderr.String())
	}
	want := regexp.MustCompile(`(?m)^NAME +REFERENCE +DIGEST +IMAGE ID +SIZE +TARBALL\n` +
		`pause +` + regexp.QuoteMeta(host) + `/mesh/pause:v1 +sha256:[0-9a-f]{64} +[0-9a-f]{12} +[0-9.]+MiB +` + regexp.QuoteMeta(filepath.Join(out, "pause.tar")) + `\n` +
		`built 1 images in [0-9.]+m?s, pushed in [0-9.]+m?s\n\z`)
	if !want.MatchString(stdout.String()) {
		t.Errorf("stdout does not match %s:\n%s", want, stdout.String())
	}
}
