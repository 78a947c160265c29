package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// ImpersonatedIdentityKey is the request metadata field in which a node agent
// (ztunnel) names the SPIFFE identity it asks a certificate for — the same key
// Istio's CA reads (istio.io/istio/pkg/security.ImpersonatedIdentity).
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// DefaultNodeAccount is the service account ztunnel runs as; the only
// account allowed to ask for other identities unless ServerConfig says
// otherwise (Istio's CA_TRUSTED_NODE_ACCOUNTS).
var DefaultNodeAccount = Identity{Namespace: "istio-system", ServiceAccount: "ztunnel"}

// Caller is an authenticated peer.
type Caller struct {
	// Identity is the caller's own namespace and service account.
	Identity Identity
	// Node is the node the caller's pod runs on, or "" when unknown. It is
	// needed only for node accounts asking for other identities.
	Node string
}

// Authenticator tells who is calling. In istiod-lite it reviews the
// service-account token in the "authorization: Bearer" metadata.
type Authenticator interface {
	// Authenticate returns the caller of ctx's RPC, or an error if the caller
	// could not be authenticated.
	Authenticate(ctx context.Context) (Caller, error)
}

// NodeChecker tells whether a workload runs on a node. In istiod-lite it
// looks the pair up in an index of scheduled pods.
type NodeChecker interface {
	// IdentityRunsOnNode reports whether a pod with identity id is scheduled
	// on node. An error means the answer is unknown (the caller may retry).
	IdentityRunsOnNode(ctx context.Context, id Identity, node string) (bool, error)
}

// ServerConfig wires a Server. Authority and Authenticator are required.
type ServerConfig struct {
	Authority     *Authority
	Authenticator Authenticator
	// NodeChecker confirms impersonation requests. Nil: every request for
	// another identity is refused.
	NodeChecker NodeChecker
	// NodeAccounts may ask for the identities of pods on their own node.
	// Default: [istio-system/ztunnel].
	NodeAccounts []Identity
	// Logger gets one line per certificate issued (Info) and per refusal
	// (Warn, with the reason). Default: discard.
	Logger *slog.Logger
	// Registerer gets the issued and refused counters. Default: not
	// registered (they still count).
	Registerer prometheus.Registerer
}

// Server implements istio.v1.auth.IstioCertificateService.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer

	ca           *Authority
	auth         Authenticator
	nodes        NodeChecker
	nodeAccounts map[Identity]bool
	log          *slog.Logger
	metrics      *metrics
}

// NewServer checks cfg and builds a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Authority == nil {
		return nil, errors.New("ca: ServerConfig.Authority is required")
	}
	if cfg.Authenticator == nil {
		return nil, errors.New("ca: ServerConfig.Authenticator is required")
	}
	s := &Server{
		ca:           cfg.Authority,
		auth:         cfg.Authenticator,
		nodes:        cfg.NodeChecker,
		nodeAccounts: map[Identity]bool{},
		log:          cfg.Logger,
	}
	accounts := cfg.NodeAccounts
	if accounts == nil {
		accounts = []Identity{DefaultNodeAccount}
	}
	for _, a := range accounts {
		if !a.valid() {
			return nil, fmt.Errorf("ca: node account %q: want <namespace>/<service account>", a)
		}
		s.nodeAccounts[a] = true
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { pb.RegisterIstioCertificateServiceServer(g, s) }

// refusal is a request turned down: code and message go to the client,
// reason to the metrics, err (the detail) to the log.
type refusal struct {
	code   codes.Code
	reason string
	msg    string
	err    error
}

// CreateCertificate authenticates the caller, decides which identity it may
// have, and signs the CSR for that identity.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	caller, err := s.auth.Authenticate(ctx)
	if err == nil && !caller.Identity.valid() {
		err = fmt.Errorf("authenticator returned no usable identity (%q)", caller.Identity)
	}
	if err != nil {
		return nil, s.refuse(ctx, caller, Identity{}, refusal{codes.Unauthenticated, reasonUnauthenticated,
			"request not authenticated: present a valid service-account token", err})
	}

	id := caller.Identity
	if requested := req.GetMetadata().GetFields()[ImpersonatedIdentityKey].GetStringValue(); requested != "" {
		other, r := s.authorizeImpersonation(ctx, caller, requested)
		if r != nil {
			return nil, s.refuse(ctx, caller, other, *r)
		}
		id = other
	}

	ttl := time.Duration(math.MaxInt64) // beyond any MaxTTL: Sign refuses it
	if v := req.GetValidityDuration(); v < math.MaxInt64/int64(time.Second) {
		ttl = time.Duration(v) * time.Second
	}
	chain, err := s.ca.Sign(ctx, []byte(req.GetCsr()), id, ttl)
	if err != nil {
		return nil, s.refuse(ctx, caller, id, signRefusal(err))
	}
	s.metrics.issued.Inc()
	s.log.InfoContext(ctx, "certificate issued",
		"identity", s.ca.SPIFFEID(id), "caller", caller.Identity.String(), "node", caller.Node,
		"ttl", ttl.String(), "peer", peerAddr(ctx))
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

// authorizeImpersonation grants requested to caller if it is the caller's own
// identity, or if the caller is a node account and a pod with that identity
// runs on the caller's node.
func (s *Server) authorizeImpersonation(ctx context.Context, caller Caller, requested string) (Identity, *refusal) {
	id, err := parseSPIFFE(s.ca.TrustDomain(), requested)
	if err != nil {
		return Identity{}, &refusal{codes.PermissionDenied, reasonImpersonation,
			"impersonated identity refused", err}
	}
	if id == caller.Identity {
		return id, nil
	}
	const denied = "impersonated identity refused"
	switch {
	case !s.nodeAccounts[caller.Identity]:
		return id, &refusal{codes.PermissionDenied, reasonImpersonation, denied,
			fmt.Errorf("caller %s is not a node account", caller.Identity)}
	case caller.Node == "":
		return id, &refusal{codes.PermissionDenied, reasonNotOnNode, denied,
			errors.New("the caller's node is unknown")}
	case s.nodes == nil:
		return id, &refusal{codes.PermissionDenied, reasonNotOnNode, denied,
			errors.New("no NodeChecker configured")}
	}
	ok, err := s.nodes.IdentityRunsOnNode(ctx, id, caller.Node)
	if err != nil {
		return id, &refusal{codes.Unavailable, reasonNodeCheckFailed,
			"cannot check where the workload runs; retry", err}
	}
	if !ok {
		return id, &refusal{codes.PermissionDenied, reasonNotOnNode, denied,
			fmt.Errorf("no pod with identity %s runs on node %q", id, caller.Node)}
	}
	return id, nil
}

// signRefusal maps an error of Authority.Sign to a refusal.
func signRefusal(err error) refusal {
	switch {
	case errors.Is(err, ErrBadCSR):
		return refusal{codes.InvalidArgument, reasonBadCSR, err.Error(), err}
	case errors.Is(err, ErrBadTTL):
		return refusal{codes.InvalidArgument, reasonBadTTL, err.Error(), err}
	case errors.Is(err, ErrIdentityMismatch):
		return refusal{codes.PermissionDenied, reasonCSRMismatch, err.Error(), err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return refusal{status.FromContextError(err).Code(), reasonCanceled, err.Error(), err}
	default:
		return refusal{codes.Internal, reasonInternal, "certificate signing failed", err}
	}
}

// refuse counts and logs r and returns its status.
func (s *Server) refuse(ctx context.Context, caller Caller, requested Identity, r refusal) error {
	s.metrics.refused.WithLabelValues(r.reason).Inc()
	attrs := []any{"reason", r.reason, "code", r.code.String(), "peer", peerAddr(ctx)}
	if caller.Identity.valid() {
		attrs = append(attrs, "caller", caller.Identity.String(), "node", caller.Node)
	}
	if requested.valid() {
		attrs = append(attrs, "identity", s.ca.SPIFFEID(requested))
	}
	attrs = append(attrs, "err", r.err)
	s.log.WarnContext(ctx, "certificate refused", attrs...)
	return status.Error(r.code, r.msg)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
