package meshcert

import (
	"os"
	"strings"
	"testing"
)

// The README states wire facts and defaults; keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"IstioCertificateService/CreateCertificate",
		`"` + ImpersonatedIdentityKey + `"`,
		DefaultTokenFile, DefaultRootCertFile,
		"`RetryMin` (1 s)", "`RetryMax` (30 s)",
	} {
		if !strings.Contains(string(b), f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
	if DefaultRetryMin.String() != "1s" || DefaultRetryMax.String() != "30s" || DefaultTTL.String() != "24h0m0s" {
		t.Error("defaults changed: update README.md and this test")
	}
}
