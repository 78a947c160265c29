package waypoint

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ambientlite/mesh/istiod-lite/model"
)

// The README states the names, defaults and metrics; keep it honest.
func TestREADMEFacts(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	facts := []string{
		ClassName, ControllerName, ManagedLabelValue, FieldManager,
		LabelGatewayName, LabelGatewayClassName, LabelManaged, LabelWaypointFor, LabelDataplaneMode,
		LabelSidecarInject, LabelCanonicalName, LabelCanonicalRev, AnnotationConfigHash,
		ContainerName, ReadinessPath, MetricsPath, TokenAudience, TokenMountPath, TokenFile, RootCertMap, RootCertPath,
		strconv.Itoa(PortHBONE), strconv.Itoa(PortMetrics), strconv.Itoa(PortStatus),
		"terminationGracePeriodSeconds: " + strconv.Itoa(TerminationGracePeriodSeconds),
		DefaultImage, string(DefaultImagePullPolicy), DefaultXDSAddress, DefaultTrustDomain, DefaultLogLevel,
		DefaultCPURequest, DefaultMemoryRequest, "limits `2`/`1Gi`",
		"POD_NAME", "POD_NAMESPACE", "NODE_NAME", "INSTANCE_IP", "SERVICE_ACCOUNT",
		"TRUST_DOMAIN", "XDS_ADDRESS", "CA_ADDRESS", "GATEWAY_NAME", "GOMEMLIMIT",
		"istiod_lite_waypoint_reconciles_total", "istiod_lite_waypoint_writes_total",
		"AddressNotAssigned", "ListenersNotValid", "UnsupportedProtocol", "PortUnavailable", "HostnameConflict",
		"-update",
	}
	for _, f := range facts {
		if !strings.Contains(readme, f) {
			t.Errorf("README.md does not mention %q", f)
		}
	}
}

// The model finds waypoints by the same names this controller writes.
func TestNamesAgreeWithModel(t *testing.T) {
	for _, p := range [][2]string{
		{ClassName, model.WaypointGatewayClass},
		{LabelGatewayName, model.LabelGatewayName},
		{LabelManaged, model.LabelGatewayManaged},
		{ManagedLabelValue, model.ManagedByMeshController},
		{LabelWaypointFor, model.LabelWaypointFor},
		{LabelDataplaneMode, model.LabelDataplaneMode},
		{LabelCanonicalName, model.LabelCanonicalName},
		{LabelCanonicalRev, model.LabelCanonicalRevision},
	} {
		if p[0] != p[1] {
			t.Errorf("waypoint says %q, model says %q", p[0], p[1])
		}
	}
	if ManagedLabelValue != strings.ReplaceAll(ControllerName, "/", "-") {
		t.Errorf("ManagedLabelValue %q is not ControllerName with / replaced", ManagedLabelValue)
	}
}
