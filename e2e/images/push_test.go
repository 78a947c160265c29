package images

import (
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// newRegistry starts an in-process registry and returns its host:port.
func newRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestPush pushes a built image to a registry and pulls it back.
func TestPush(t *testing.T) {
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	host := newRegistry(t)
	built, err := Build(t.Context(), Options{ModuleRoot: root, OutDir: t.TempDir(), Prefix: host + "/mesh", Names: []string{"pause"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	b := built[0]
	digest, err := Push(t.Context(), b.Tarball, b.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if digest != b.Digest {
		t.Errorf("Push returned digest %s, Build %s", digest, b.Digest)
	}

	ref, err := name.ParseReference(host + "/mesh/pause:dev")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cf := configOf(t, img)
	got := []any{d.String(), cf.Config.Entrypoint}
	if diff := cmp.Diff([]any{b.Digest, []string{"/pause"}}, got); diff != "" {
		t.Errorf("pulled image (-want +got):\n%s", diff)
	}
}

func TestPushErrors(t *testing.T) {
	host := newRegistry(t)
	for _, tc := range []struct {
		name, tarPath, ref, wantErrHas string
	}{
		{"bad reference", "x.tar", "Not A Ref", "push: "},
		{"no tarball", "/nonexistent/x.tar", host + "/mesh/x:dev", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Push(t.Context(), tc.tarPath, tc.ref)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
				t.Errorf("Push error = %v, want one containing %q", err, tc.wantErrHas)
			}
		})
	}
}
