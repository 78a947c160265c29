package route

import (
	"errors"
	"fmt"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Config holds the settings of a compilation. The zero value works: every
// empty field takes its documented default.
type Config struct {
	// DomainSuffix is the cluster DNS domain of Service hostnames
	// ("<name>.<namespace>.svc.<DomainSuffix>"). Default "cluster.local".
	DomainSuffix string
	// ControllerName is written in RouteParentStatus.controllerName, and
	// identifies the entries a status writer owns. Default
	// "istio.io/gateway-controller": Istio writes that value (its
	// PILOT_GATEWAY_API_CONTROLLER_NAME) for Service parents too, not the
	// waypoint GatewayClass's "istio.io/mesh-controller".
	ControllerName gatewayv1.GatewayController
	// Now is the lastTransitionTime of every condition, truncated to the
	// second. Default: zero, which meta.SetStatusCondition replaces with the
	// current time when the status writer merges the conditions (it also keeps
	// the old time when a condition's status did not change).
	Now time.Time
	// AllowCrossNamespaceBackends lets routes send to Services in any
	// namespace without a ReferenceGrant, as Istio does for mesh routes
	// (GEP-1294 allows it). Default false: a backendRef (or mirror) to a
	// Service outside the route's namespace and the parent Service's
	// namespace needs a ReferenceGrant, because the waypoint forwards with the
	// parent namespace's waypoint identity.
	AllowCrossNamespaceBackends bool
}

const defaultDomainSuffix = "cluster.local"

// DefaultControllerName is the controllerName of the route parent status
// istiod-lite writes, Istio's (see Config.ControllerName).
const DefaultControllerName = gatewayv1.GatewayController("istio.io/gateway-controller")

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() Config {
	if c.DomainSuffix == "" {
		c.DomainSuffix = defaultDomainSuffix
	}
	if c.ControllerName == "" {
		c.ControllerName = DefaultControllerName
	}
	if !c.Now.IsZero() {
		c.Now = c.Now.Truncate(time.Second)
	}
	return c
}

// Validate reports fields that would produce malformed resources or status.
func (c Config) Validate() error {
	var errs []error
	if strings.HasPrefix(c.DomainSuffix, ".") || strings.HasSuffix(c.DomainSuffix, ".") || strings.ContainsAny(c.DomainSuffix, "/ ") {
		errs = append(errs, fmt.Errorf("domain suffix %q must not start or end with '.' nor contain '/' or spaces", c.DomainSuffix))
	}
	if n := string(c.ControllerName); n != "" {
		domain, path, ok := strings.Cut(n, "/")
		if !ok || domain == "" || path == "" || strings.ContainsAny(n, " ") {
			errs = append(errs, fmt.Errorf("controller name %q must be DOMAIN/PATH (e.g. example.net/mesh-controller)", n))
		}
	}
	return errors.Join(errs...)
}
