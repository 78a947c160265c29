package waypoint

// The class this controller serves, as Istio names it.
const (
	// ClassName is the GatewayClass of waypoints (Istio's
	// constants.WaypointGatewayClassName).
	ClassName = "istio-waypoint"
	// ControllerName is the GatewayClass controllerName (Istio's
	// constants.ManagedGatewayMeshController).
	ControllerName = "istio.io/mesh-controller"
	// ManagedLabelValue is ControllerName with "/" replaced by "-": the value
	// of LabelManaged on every object the controller creates (Istio's
	// constants.ManagedGatewayMeshControllerLabel).
	ManagedLabelValue = "istio.io-mesh-controller"
	// FieldManager is the server-side apply field manager of every write.
	FieldManager = "istiod-lite"
)

// Labels and annotations the controller writes or reads.
const (
	LabelGatewayName      = "gateway.networking.k8s.io/gateway-name"
	LabelGatewayClassName = "gateway.networking.k8s.io/gateway-class-name"
	LabelManaged          = "gateway.istio.io/managed"
	LabelWaypointFor      = "istio.io/waypoint-for"
	LabelDataplaneMode    = "istio.io/dataplane-mode"
	LabelSidecarInject    = "sidecar.istio.io/inject"
	LabelCanonicalName    = "service.istio.io/canonical-name"
	LabelCanonicalRev     = "service.istio.io/canonical-revision"

	// AnnotationConfigHash is set on each created object: a hash of
	// everything the controller applies to it. A different hash means the
	// Gateway or the configuration changed, so the object is applied again
	// even if what it has still includes what is wanted (that is how labels
	// removed from the Gateway disappear from the objects).
	AnnotationConfigHash = "ambientlite.io/config-hash"
)

// Ports of the waypoint pod and Service.
const (
	PortHBONE   = 15008 // HBONE (mTLS HTTP/2 CONNECT); the Service port named after the listener, "mesh"
	PortMetrics = 15020 // Prometheus metrics
	PortStatus  = 15021 // readiness: GET /healthz/ready

	ContainerName  = "waypoint"
	ProtocolHBONE  = "HBONE"
	ReadinessPath  = "/healthz/ready"
	MetricsPath    = "/stats/prometheus"
	TokenAudience  = "istio-ca"
	TokenMountPath = "/var/run/secrets/tokens"
	TokenFile      = "istio-token"
	RootCertMap    = "istio-ca-root-cert"
	RootCertPath   = "/var/run/secrets/istio"
	// TerminationGracePeriodSeconds is what Istio's waypoint gets: its
	// template sets none, so the Kubernetes default of 30 s applies. We set it
	// explicitly so the drain budget is visible.
	TerminationGracePeriodSeconds = 30
	// proxyUID is the user and group the container runs as (Istio's 1337).
	proxyUID = 1337
	// tokenExpirationSeconds of the projected istio-ca token, as Istio's.
	tokenExpirationSeconds = 43200
)

// keys of Gateway annotations never copied to the objects (Istio omits the
// same ones), plus our own hash.
var skippedAnnotations = map[string]bool{
	"kubectl.kubernetes.io/last-applied-configuration": true,
	"gateway.istio.io/name-override":                   true,
	"gateway.istio.io/service-account":                 true,
	"gateway.istio.io/controller-version":              true,
	AnnotationConfigHash:                               true,
}
