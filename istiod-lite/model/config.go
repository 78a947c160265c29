package model

import (
	"errors"
	"fmt"
	"strings"
)

// Config holds the mesh-wide settings the translation needs. The zero value
// works: every empty field takes its documented default.
type Config struct {
	// TrustDomain is the SPIFFE trust domain of the mesh. Default "cluster.local".
	// As in Istio, the default is sent as an empty trust_domain (ztunnel fills
	// it in); any other value is sent as is.
	TrustDomain string
	// ClusterID names this cluster in workload uids and cluster_id. Default "Kubernetes".
	ClusterID string
	// Network is the network of every address this cluster produces. Default "".
	Network string
	// DomainSuffix is the cluster DNS domain used for service hostnames.
	// Default "cluster.local".
	DomainSuffix string
	// RootNamespace is Istio's mesh root namespace (meshConfig.rootNamespace):
	// an AuthorizationPolicy there without a selector is GLOBAL, one with a
	// selector applies to matching workloads of every namespace, and a
	// PeerAuthentication there without a selector is mesh-wide.
	// Default "istio-system".
	RootNamespace string
}

const (
	defaultTrustDomain  = "cluster.local"
	defaultClusterID    = "Kubernetes"
	defaultDomainSuffix = "cluster.local"
	defaultRootNS       = "istio-system"
)

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() Config {
	if c.TrustDomain == "" {
		c.TrustDomain = defaultTrustDomain
	}
	if c.ClusterID == "" {
		c.ClusterID = defaultClusterID
	}
	if c.DomainSuffix == "" {
		c.DomainSuffix = defaultDomainSuffix
	}
	if c.RootNamespace == "" {
		c.RootNamespace = defaultRootNS
	}
	return c
}

// Validate reports fields that would produce malformed resources.
func (c Config) Validate() error {
	var errs []error
	if strings.ContainsAny(c.TrustDomain, "/ ") {
		errs = append(errs, fmt.Errorf("trust domain %q must not contain '/' or spaces", c.TrustDomain))
	}
	if strings.Contains(c.ClusterID, "/") {
		errs = append(errs, fmt.Errorf("cluster ID %q must not contain '/': it is part of workload uids", c.ClusterID))
	}
	if strings.HasPrefix(c.DomainSuffix, ".") || strings.HasSuffix(c.DomainSuffix, ".") {
		errs = append(errs, fmt.Errorf("domain suffix %q must not start or end with '.'", c.DomainSuffix))
	}
	if strings.ContainsAny(c.RootNamespace, "/ ") {
		errs = append(errs, fmt.Errorf("root namespace %q must not contain '/' or spaces: it is part of policy resource names", c.RootNamespace))
	}
	return errors.Join(errs...)
}

// wireTrustDomain is the trust_domain value sent to ztunnel: empty for the
// default, as Istio does (pickTrustDomain in workloads.go).
func (c Config) wireTrustDomain() string {
	if c.TrustDomain == defaultTrustDomain {
		return ""
	}
	return c.TrustDomain
}
