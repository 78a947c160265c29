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
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
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
// the body of files over 4 KiB left out) and the body of every file, keyed
// by its absolute path.
func readImage(t *testing.T, tarPath string) (v1.Image, []file, map[string][]byte) {
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
	bodies := map[string][]byte{}
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
		if hdr.Typeflag == tar.TypeReg {
			bodies["/"+hdr.Name] = body
		}
		files = append(files, f)
	}
	return img, files, bodies
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
	wantBuilt := Built{Name: "pause", Ref: "localhost/ambientlite/pause:test", PushRef: "localhost/ambientlite/pause:test", Digest: b.Digest, ID: b.ID, Size: fi.Size(), Tarball: filepath.Join(opts.OutDir, "pause.tar")}
	if diff := cmp.Diff(wantBuilt, b); diff != "" {
		t.Errorf("Built (-want +got):\n%s", diff)
	}

	img, files, bodies := readImage(t, b.Tarball)
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
	if !bytes.HasPrefix(bodies["/pause"], []byte("\x7fELF")) {
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
	img, files, bodies := readImage(t, built[0].Tarball)
	wantFiles := append([]file{{Name: "coredns", Mode: "-rwxr-xr-x", Body: string(binary)}}, baseFiles...)
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if !bytes.Equal(bodies["/coredns"], binary) {
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
		img, err := newImage(row, map[string][]byte{row.BinaryPath(): []byte(binary)})
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

// TestBuildOneFixedRef wraps several binaries and files in an image with a
// fixed reference, as the echo-advanced row does, without compiling
// anything.
func TestBuildOneFixedRef(t *testing.T) {
	dir := t.TempDir()
	server, client := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	if err := os.WriteFile(server, []byte("\x7fELF server"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(client, []byte("\x7fELF client"), 0o755); err != nil {
		t.Fatal(err)
	}
	row := Image{
		Name:          "up",
		Ref:           "registry.example/upstream/up:v1.2.3",
		Tool:          "server",
		Path:          "/usr/local/bin/server",
		ExtraBinaries: []Binary{{Tool: "client", Path: "/usr/local/bin/client"}},
		Files:         []File{{Path: "/cert.crt", Contents: contents("cert")}, {Path: "/etc/up/key", Mode: 0o600, Contents: contents("key")}},
	}
	tarPath := filepath.Join(dir, "up.tar")
	bins := map[string]string{"/usr/local/bin/server": server, "/usr/local/bin/client": client}
	b, err := buildOne(row, bins, row.RefOrDefault("localhost/ambientlite", "dev"), "localhost/ambientlite/up:dev", tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if b.Ref != row.Ref || b.PushRef != "localhost/ambientlite/up:dev" {
		t.Errorf("Ref, PushRef = %s, %s; want %s, localhost/ambientlite/up:dev", b.Ref, b.PushRef, row.Ref)
	}
	// The tarball carries the fixed reference and no other.
	tag, err := name.NewTag(row.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tarball.ImageFromPath(tarPath, &tag); err != nil {
		t.Errorf("tarball has no image tagged %s: %v", tag, err)
	}
	other, err := name.NewTag(b.PushRef)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tarball.ImageFromPath(tarPath, &other); err == nil {
		t.Errorf("tarball has an image tagged %s too", other)
	}

	img, files, _ := readImage(t, tarPath)
	wantFiles := []file{
		{Name: "cert.crt", Mode: "-rw-r--r--", Body: "cert"},
		baseFiles[0], baseFiles[1], baseFiles[2], baseFiles[3],
		{Name: "etc/up/", Mode: "drwxr-xr-x"},
		{Name: "etc/up/key", Mode: "-rw-------", Body: "key"},
		baseFiles[4],
		{Name: "usr/", Mode: "drwxr-xr-x"},
		{Name: "usr/local/", Mode: "drwxr-xr-x"},
		{Name: "usr/local/bin/", Mode: "drwxr-xr-x"},
		{Name: "usr/local/bin/client", Mode: "-rwxr-xr-x", Body: "\x7fELF client"},
		{Name: "usr/local/bin/server", Mode: "-rwxr-xr-x", Body: "\x7fELF server"},
	}
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if got := configOf(t, img).Config.Entrypoint; !slices.Equal(got, []string{"/usr/local/bin/server"}) {
		t.Errorf("entrypoint = %q, want the main binary", got)
	}
}

func TestNewImageErrors(t *testing.T) {
	failing := func() ([]byte, error) { return nil, errors.New("no entropy today") }
	for _, tc := range []struct {
		name       string
		row        Image
		binaries   map[string][]byte
		wantErrHas string
	}{
		{"binary missing", Image{Name: "a", Tool: "a", Path: "/a", ExtraBinaries: []Binary{{Tool: "b", Path: "/b"}}}, map[string][]byte{"/a": nil}, "no binary for /b"},
		{"binary not in the row", Image{Name: "a", Tool: "a", Path: "/a"}, map[string][]byte{"/a": nil, "/b": nil}, "2 binaries given for 1 paths"},
		{"file on a base file", Image{Name: "a", Tool: "a", Path: "/a", Files: []File{{Path: "/etc/passwd", Contents: contents("")}}}, map[string][]byte{"/a": nil}, "path /etc/passwd clashes with etc/passwd"},
		{"file on a directory", Image{Name: "a", Tool: "a", Path: "/tmp", Files: nil}, map[string][]byte{"/tmp": nil}, "path /tmp clashes with tmp/"},
		{"file under a file", Image{Name: "a", Tool: "a", Path: "/a", Files: []File{{Path: "/a/b", Contents: contents("")}}}, map[string][]byte{"/a": nil}, "path /a/b: its directory /a is a file"},
		{"contents fail", Image{Name: "a", Tool: "a", Path: "/a", Files: []File{{Path: "/c", Contents: failing}}}, map[string][]byte{"/a": nil}, "contents of /c: no entropy today"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newImage(tc.row, tc.binaries)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
				t.Errorf("newImage error = %v, want one containing %q", err, tc.wantErrHas)
			}
		})
	}
}
