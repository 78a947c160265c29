package images

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestImportErrors(t *testing.T) {
	// A real socket nobody will talk to: Import must fail before using it.
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	for _, tc := range []struct {
		name       string
		path       string // PATH; "" leaves it alone
		address    string
		wantErrHas string
	}{
		{"no socket", "", filepath.Join(t.TempDir(), "none.sock"), "containerd is not running at "},
		{"not a socket", "", t.TempDir(), "run `make cluster-up` first"},
		{"no ctr", t.TempDir(), sock, "ctr is not on PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path != "" {
				t.Setenv("PATH", tc.path)
			}
			err := Import(t.Context(), "image.tar", WithAddress(tc.address))
			if !errors.Is(err, ErrNoContainerd) || !strings.Contains(err.Error(), tc.wantErrHas) {
				t.Errorf("Import error = %v, want ErrNoContainerd containing %q", err, tc.wantErrHas)
			}
		})
	}
}

// TestImport imports an image into the local cluster's containerd, when
// there is one, under a tag of its own that it removes afterwards.
func TestImport(t *testing.T) {
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("ctr is not on PATH (Debian's containerd package); the e2e tests cover importing")
	}
	if fi, err := os.Stat(DefaultContainerdAddress); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Skipf("no containerd at %s (`make cluster-up` starts one); the e2e tests cover importing", DefaultContainerdAddress)
	}
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	tag := "test-" + rand.Text()[:10]
	built, err := Build(t.Context(), Options{ModuleRoot: root, OutDir: t.TempDir(), Prefix: "localhost/ambientlite-test", Tag: strings.ToLower(tag), Names: []string{"pause"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ref := built[0].Ref
	ctrCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // t.Context() is done in Cleanup
		defer cancel()
		out, err := exec.CommandContext(ctx, ctr, append([]string{"--address", DefaultContainerdAddress, "-n", DefaultNamespace}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	if err := Import(t.Context(), built[0].Tarball); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := ctrCmd("images", "rm", "--sync", ref); err != nil {
			t.Error(err)
		}
	})
	out, err := ctrCmd("images", "list", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(out), ref) {
		t.Errorf("containerd has no image %s after Import; it has:\n%s", ref, out)
	}
	if _, err := ctrCmd("images", "check", "name=="+ref); err != nil {
		t.Error(err)
	}

	// ctr's complaint reaches the caller.
	bogus := filepath.Join(t.TempDir(), "bogus.tar")
	if err := os.WriteFile(bogus, []byte("not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Import(t.Context(), bogus); err == nil || !strings.Contains(err.Error(), "\nctr: ") {
		t.Errorf("Import of a bad archive: error = %v, want one with ctr's output", err)
	}
}
