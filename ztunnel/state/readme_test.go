package state

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// README.md lists the API and the defaults; keep it honest.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pkgs["state"].Files {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || !fn.Name.IsExported() || fn.Name.Name == "String" || strings.HasPrefix(fn.Name.Name, "Marshal") ||
				fn.Name.Name == "Error" || fn.Name.Name == "Unwrap" || fn.Name.Name == "Key" || fn.Name.Name == "IsHostname" || fn.Name.Name == "HasAddress" {
				continue
			}
			if !strings.Contains(readme, fn.Name.Name+"(") {
				t.Errorf("README.md does not show %s", fn.Name.Name)
			}
		}
	}
	for _, fact := range []string{"`DefaultHBONEPort` (15008)", "`cluster.local`", "`default`", "`Kubernetes`",
		"`istio-system/istio_converted_static_strict`", "not_principals: [presence]"} {
		if !strings.Contains(readme, fact) {
			t.Errorf("README.md does not mention %s", fact)
		}
	}
	if DefaultHBONEPort != 15008 || DefaultTrustDomain != "cluster.local" || DefaultServiceAccount != "default" || DefaultClusterID != "Kubernetes" {
		t.Error("defaults changed: update README.md and this test")
	}
}

func TestTypeURLs(t *testing.T) {
	a, _ := anypb.New(&workloadapi.Address{})
	p, _ := anypb.New(&security.Authorization{})
	if a.GetTypeUrl() != AddressTypeURL || p.GetTypeUrl() != AuthorizationTypeURL {
		t.Errorf("type URLs %s, %s", a.GetTypeUrl(), p.GetTypeUrl())
	}
}
