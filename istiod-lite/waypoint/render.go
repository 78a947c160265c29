package waypoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// objects are what a waypoint Gateway becomes, as server-side apply
// configurations: only the fields the controller owns are set.
type objects struct {
	serviceAccount *corev1ac.ServiceAccountApplyConfiguration
	service        *corev1ac.ServiceApplyConfiguration
	deployment     *appsv1ac.DeploymentApplyConfiguration
}

// render computes the ServiceAccount, Service and Deployment of a waypoint
// Gateway whose served listener is mesh. It reads nothing but its arguments;
// cfg must have its defaults filled in.
func render(gw *gatewayv1.Gateway, mesh gatewayv1.Listener, cfg Config) (objects, error) {
	name, ns := gw.Name, gw.Namespace
	owner := metav1ac.OwnerReference().
		WithAPIVersion(gatewayv1.GroupVersion.String()).
		WithKind("Gateway").
		WithName(name).
		WithUID(gw.UID).
		WithController(true)
	selector := map[string]string{LabelGatewayName: name}

	labels := infrastructure(gw, true)
	if v, ok := gw.Labels[LabelWaypointFor]; ok {
		labels[LabelWaypointFor] = v // even when spec.infrastructure.labels replaces the Gateway's labels
	}
	maps.Copy(labels, map[string]string{
		LabelGatewayName:      name,
		LabelGatewayClassName: string(gw.Spec.GatewayClassName),
		LabelManaged:          ManagedLabelValue,
	})
	annotations := infrastructure(gw, false)

	podLabels := map[string]string{
		LabelSidecarInject: "false",
		LabelCanonicalName: name,
		LabelCanonicalRev:  "latest",
	}
	maps.Copy(podLabels, labels)
	// Never captured by ztunnel, whatever the Gateway's labels say.
	podLabels[LabelDataplaneMode] = "none"
	podAnnotations := maps.Clone(annotations)
	maps.Copy(podAnnotations, map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(PortMetrics),
		"prometheus.io/path":   MetricsPath,
	})

	sa := corev1ac.ServiceAccount(name, ns).
		WithLabels(labels).
		WithOwnerReferences(owner)
	if len(annotations) > 0 {
		sa.WithAnnotations(annotations)
	}

	svc := corev1ac.Service(name, ns).
		WithLabels(labels).
		WithOwnerReferences(owner).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithIPFamilyPolicy(corev1.IPFamilyPolicyPreferDualStack).
			WithSelector(selector).
			WithPorts(
				corev1ac.ServicePort().WithName("status-port").WithPort(PortStatus).
					WithProtocol(corev1.ProtocolTCP).WithAppProtocol("tcp"),
				corev1ac.ServicePort().WithName(servicePortName(mesh.Name)).WithPort(PortHBONE).
					WithProtocol(corev1.ProtocolTCP).WithAppProtocol(strings.ToLower(ProtocolHBONE)),
			))
	if len(annotations) > 0 {
		svc.WithAnnotations(annotations)
	}

	dep := appsv1ac.Deployment(name, ns).
		WithLabels(labels).
		WithOwnerReferences(owner).
		WithSpec(appsv1ac.DeploymentSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podLabels).
				WithAnnotations(podAnnotations).
				WithSpec(corev1ac.PodSpec().
					WithServiceAccountName(name).
					WithTerminationGracePeriodSeconds(TerminationGracePeriodSeconds).
					WithContainers(container(gw, cfg)).
					WithVolumes(
						corev1ac.Volume().WithName(TokenFile).
							WithProjected(corev1ac.ProjectedVolumeSource().WithSources(
								corev1ac.VolumeProjection().WithServiceAccountToken(
									corev1ac.ServiceAccountTokenProjection().
										WithAudience(TokenAudience).
										WithExpirationSeconds(tokenExpirationSeconds).
										WithPath(TokenFile)))),
						corev1ac.Volume().WithName("istiod-ca-cert").
							WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(RootCertMap)),
					))))
	if len(annotations) > 0 {
		dep.WithAnnotations(annotations)
	}

	// Each object carries a hash of itself, so that a change of what we
	// apply is seen even where the old object still covers the new one.
	for _, h := range []struct {
		obj any
		set func(string)
	}{
		{sa, func(v string) { sa.WithAnnotations(map[string]string{AnnotationConfigHash: v}) }},
		{svc, func(v string) { svc.WithAnnotations(map[string]string{AnnotationConfigHash: v}) }},
		{dep, func(v string) { dep.WithAnnotations(map[string]string{AnnotationConfigHash: v}) }},
	} {
		v, err := hashOf(h.obj)
		if err != nil {
			return objects{}, err
		}
		h.set(v)
	}
	return objects{serviceAccount: sa, service: svc, deployment: dep}, nil
}

// container is the waypoint proxy container.
func container(gw *gatewayv1.Gateway, cfg Config) *corev1ac.ContainerApplyConfiguration {
	fieldEnv := func(name, path string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath(path)))
	}
	valueEnv := func(name, value string) *corev1ac.EnvVarApplyConfiguration {
		return corev1ac.EnvVar().WithName(name).WithValue(value)
	}
	port := func(name string, n int32) *corev1ac.ContainerPortApplyConfiguration {
		return corev1ac.ContainerPort().WithName(name).WithContainerPort(n).WithProtocol(corev1.ProtocolTCP)
	}
	probe := func(failures, initialDelay, period int32) *corev1ac.ProbeApplyConfiguration {
		p := corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath(ReadinessPath).
				WithPort(intstr.FromInt32(PortStatus)).
				WithScheme(corev1.URISchemeHTTP)).
			WithPeriodSeconds(period).
			WithTimeoutSeconds(1).
			WithSuccessThreshold(1).
			WithFailureThreshold(failures)
		if initialDelay > 0 { // 0 is the default and is not stored, so never ask for it
			p.WithInitialDelaySeconds(initialDelay)
		}
		return p
	}

	c := corev1ac.Container().
		WithName(ContainerName).
		WithImage(cfg.Image).
		WithImagePullPolicy(cfg.ImagePullPolicy).
		WithArgs("--log-level="+cfg.LogLevel).
		WithPorts(
			port("mesh", PortHBONE),
			port("metrics", PortMetrics),
			port("status-port", PortStatus),
		).
		WithEnv(
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("NODE_NAME", "spec.nodeName"),
			fieldEnv("INSTANCE_IP", "status.podIP"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
			valueEnv("TRUST_DOMAIN", cfg.TrustDomain),
			valueEnv("XDS_ADDRESS", cfg.XDSAddress),
			valueEnv("CA_ADDRESS", cfg.CAAddress),
			valueEnv("GATEWAY_NAME", gw.Name),
			corev1ac.EnvVar().WithName("GOMEMLIMIT").WithValueFrom(corev1ac.EnvVarSource().
				WithResourceFieldRef(corev1ac.ResourceFieldSelector().
					WithResource("limits.memory").
					WithDivisor(resource.MustParse("1")))),
		).
		// Istio's startup and readiness probes: ready within a second of
		// starting, then checked every 15 s.
		WithStartupProbe(probe(30, 1, 1)).
		WithReadinessProbe(probe(4, 0, 15)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithPrivileged(false).
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithRunAsUser(proxyUID).
			WithRunAsGroup(proxyUID).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(TokenFile).WithMountPath(TokenMountPath).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("istiod-ca-cert").WithMountPath(RootCertPath).WithReadOnly(true),
		)
	if r := cfg.Resources; r != nil && (len(r.Requests) > 0 || len(r.Limits) > 0) {
		rr := corev1ac.ResourceRequirements()
		if len(r.Requests) > 0 {
			rr.WithRequests(r.Requests)
		}
		if len(r.Limits) > 0 {
			rr.WithLimits(r.Limits)
		}
		c.WithResources(rr)
	}
	return c
}

// infrastructure returns the labels (or annotations) the Gateway passes on
// to its objects, as Istio does: spec.infrastructure.labels (annotations)
// when set, minus keys under gateway.networking.k8s.io/; otherwise a copy of
// the Gateway's own. Annotations Istio never copies are left out.
func infrastructure(gw *gatewayv1.Gateway, labels bool) map[string]string {
	out := map[string]string{}
	var src map[string]string
	if inf := gw.Spec.Infrastructure; inf != nil && labels && inf.Labels != nil {
		for k, v := range inf.Labels {
			if !strings.HasPrefix(string(k), "gateway.networking.k8s.io/") {
				out[string(k)] = string(v)
			}
		}
	} else if inf != nil && !labels && inf.Annotations != nil {
		for k, v := range inf.Annotations {
			if !strings.HasPrefix(string(k), "gateway.networking.k8s.io/") {
				out[string(k)] = string(v)
			}
		}
	} else if labels {
		src = gw.Labels
	} else {
		src = gw.Annotations
	}
	maps.Copy(out, src)
	if !labels {
		for k := range out {
			if skippedAnnotations[k] {
				delete(out, k)
			}
		}
	}
	return out
}

// servicePortName turns a listener name (up to 253 characters, dots
// allowed) into a Service port name (a DNS label of at most 63), as Istio
// does; "status-port" is taken.
func servicePortName(listener gatewayv1.SectionName) string {
	s := strings.ReplaceAll(string(listener), ".", "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	if s == "status-port" || s == "" {
		s = fmt.Sprintf("mesh-%d", PortHBONE)
	}
	return s
}

// hashOf is a short hash of an object's JSON (map keys sorted, so stable).
func hashOf(obj any) (string, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("hash: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}
