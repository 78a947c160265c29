package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// file is what the tests check of a file in an image.
type file struct {
	Name     string
	Mode     string // fs.FileMode.String()
	UID, GID int
	Body     string // for small files; binaries are checked apart
}

// baseFiles are the files every image holds besides its binary.
var baseFiles = []file{
	{Name: "etc/", Mode: "drwxr-xr-x"},
	{Name: "etc/group", Mode: "-rw-r--r--", Body: etcGroup},
	{Name: "etc/nsswitch.conf", Mode: "-rw-r--r--", Body: "hosts: files dns\n"},
	{Name: "etc/passwd", Mode: "-rw-r--r--", Body: etcPasswd},
	{Name: "tmp/", Mode: "dtrwxrwxrwx"},
}

// readImage reads a tarball back and returns the image, its files (with
// the body of files over 4 KiB left out) and the body of binPath.
func readImage(t *testing.T, tarPath, binPath string) (v1.Image, []file, []byte) {
	t.Helper()
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatalf("read %s: %v", tarPath, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files []file
	var bin []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", hdr.Name, hdr.ModTime, epoch)
		}
		f := file{Name: hdr.Name, Mode: hdr.FileInfo().Mode().String(), UID: hdr.Uid, GID: hdr.Gid}
		if len(body) <= 4096 {
			f.Body = string(body)
		}
		if "/"+hdr.Name == binPath {
			bin = body
		}
		files = append(files, f)
	}
	return img, files, bin
}

func configOf(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// TestBuildPause compiles ./e2e/cmd/pause into its image, reads the tarball
// back and checks the image; a second build gives the same digest.
func TestBuildPause(t *testing.T) {
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ModuleRoot: root, OutDir: t.TempDir(), Tag: "test", Names: []string{"pause"}, Logger: slog.New(slog.DiscardHandler)}
	built, err := Build(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 {
		t.Fatalf("built %d images, want 1", len(built))
	}
	b := built[0]
	fi, err := os.Stat(b.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	wantBuilt := Built{Name: "pause", Ref: "localhost/ambientlite/pause:test", Digest: b.Digest, ID: b.ID, Size: fi.Size(), Tarball: filepath.Join(opts.OutDir, "pause.tar")}
	if diff := cmp.Diff(wantBuilt, b); diff != "" {
		t.Errorf("Built (-want +got):\n%s", diff)
	}

	img, files, bin := readImage(t, b.Tarball, "/pause")
	if d, err := img.Digest(); err != nil || d.String() != b.Digest {
		t.Errorf("digest read back = %v, %v; Build said %s", d, err, b.Digest)
	}
	if id, err := img.ConfigName(); err != nil || id.String() != b.ID {
		t.Errorf("config digest read back = %v, %v; Build said %s", id, err, b.ID)
	}
	wantFiles := append(append([]file{}, baseFiles[:4]...), file{Name: "pause", Mode: "-rwxr-xr-x"}, baseFiles[4])
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		t.Errorf("/pause is not an ELF binary")
	}

	cf := configOf(t, img)
	got := v1.ConfigFile{Architecture: cf.Architecture, OS: cf.OS, Created: cf.Created, RootFS: v1.RootFS{Type: cf.RootFS.Type}, Config: cf.Config}
	want := v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/pause"},
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			Labels:     map[string]string{"org.opencontainers.image.source": "github.com/ambientlite/mesh"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	again, err := Build(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Digest != b.Digest {
		t.Errorf("second build: digest %s, first %s: the build is not deterministic", again[0].Digest, b.Digest)
	}
}

// TestBuildTool wraps a prebuilt binary from the tools dir.
func TestBuildTool(t *testing.T) {
	tools := t.TempDir()
	binary := []byte("\x7fELF not really coredns")
	if err := os.WriteFile(filepath.Join(tools, "coredns"), binary, 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	built, err := Build(t.Context(), Options{ModuleRoot: root, ToolsDir: tools, OutDir: t.TempDir(), Prefix: "registry.example/mesh/", Names: []string{"coredns"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Ref != "registry.example/mesh/coredns:dev" {
		t.Fatalf("built %+v, want registry.example/mesh/coredns:dev", built)
	}
	img, files, bin := readImage(t, built[0].Tarball, "/coredns")
	wantFiles := append([]file{{Name: "coredns", Mode: "-rwxr-xr-x", Body: string(binary)}}, baseFiles...)
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if !bytes.Equal(bin, binary) {
		t.Errorf("/coredns differs from the tools dir's binary")
	}
	cf := configOf(t, img)
	got := []any{cf.Config.Entrypoint, cf.Config.ExposedPorts}
	want := []any{[]string{"/coredns"}, map[string]struct{}{"53/tcp": {}, "53/udp": {}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entrypoint and ports (-want +got):\n%s", diff)
	}
}

// TestNewImageDeterministic: the digest depends on the binary alone.
func TestNewImageDeterministic(t *testing.T) {
	row := Image{Name: "app", Package: "./cmd/app", Ports: []string{"80/tcp", "81/tcp"}, Env: []string{"A=1"}}
	digest := func(binary string) string {
		img, err := newImage(row, []byte(binary))
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	first := digest("one")
	if again := digest("one"); again != first {
		t.Errorf("same binary: digests %s and %s", first, again)
	}
	if other := digest("two"); other == first {
		t.Errorf("different binaries: same digest %s", first)
	}
}
