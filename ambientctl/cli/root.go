// Package cli is ambientctl, Ambient Lite's command line: install and
// uninstall the mesh (the chart of package install, embedded), check it,
// manage waypoints, and look into the proxies through their admin endpoints,
// reached through the Kubernetes API server (port-forward). One file per
// command; main calls Run.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes Run's errors map to (ExitCode).
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and failed (or a check failed)
	ExitUsage   = 2 // unknown command or flag, bad arguments
)

// UsageError is a command-line mistake: the usage has been printed.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// errSilent is returned after the command printed why it failed (check's
// report): main prints nothing more.
var errSilent = errors.New("failed")

// ExitCode maps an error from Run to the process exit code.
func ExitCode(err error) int {
	var u UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &u):
		return ExitUsage
	default:
		return ExitFailure
	}
}

// Message is what main prints for err, one line (or "" when the command
// already said it: check's report, a usage error with the usage).
func Message(err error) string {
	var u UsageError
	if err == nil || errors.Is(err, errSilent) || errors.As(err, &u) {
		return ""
	}
	return "error: " + describe(err)
}

// Run runs ambientctl with args (without the program name), talking to the
// cluster the kubeconfig flags name.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunEnv(ctx, args, &Env{Stdout: stdout, Stderr: stderr})
}

// RunEnv runs ambientctl with an Env whose parts may be replaced (tests).
func RunEnv(ctx context.Context, args []string, env *Env) error {
	env.defaults()
	root := newRoot(env)
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	_, err := root.ExecuteContextC(ctx)
	return err
}

func newRoot(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "ambientctl",
		Short: "Install, check and inspect Ambient Lite, a sidecar-less service mesh",
		Long: `ambientctl installs Ambient Lite (istiod-lite, ztunnel, the waypoint GatewayClass and
the CRDs) on a Kubernetes cluster, checks it, manages waypoints, and shows what each
proxy holds, through the Kubernetes API server.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&env.Kube.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	root.PersistentFlags().StringVar(&env.Kube.Context, "context", "", "the kubeconfig context to use (default: the current context)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usage(c, err)
	})
	asGroup(root)
	root.AddCommand(
		newInstall(env), newUninstall(env), newCheck(env),
		newWaypoint(env), newProxyStatus(env), newZtunnelConfig(env), newVersion(env),
	)
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// asGroup makes c a command that only holds subcommands: without arguments
// it prints its help; an argument that is no subcommand is a usage error
// (cobra would print the help and exit 0).
func asGroup(c *cobra.Command) {
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
		}
		return usage(cmd, errors.New(msg))
	}
	c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
}

// usage prints c's usage to stderr and returns err as a UsageError.
func usage(c *cobra.Command, err error) error {
	fmt.Fprintf(c.ErrOrStderr(), "error: %v\n\n%s", err, c.UsageString())
	return UsageError{err}
}

// exactArgs and noArgs are cobra's validators, returning UsageErrors.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usage(c, fmt.Errorf("%s takes %d argument(s), got %d", c.CommandPath(), n, len(args)))
		}
		return nil
	}
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usage(c, fmt.Errorf("%s takes no arguments, got %q", c.CommandPath(), args))
	}
	return nil
}

// age formats how long ago t was, kubectl style: 45s, 12m, 3h, 5d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
