package router

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEFacts keeps README.md honest: it names every exported
// identifier, every test and benchmark, and the defaults it states.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := []string{
		"retry attempts 2", "backoff 25ms", "redirect status 302", "scheme `http`", "CORS max age 5",
		"go test ./waypoint/router/ -run '^$' -bench . -benchmem",
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		test := strings.HasSuffix(f, "_test.go")
		for _, d := range file.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				name := d.Name.Name
				switch {
				case test && (strings.HasPrefix(name, "Test") || strings.HasPrefix(name, "Benchmark") || strings.HasPrefix(name, "Fuzz")):
					facts = append(facts, name)
				case !test && d.Name.IsExported() && name != "String":
					facts = append(facts, name)
				}
			case *ast.GenDecl:
				if test {
					continue
				}
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							facts = append(facts, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								facts = append(facts, n.Name)
							}
						}
					}
				}
			}
		}
	}
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}
