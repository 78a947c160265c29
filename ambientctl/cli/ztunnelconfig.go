package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambientlite/mesh/install"
)

// zcSection is one subcommand of ztunnel-config: a part of /config_dump.
type zcSection struct {
	name    string
	aliases []string
	short   string
	// raw is the section as ztunnel sent it; ns the namespace of one of its
	// entries (for -n).
	raw   func(*configDump) json.RawMessage
	ns    func(map[string]any) string
	table func(w io.Writer, now time.Time, d *configDump, ns string) error
}

var zcSections = []zcSection{
	{
		name: "workloads", aliases: []string{"workload", "w"}, short: "workloads ztunnel knows: address, node, waypoint, protocol (HBONE when in the mesh)",
		raw: func(d *configDump) json.RawMessage { return d.Raw.Workloads },
		ns:  func(m map[string]any) string { s, _ := m["namespace"].(string); return s },
		table: func(w io.Writer, _ time.Time, d *configDump, ns string) error {
			t := newTable(w, "NAMESPACE", "NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL", "STATUS")
			wls := slices.Clone(d.State.Workloads)
			slices.SortFunc(wls, func(a, b dumpWorkload) int {
				return cmpOr(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
			})
			for _, wl := range wls {
				if ns != "" && wl.Namespace != ns {
					continue
				}
				t.row(wl.Namespace, wl.Name, strings.Join(wl.IPs, ","), wl.Node, waypointName(wl.Waypoint), wl.Protocol, wl.Status)
			}
			return t.flush()
		},
	},
	{
		name: "services", aliases: []string{"service", "s"}, short: "services: VIPs, waypoint, endpoints healthy/total",
		raw: func(d *configDump) json.RawMessage { return d.Raw.Services },
		ns:  func(m map[string]any) string { s, _ := m["namespace"].(string); return s },
		table: func(w io.Writer, _ time.Time, d *configDump, ns string) error {
			t := newTable(w, "NAMESPACE", "NAME", "VIP", "WAYPOINT", "ENDPOINTS")
			svcs := slices.Clone(d.State.Services)
			slices.SortFunc(svcs, func(a, b dumpService) int {
				return cmpOr(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
			})
			for _, s := range svcs {
				if ns != "" && s.Namespace != ns {
					continue
				}
				var vips []string
				for _, v := range s.VIPs {
					vips = append(vips, v[strings.Index(v, "/")+1:])
				}
				healthy := 0
				for _, e := range s.Endpoints {
					if e.Status == "Healthy" {
						healthy++
					}
				}
				t.row(s.Namespace, s.Name, strings.Join(vips, ","), waypointName(s.Waypoint), fmt.Sprintf("%d/%d", healthy, len(s.Endpoints)))
			}
			return t.flush()
		},
	},
	{
		name: "policies", aliases: []string{"policy", "p"}, short: "L4 authorization policies (and converted PeerAuthentications) ztunnel enforces",
		raw: func(d *configDump) json.RawMessage { return d.Raw.Policies },
		ns:  func(m map[string]any) string { s, _ := m["namespace"].(string); return s },
		table: func(w io.Writer, _ time.Time, d *configDump, ns string) error {
			t := newTable(w, "NAMESPACE", "NAME", "ACTION", "SCOPE")
			for _, p := range d.State.Policies {
				if ns != "" && p.Namespace != ns {
					continue
				}
				action := p.Action
				if p.DryRun {
					action += " (dry run)"
				}
				t.row(p.Namespace, p.Name, action, p.Scope)
			}
			return t.flush()
		},
	},
	{
		name: "certificates", aliases: []string{"certificate", "certs", "secret", "c"}, short: "workload certificates ztunnel holds: identity, state, validity",
		raw: func(d *configDump) json.RawMessage { return d.Raw.Certificates },
		ns:  func(m map[string]any) string { s, _ := m["identity"].(string); return identityNamespace(s) },
		table: func(w io.Writer, _ time.Time, d *configDump, ns string) error {
			t := newTable(w, "IDENTITY", "STATE", "PODS", "NOT BEFORE", "NOT AFTER", "RENEW AT")
			for _, c := range d.Certificates {
				if ns != "" && identityNamespace(c.Identity) != ns {
					continue
				}
				state := c.State
				if c.Error != "" {
					state += " (" + c.Error + ")"
				}
				t.row(c.Identity, state, strconv.Itoa(c.Pods), timestamp(c.NotBefore), timestamp(c.NotAfter), timestamp(c.RenewAt))
			}
			return t.flush()
		},
	},
	{
		name: "connections", aliases: []string{"connection", "conn"}, short: "open connections through ztunnel: pod, direction, addresses, identities, bytes",
		raw: func(d *configDump) json.RawMessage { return d.Raw.Connections },
		ns: func(m map[string]any) string {
			s, _ := m["pod"].(string)
			n, _, _ := strings.Cut(s, "/")
			return n
		},
		table: func(w io.Writer, now time.Time, d *configDump, ns string) error {
			t := newTable(w, "POD", "DIRECTION", "SOURCE", "DESTINATION", "SOURCE IDENTITY", "DESTINATION IDENTITY", "SECURITY", "RECEIVED", "SENT", "AGE")
			for _, c := range d.Connections {
				if n, _, _ := strings.Cut(c.Pod, "/"); ns != "" && n != ns {
					continue
				}
				t.row(c.Pod, c.Direction, c.Src, c.Dst, c.SrcIdentity, c.DstIdentity, c.Security,
					strconv.FormatInt(c.BytesReceived, 10), strconv.FormatInt(c.BytesSent, 10), age(now, c.Start))
			}
			return t.flush()
		},
	},
}

func newZtunnelConfig(env *Env) *cobra.Command {
	var node, namespace, format string
	c := &cobra.Command{
		Use:   "ztunnel-config",
		Short: "Show what a ztunnel holds: workloads, services, policies, certificates, connections",
		Long: `ztunnel-config reads a ztunnel's admin endpoint (/config_dump on 127.0.0.1:15000 of the
host-network ztunnel pod) through the API server (a port-forward). With several nodes, choose
the ztunnel with --node. -n shows one namespace only; -o json|yaml prints the section as
ztunnel sent it.`,
		Example: `  ambientctl ztunnel-config workloads
  ambientctl ztunnel-config services -n bookinfo
  ambientctl ztunnel-config certificates --node worker-2
  ambientctl ztunnel-config all -o json`,
		Aliases: []string{"zc"},
	}
	asGroup(c)
	c.PersistentFlags().StringVar(&node, "node", "", "the node whose ztunnel to read (needed when there are several)")
	c.PersistentFlags().StringVarP(&namespace, "namespace", "n", "", "show only entries of this namespace (default: all)")
	run := func(cmd *cobra.Command, sections []zcSection) error {
		ctx := cmd.Context()
		cl, err := env.clients(ctx)
		if err != nil {
			return err
		}
		pod, err := chooseZtunnel(ctx, cl, node)
		if err != nil {
			return err
		}
		d, err := fetchConfigDump(ctx, cl, pod)
		if err != nil {
			return fmt.Errorf("read ztunnel %s: %w", pod.Name, err)
		}
		if format != formatTable {
			if len(sections) == 1 {
				v, err := filterRaw(sections[0], d, namespace)
				if err != nil {
					return err
				}
				return printStructured(env.Stdout, format, v)
			}
			all := map[string]any{}
			for _, s := range sections {
				v, err := filterRaw(s, d, namespace)
				if err != nil {
					return err
				}
				all[s.name] = v
			}
			return printStructured(env.Stdout, format, all)
		}
		for i, s := range sections {
			if len(sections) > 1 {
				if i > 0 {
					fmt.Fprintln(env.Stdout)
				}
				fmt.Fprintf(env.Stdout, "%s (ztunnel %s on node %s)\n", strings.ToUpper(s.name), pod.Name, pod.Spec.NodeName)
			}
			if err := s.table(env.Stdout, env.Now(), d, namespace); err != nil {
				return err
			}
		}
		return nil
	}
	for _, s := range zcSections {
		sub := &cobra.Command{
			Use: s.name, Aliases: s.aliases, Short: "Show the " + s.short,
			Args: noArgs,
			RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, []zcSection{s}) },
		}
		addOutputFlag(sub, &format)
		c.AddCommand(sub)
	}
	allCmd := &cobra.Command{
		Use: "all", Short: "Show every section", Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, zcSections) },
	}
	addOutputFlag(allCmd, &format)
	c.AddCommand(allCmd)
	return c
}

// chooseZtunnel picks the ztunnel pod on node, or the only one.
func chooseZtunnel(ctx context.Context, c *Clients, node string) (*corev1.Pod, error) {
	pods, err := ztunnelPods(ctx, c)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no ztunnel pod in %s: is Ambient Lite installed? (ambientctl check)", install.Namespace)
	}
	var nodes []string
	for i := range pods {
		if node == "" && len(pods) == 1 || pods[i].Spec.NodeName == node {
			return &pods[i], nil
		}
		nodes = append(nodes, pods[i].Spec.NodeName)
	}
	sort.Strings(nodes)
	if node == "" {
		return nil, fmt.Errorf("%d ztunnels: choose one with --node (%s)", len(pods), strings.Join(nodes, ", "))
	}
	return nil, fmt.Errorf("no ztunnel on node %q; ztunnels run on: %s", node, strings.Join(nodes, ", "))
}

// filterRaw returns the section's entries, those of namespace ns only when
// ns is set.
func filterRaw(s zcSection, d *configDump, ns string) (any, error) {
	raw := s.raw(d)
	if len(raw) == 0 {
		return []any{}, nil
	}
	var entries []map[string]any
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("config_dump %s: %w", s.name, err)
	}
	if entries == nil {
		entries = []map[string]any{}
	}
	if ns == "" {
		return entries, nil
	}
	out := []map[string]any{}
	for _, e := range entries {
		if s.ns(e) == ns {
			out = append(out, e)
		}
	}
	return out, nil
}

// waypointName shows a workload's or service's waypoint: "<ns>/<name>" for
// a waypoint named by its Service hostname ("<ns>/<name>.<ns>.svc.…"), the
// address for one named by address, "None" without.
func waypointName(g *gatewayAddress) string {
	if g == nil {
		return "None"
	}
	ns, host, ok := strings.Cut(g.Destination, "/")
	if !ok || ns == "" {
		return host
	}
	if name, rest, ok := strings.Cut(host, "."); ok && strings.HasPrefix(rest, ns+".svc.") {
		return ns + "/" + name
	}
	return g.Destination
}

// identityNamespace is <ns> of spiffe://<td>/ns/<ns>/sa/<sa>.
func identityNamespace(id string) string {
	_, rest, ok := strings.Cut(id, "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
