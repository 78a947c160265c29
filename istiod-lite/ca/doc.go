// Package ca is istiod-lite's certificate authority: it signs workload
// certificates for SPIFFE identities and serves them over Istio's
// istio.v1.auth.IstioCertificateService/CreateCertificate gRPC method, so that
// both our ztunnel and Istio's can fetch certificates from it.
//
// An Authority holds the signing key. It is either a self-signed root made on
// first start (NewSelfSigned) or a user-provided intermediate loaded from
// Istio's cacerts Secret layout (FromCACerts); SecretData turns either back
// into that layout so a restart keeps the same root. Authority.Sign checks a
// PEM CSR and issues an ECDSA-or-RSA-keyed leaf for an Identity that the
// caller has already been granted.
//
// A Server decides which identity a caller may have. It asks an injected
// Authenticator who the caller is (in the binary: a Kubernetes TokenReview of
// the service-account token), grants the caller its own identity, and grants
// another one (Istio's ImpersonatedIdentity metadata) only to a trusted node
// account — ztunnel — and only when an injected NodeChecker confirms that a
// pod with that identity runs on the caller's node. See README.md for the
// wire facts taken from Istio and the failure modes.
package ca
