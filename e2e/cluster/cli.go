package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
)

// ErrUsage marks a command-line mistake; main exits 2 for it.
var ErrUsage = errors.New("usage error")

const usage = `usage: cluster <command> [flags]

Starts and stops the project's local single-node Kubernetes cluster.

commands:
  up          bring the cluster up (idempotent; recovers from a run that died)
  down        stop every process it started and restore the host
  status      show the components and whether the cluster serves
  kubeconfig  print the admin kubeconfig's path

flags:
`

// Run is the cluster command's main.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	var nodeIP string
	fs.StringVar(&cfg.StateDir, "state-dir", DefaultStateDir, "directory for certificates, data, logs and PID files")
	fs.StringVar(&cfg.ToolsDir, "tools-dir", "", "directory with the upstream binaries (default: build or reuse them with e2e/cluster/build-tools.sh)")
	fs.StringVar(&nodeIP, "node-ip", DefaultNodeIP.String(), "address added to lo for the API server and kubelet")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if len(args) == 0 {
		fs.Usage()
		return ErrUsage
	}
	cmd := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cluster %s: unexpected argument %q\n", cmd, fs.Arg(0))
		fs.Usage()
		return ErrUsage
	}
	ip, err := netip.ParseAddr(nodeIP)
	if err != nil {
		fmt.Fprintf(stderr, "cluster: -node-ip: %v\n", err)
		return ErrUsage
	}
	cfg.NodeIP = ip
	switch cmd {
	case "up":
		_, err := Up(ctx, cfg, stdout)
		return err
	case "down":
		return Down(ctx, cfg, stdout)
	case "status":
		return Status(ctx, cfg, stdout)
	case "kubeconfig":
		fmt.Fprintln(stdout, cfg.KubeconfigPath())
		return nil
	case "help", "-h", "--help":
		fs.Usage()
		return nil
	default:
		fmt.Fprintf(stderr, "cluster: unknown command %q\n", cmd)
		fs.Usage()
		return ErrUsage
	}
}
