package images

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
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
// there is one, and waits for the CRI plugin to see it under the image ID
// Build reported. The image's binary is random, so no other image shares
// its ID, and the test removes both its tag and the ID reference after.
func TestImport(t *testing.T) {
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("ctr is not on PATH (Debian's containerd package); the e2e tests cover importing")
	}
	if fi, err := os.Stat(DefaultContainerdAddress); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Skipf("no containerd at %s (`make cluster-up` starts one); the e2e tests cover importing", DefaultContainerdAddress)
	}
	ctrCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // t.Context() is done in Cleanup
		defer cancel()
		out, err := exec.CommandContext(ctx, ctr, append([]string{"--address", DefaultContainerdAddress, "-n", DefaultNamespace}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	refs := func() []string {
		out, err := ctrCmd("images", "list", "-q")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(out)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "binary")
	if err := os.WriteFile(bin, []byte(rand.Text()), 0o755); err != nil {
		t.Fatal(err)
	}
	row := Image{Name: "import-test", Tool: "binary"}
	ref := "localhost/ambientlite-test/import-test:" + strings.ToLower(rand.Text()[:10])
	b, err := buildOne(row, map[string]string{row.BinaryPath(): bin}, ref, ref, filepath.Join(dir, "import-test.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Import(t.Context(), b.Tarball); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// ctr images rm exits 0 for a name it does not have.
		if _, err := ctrCmd("images", "rm", "--sync", b.Ref, b.ID); err != nil {
			t.Error(err)
		}
	})
	if got := refs(); !slices.Contains(got, b.Ref) {
		t.Fatalf("containerd has no image %s after Import; it has %q", b.Ref, got)
	}
	if _, err := ctrCmd("images", "check", "name=="+b.Ref); err != nil {
		t.Error(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !slices.Contains(refs(), b.ID); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the CRI plugin never listed image ID %s", b.ID)
		}
	}

	// ctr's complaint reaches the caller.
	bogus := filepath.Join(dir, "bogus.tar")
	if err := os.WriteFile(bogus, []byte("not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Import(t.Context(), bogus); err == nil || !strings.Contains(err.Error(), "\nctr: ") {
		t.Errorf("Import of a bad archive: error = %v, want one with ctr's output", err)
	}
}
