// Package meshcert gets workload certificates from the mesh CA and keeps
// them fresh.
//
// A Client calls Istio's istio.v1.auth.IstioCertificateService/CreateCertificate
// (istiod-lite's CA, or Istio's istiod) over TLS verified against the mesh
// roots, authenticated by the Kubernetes service-account token it reads from
// a file on every call. It generates an ECDSA P-256 key and a CSR for one
// SPIFFE identity, and checks what comes back: the leaf carries exactly that
// identity, matches the key, and chains to the mesh roots.
//
// A Source holds the certificate of one identity: it fetches it at start
// (retrying with backoff), renews it at half-life, keeps serving the old
// certificate while renewal fails, and hands it out in the shapes
// internal/hbone wants (Dialer.Certificate, Server.TLS).
//
// The package imports nothing of Ambient Lite's parts and nothing of
// Kubernetes; see README.md.
package meshcert
