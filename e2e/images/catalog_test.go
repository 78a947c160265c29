package images

import (
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCatalog checks every row: valid, a unique name and binary name, and a
// Go package that exists in this module.
func TestCatalog(t *testing.T) {
	root, err := FindModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	bins := map[string]string{}
	for _, img := range Catalog() {
		if err := img.Validate(); err != nil {
			t.Error(err)
		}
		if seen[img.Name] {
			t.Errorf("image %q: listed twice", img.Name)
		}
		seen[img.Name] = true
		if img.Package == "" {
			continue
		}
		if other, ok := bins[path.Base(img.Package)]; ok && other != img.Package {
			t.Errorf("image %q: package %s builds a binary named like %s's", img.Name, img.Package, other)
		}
		bins[path.Base(img.Package)] = img.Package
		if fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(img.Package))); err != nil || !fi.IsDir() {
			t.Errorf("image %q: package %s is not a directory of the module: %v", img.Name, img.Package, err)
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
		{name: "nope", wantErrHas: `unknown image "nope" (known: coredns, meshecho, pause`},
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
		{name: "tool with everything", img: Image{Name: "b-2", Tool: "b", Path: "/b", Entrypoint: []string{"/b", "-x"}, Ports: []string{"53/udp"}, Env: []string{"A=1", "B="}}},
		{name: "no name", img: Image{Package: "./cmd/a"}, wantErrHas: "name"},
		{name: "upper-case name", img: Image{Name: "A", Package: "./cmd/a"}, wantErrHas: "lowercase"},
		{name: "neither source", img: Image{Name: "a"}, wantErrHas: "exactly one of Package and Tool"},
		{name: "both sources", img: Image{Name: "a", Package: "./a", Tool: "a"}, wantErrHas: "exactly one of Package and Tool"},
		{name: "package not relative", img: Image{Name: "a", Package: "github.com/x/a"}, wantErrHas: "relative to the module root"},
		{name: "package not clean", img: Image{Name: "a", Package: "./cmd/../a"}, wantErrHas: "relative to the module root"},
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
		{name: "all without tools dir", want: []string{"app"}, wantSkipped: []string{"dns", "other"}},
		{name: "all with tools dir", toolsDir: tools, want: []string{"app", "dns"}, wantSkipped: []string{"other"}},
		{name: "named, in the order given, once", names: []string{"dns", "app", "dns"}, toolsDir: tools, want: []string{"dns", "app"}},
		{name: "named tool without tools dir", names: []string{"app", "dns"}, wantErrHas: []string{"image dns needs the prebuilt binary coredns: no tools dir given"}},
		{name: "named tool missing", names: []string{"dns"}, toolsDir: t.TempDir(), wantErrHas: []string{"coredns is not in the tools dir"}},
		{name: "named tool not a file", names: []string{"other"}, toolsDir: tools, wantErrHas: []string{"is not a regular file"}},
		{name: "unknown names", names: []string{"app", "x", "y"}, wantErrHas: []string{`unknown image "x" (known: app, dns, other)`, `unknown image "y"`}},
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
