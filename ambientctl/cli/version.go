package cli

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
)

// version is ambientctl's version, set at build time:
//
//	go build -ldflags "-X github.com/ambientlite/mesh/ambientctl/cli.version=v0.2.0"
var version = "dev"

// versionInfo is what version prints.
type versionInfo struct {
	Client struct {
		Version   string `json:"version"`
		GoVersion string `json:"goVersion"`
		Platform  string `json:"platform"`
	} `json:"client"`
	// ControlPlane and DataPlane are absent with --client.
	ControlPlane []componentVersion `json:"controlPlane,omitempty"`
	DataPlane    []componentVersion `json:"dataPlane,omitempty"`
}

// componentVersion is one version of one component running in the
// cluster: the image tag, and how many pods run it.
type componentVersion struct {
	Component string `json:"component"`
	Version   string `json:"version"`
	Image     string `json:"image"`
	Pods      int    `json:"pods"`
	Ready     int    `json:"ready"`
}

func newVersion(env *Env) *cobra.Command {
	var clientOnly bool
	var format string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version of ambientctl and of the mesh running in the cluster",
		Long: `version prints ambientctl's version, then the versions (image tags) of istiod-lite,
ztunnel and the waypoints running in the cluster, with how many pods run each and how many
are ready.`,
		Example: `  ambientctl version
  ambientctl version --client
  ambientctl version -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var v versionInfo
			v.Client.Version = version
			v.Client.GoVersion = runtime.Version()
			v.Client.Platform = runtime.GOOS + "/" + runtime.GOARCH
			var clusterErr error
			if !clientOnly {
				clusterErr = meshVersions(cmd.Context(), env, &v)
			}
			if format != formatTable {
				if clusterErr != nil {
					return clusterErr
				}
				return printStructured(env.Stdout, format, v)
			}
			fmt.Fprintf(env.Stdout, "client version: %s (%s %s)\n", v.Client.Version, v.Client.GoVersion, v.Client.Platform)
			if clientOnly || clusterErr != nil {
				return clusterErr
			}
			printComponents(env, "control plane", v.ControlPlane, "not installed (ambientctl install)")
			printComponents(env, "data plane", v.DataPlane, "no ztunnel or waypoint")
			return nil
		},
	}
	c.Flags().BoolVar(&clientOnly, "client", false, "print only ambientctl's version (no cluster needed)")
	addOutputFlag(c, &format)
	return c
}

func printComponents(env *Env, label string, cs []componentVersion, none string) {
	if len(cs) == 0 {
		fmt.Fprintf(env.Stdout, "%s: %s\n", label, none)
		return
	}
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %s (%d/%d pods ready)", c.Component, c.Version, c.Ready, c.Pods))
	}
	fmt.Fprintf(env.Stdout, "%s: %s\n", label, strings.Join(parts, ", "))
}

func meshVersions(ctx context.Context, env *Env, v *versionInfo) error {
	c, err := env.clients(ctx)
	if err != nil {
		return err
	}
	istiods, err := istiodPods(ctx, c)
	if err != nil {
		return err
	}
	zts, err := ztunnelPods(ctx, c)
	if err != nil {
		return err
	}
	wps, err := waypointPods(ctx, c)
	if err != nil {
		return err
	}
	v.ControlPlane = versionsOf("istiod-lite", istiods)
	v.DataPlane = append(versionsOf("ztunnel", zts), versionsOf("waypoint", wps)...)
	return nil
}

// versionsOf groups pods by the image of their first container.
func versionsOf(component string, pods []corev1.Pod) []componentVersion {
	var out []componentVersion
	for _, p := range pods {
		if len(p.Spec.Containers) == 0 {
			continue
		}
		img := p.Spec.Containers[0].Image
		i := slices.IndexFunc(out, func(c componentVersion) bool { return c.Image == img })
		if i < 0 {
			out = append(out, componentVersion{Component: component, Version: tagOf(img), Image: img})
			i = len(out) - 1
		}
		out[i].Pods++
		if podReady(&p) {
			out[i].Ready++
		}
	}
	slices.SortFunc(out, func(a, b componentVersion) int { return strings.Compare(a.Image, b.Image) })
	return out
}
