package images

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCatalog checks every row: valid, a unique name, binary names unique
// across the catalog (one `go build` names binaries by package), and Go
// packages that are commands the module can build: directories of this
// module, or packages of modules go.mod requires.
func TestCatalog(t *testing.T) {
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	bins := map[string]string{}
	var pkgs []string
	for _, img := range Catalog() {
		if err := img.Validate(); err != nil {
			t.Error(err)
		}
		if seen[img.Name] {
			t.Errorf("image %q: listed twice", img.Name)
		}
		seen[img.Name] = true
		for _, b := range img.Binaries() {
			if b.Package == "" {
				continue
			}
			if other, ok := bins[path.Base(b.Package)]; ok && other != b.Package {
				t.Errorf("image %q: package %s builds a binary named like %s's", img.Name, b.Package, other)
			}
			bins[path.Base(b.Package)] = b.Package
			pkgs = append(pkgs, b.Package)
			if !strings.HasPrefix(b.Package, "./") {
				continue
			}
			if fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(b.Package))); err != nil || !fi.IsDir() {
				t.Errorf("image %q: package %s is not a directory of the module: %v", img.Name, b.Package, err)
			}
		}
	}

	// `go list` loads the packages without compiling them: a module
	// missing from go.mod or go.sum fails here rather than in Build.
	cmd := exec.Command("go", append([]string{"list", "-f", "{{.Name}}"}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go list %s: %v\n%s", strings.Join(pkgs, " "), err, stderr)
	}
	names := strings.Fields(string(out))
	if len(names) != len(pkgs) {
		t.Fatalf("go list printed %q for %d packages", names, len(pkgs))
	}
	for i, n := range names {
		if n != "main" {
			t.Errorf("package %s is package %s, not a command", pkgs[i], n)
		}
	}
}

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		wantPath   string
		wantEntry  []string
		wantErrHas string
	}{
		{name: "pause", wantPath: "/pause", wantEntry: []string{"/pause"}},
		{name: "coredns", wantPath: "/coredns", wantEntry: []string{"/coredns"}},
		{name: "meshecho", wantPath: "/usr/local/bin/meshecho", wantEntry: []string{"/usr/local/bin/meshecho"}},
		{name: "echo-advanced", wantPath: "/usr/local/bin/server", wantEntry: []string{"/usr/local/bin/server"}},
		{name: "nope", wantErrHas: `unknown image "nope" (known: ` + strings.Join(Names(), ", ") + `)`},
		{name: "", wantErrHas: `unknown image "" (known: `},
	} {
		t.Run(strconv.Quote(tc.name), func(t *testing.T) {
			img, err := Lookup(tc.name)
			if tc.wantErrHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
					t.Fatalf("Lookup(%q) error = %v, want one containing %q", tc.name, err, tc.wantErrHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []any{img.BinaryPath(), img.EntrypointOrDefault()}
			if diff := cmp.Diff([]any{tc.wantPath, tc.wantEntry}, got); diff != "" {
				t.Errorf("path and entrypoint (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		img        Image
		wantErrHas string // "" for valid
	}{
		{name: "package", img: Image{Name: "a", Package: "./cmd/a"}},
		{name: "package of another module", img: Image{Name: "a", Package: "example.com/m/cmd/a"}},
		{name: "tool with everything", img: Image{Name: "b-2", Tool: "b", Path: "/b", Entrypoint: []string{"/b", "-x"}, Ports: []string{"53/udp"}, Env: []string{"A=1", "B="}}},
		{name: "fixed ref, binaries and files", img: Image{Name: "a", Ref: "registry.example/up/a:v1", Package: "./cmd/a", ExtraBinaries: []Binary{{Tool: "b", Path: "/bin/b"}, {Package: "example.com/m/c", Path: "/bin/c"}}, Files: []File{{Path: "/a.conf", Mode: 0o600, Contents: contents("x")}}}},
		{name: "no name", img: Image{Package: "./cmd/a"}, wantErrHas: "name"},
		{name: "upper-case name", img: Image{Name: "A", Package: "./cmd/a"}, wantErrHas: "lowercase"},
		{name: "neither source", img: Image{Name: "a"}, wantErrHas: "exactly one of Package and Tool"},
		{name: "both sources", img: Image{Name: "a", Package: "./a", Tool: "a"}, wantErrHas: "exactly one of Package and Tool"},
		{name: "package neither relative nor of a module", img: Image{Name: "a", Package: "cmd/a"}, wantErrHas: "relative to the module root"},
		{name: "package not clean", img: Image{Name: "a", Package: "./cmd/../a"}, wantErrHas: "relative to the module root"},
		{name: "package above the module", img: Image{Name: "a", Package: "./../a"}, wantErrHas: "relative to the module root"},
		{name: "import path not clean", img: Image{Name: "a", Package: "example.com/m/../a"}, wantErrHas: "import path of a package"},
		{name: "ref without tag", img: Image{Name: "a", Tool: "a", Ref: "registry.example/up/a"}, wantErrHas: `ref "registry.example/up/a": want a full reference`},
		{name: "ref not a reference", img: Image{Name: "a", Tool: "a", Ref: "Up:v1"}, wantErrHas: `ref "Up:v1"`},
		{name: "extra binary without source", img: Image{Name: "a", Tool: "a", ExtraBinaries: []Binary{{Path: "/b"}}}, wantErrHas: "extra binary 1: set exactly one of Package and Tool"},
		{name: "extra binary without path", img: Image{Name: "a", Tool: "a", ExtraBinaries: []Binary{{Tool: "b"}}}, wantErrHas: `extra binary 1: path "": want a clean absolute file path`},
		{name: "extra binary on the main one", img: Image{Name: "a", Tool: "a", Path: "/a", ExtraBinaries: []Binary{{Tool: "b", Path: "/a"}}}, wantErrHas: "extra binary 1: path /a: used twice"},
		{name: "file on a binary", img: Image{Name: "a", Tool: "a", Path: "/a", Files: []File{{Path: "/a", Contents: contents("")}}}, wantErrHas: "file 1: path /a: used twice"},
		{name: "file path not clean", img: Image{Name: "a", Tool: "a", Files: []File{{Path: "/etc/../x", Contents: contents("")}}}, wantErrHas: `file 1: path "/etc/../x"`},
		{name: "file mode", img: Image{Name: "a", Tool: "a", Files: []File{{Path: "/x", Mode: fs.ModeDir | 0o755, Contents: contents("")}}}, wantErrHas: "file 1: mode drwxr-xr-x: want permission bits only"},
		{name: "file without contents", img: Image{Name: "a", Tool: "a", Files: []File{{Path: "/x"}}}, wantErrHas: "file 1: /x has no Contents"},
		{name: "tool with a slash", img: Image{Name: "a", Tool: "bin/a"}, wantErrHas: "file name"},
		{name: "relative path", img: Image{Name: "a", Tool: "a", Path: "a"}, wantErrHas: "absolute"},
		{name: "root path", img: Image{Name: "a", Tool: "a", Path: "/"}, wantErrHas: "absolute file path"},
		{name: "bad port", img: Image{Name: "a", Tool: "a", Ports: []string{"53"}}, wantErrHas: `port "53"`},
		{name: "bad protocol", img: Image{Name: "a", Tool: "a", Ports: []string{"53/sctp"}}, wantErrHas: `port "53/sctp"`},
		{name: "bad env", img: Image{Name: "a", Tool: "a", Env: []string{"=x"}}, wantErrHas: `env "=x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.img.Validate()
			switch {
			case tc.wantErrHas == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErrHas != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrHas)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErrHas)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	rows := []Image{
		{Name: "app", Package: "./cmd/app"},
		{Name: "dns", Tool: "coredns", Path: "/coredns"},
		{Name: "other", Tool: "other"},
		{Name: "app-and-tool", Package: "./cmd/app", ExtraBinaries: []Binary{{Tool: "coredns", Path: "/coredns"}}},
	}
	tools := t.TempDir()
	if err := os.WriteFile(filepath.Join(tools, "coredns"), []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(tools, "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		names       []string
		toolsDir    string
		want        []string
		wantSkipped []string
		wantErrHas  []string
	}{
		{name: "all without tools dir", want: []string{"app"}, wantSkipped: []string{"dns", "other", "app-and-tool"}},
		{name: "all with tools dir", toolsDir: tools, want: []string{"app", "dns", "app-and-tool"}, wantSkipped: []string{"other"}},
		{name: "named extra tool without tools dir", names: []string{"app-and-tool"}, wantErrHas: []string{"image app-and-tool needs the prebuilt binary coredns: no tools dir given"}},
		{name: "named, in the order given, once", names: []string{"dns", "app", "dns"}, toolsDir: tools, want: []string{"dns", "app"}},
		{name: "named tool without tools dir", names: []string{"app", "dns"}, wantErrHas: []string{"image dns needs the prebuilt binary coredns: no tools dir given"}},
		{name: "named tool missing", names: []string{"dns"}, toolsDir: t.TempDir(), wantErrHas: []string{"coredns is not in the tools dir"}},
		{name: "named tool not a file", names: []string{"other"}, toolsDir: tools, wantErrHas: []string{"is not a regular file"}},
		{name: "unknown names", names: []string{"app", "x", "y"}, wantErrHas: []string{`unknown image "x" (known: app, app-and-tool, dns, other)`, `unknown image "y"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chosen, skipped, err := choose(rows, tc.names, tc.toolsDir)
			for _, want := range tc.wantErrHas {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error = %v, want one containing %q", err, want)
				}
			}
			if len(tc.wantErrHas) > 0 {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got, gotSkipped []string
			for _, c := range chosen {
				got = append(got, c.Name)
			}
			for _, s := range skipped {
				gotSkipped = append(gotSkipped, s.name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("chosen (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantSkipped, gotSkipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFindModuleRoot(t *testing.T) {
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if got := modulePath(filepath.Join(root, "go.mod")); got != ModulePath {
		t.Errorf("module of %s = %q, want %q", root, got, ModulePath)
	}
	// A nested module of another path is passed over.
	nested := filepath.Join(t.TempDir(), "a", "b")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nested, "..", "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FindModuleRoot(nested); err == nil || !strings.Contains(err.Error(), "no go.mod of "+ModulePath) {
		t.Errorf("FindModuleRoot outside the module: error = %v", err)
	}
}

// contents returns a File.Contents giving body.
func contents(body string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(body), nil }
}

func TestRefOrDefault(t *testing.T) {
	for _, tc := range []struct {
		name        string
		img         Image
		prefix, tag string
		want        string
	}{
		{"prefix and tag", Image{Name: "pause"}, "localhost/ambientlite", "dev", "localhost/ambientlite/pause:dev"},
		{"fixed ref", Image{Name: "echo", Ref: "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"}, "registry.example/mesh", "v2", "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.img.RefOrDefault(tc.prefix, tc.tag); got != tc.want {
				t.Errorf("RefOrDefault(%q, %q) = %q, want %q", tc.prefix, tc.tag, got, tc.want)
			}
		})
	}
}
