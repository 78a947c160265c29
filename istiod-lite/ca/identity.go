package ca

import (
	"fmt"
	"strings"
)

// Identity is a workload identity inside the Authority's trust domain:
// spiffe://<trust domain>/ns/<Namespace>/sa/<ServiceAccount>. The trust domain
// is the Authority's, so it is not part of the value.
//
// internal/hbone.Identity carries the trust domain too; the two should meet in
// internal/spiffe once a third user appears.
type Identity struct {
	Namespace      string
	ServiceAccount string
}

// String returns "<namespace>/<service account>", for logs.
func (id Identity) String() string { return id.Namespace + "/" + id.ServiceAccount }

// valid reports whether both parts are non-empty and free of '/'.
func (id Identity) valid() bool {
	return id.Namespace != "" && id.ServiceAccount != "" &&
		!strings.Contains(id.Namespace, "/") && !strings.Contains(id.ServiceAccount, "/")
}

// spiffeURI returns the SPIFFE URI of id in trustDomain.
func spiffeURI(trustDomain string, id Identity) string {
	return "spiffe://" + trustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// parseSPIFFE parses spiffe://<td>/ns/<ns>/sa/<sa> and requires td to be
// trustDomain: this CA issues only inside its own trust domain.
func parseSPIFFE(trustDomain, s string) (Identity, error) {
	const want = "want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("identity %q: %s", s, want)
	}
	p := strings.Split(rest, "/")
	if len(p) != 5 || p[1] != "ns" || p[3] != "sa" || p[0] == "" {
		return Identity{}, fmt.Errorf("identity %q: %s", s, want)
	}
	id := Identity{Namespace: p[2], ServiceAccount: p[4]}
	if !id.valid() {
		return Identity{}, fmt.Errorf("identity %q: %s", s, want)
	}
	if p[0] != trustDomain {
		return Identity{}, fmt.Errorf("identity %q: trust domain %q is not this CA's %q", s, p[0], trustDomain)
	}
	return id, nil
}
