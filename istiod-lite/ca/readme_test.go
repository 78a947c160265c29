package ca

import (
	"os"
	"strings"
	"testing"
)

// The README documents wire facts and metric names; keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := append([]string{
		ImpersonatedIdentityKey,
		"istiod_lite_ca_certificates_issued_total",
		"istiod_lite_ca_certificates_refused_total",
		CACertFile, CAKeyFile, RootCertFile, CertChainFile,
		DefaultNodeAccount.String(),
	}, reasons...)
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}
