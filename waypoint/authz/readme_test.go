package authz

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/internal/routeapi"
)

// README.md documents the API, every Request field and every condition key
// the package evaluates; keep it so.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := []string{"`Compile(", "`(*Policies).Check(", "`*Error", routeapi.PolicyTypeURL,
		keyHeaderPrefix, keySourceIP, keySourceNamespace, keySourcePrincipal, keyDestinationIP, keyDestinationPort,
		":authority", ":method", "403", "PERMISSION_DENIED", "-bench"}
	rt := reflect.TypeFor[Request]()
	for i := range rt.NumField() {
		facts = append(facts, "`"+rt.Field(i).Name+"`")
	}
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %s", f)
		}
	}
}
