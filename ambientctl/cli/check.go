package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// A check is one line of `ambientctl check`: data, run by runChecks and
// printed by a separate renderer (table or JSON).
type check struct {
	category    string
	description string
	// hint says what to do when the check fails or warns.
	hint string
	// fatal: the checks after it cannot run when it fails.
	fatal bool
	// pre: part of `check --pre` (before install); post: of `check`.
	pre, post bool
	// run returns nil when the check passes, a warning to warn, any other
	// error to fail. The error's text is shown under the check.
	run func(ctx context.Context, s *checkState) error
}

// warning is a check result that does not fail the run.
type warning struct{ msg string }

func (w warning) Error() string { return w.msg }

func warnf(format string, args ...any) error { return warning{fmt.Sprintf(format, args...)} }

// Results of a check.
const (
	resultSuccess = "success"
	resultWarning = "warning"
	resultError   = "error"
)

// checkReport is what check prints: -o json gives it as is.
type checkReport struct {
	Success    bool            `json:"success"`
	Categories []checkCategory `json:"categories"`
}

type checkCategory struct {
	Name   string        `json:"categoryName"`
	Checks []checkResult `json:"checks"`
}

type checkResult struct {
	Description string `json:"description"`
	Result      string `json:"result"`
	Error       string `json:"error,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

func newCheck(env *Env) *cobra.Command {
	var pre bool
	var format string
	c := &cobra.Command{
		Use:   "check",
		Short: "Check that the mesh is healthy (or, with --pre, that the cluster is ready for it)",
		Long: `check runs a list of checks and prints one line each: ✔ passed, ‼ warning, ✖ failed
(with what is wrong and a hint). It exits non-zero when a check failed.

check: Kubernetes version, the CRDs, istiod ready, the GatewayClass accepted, the CA root
certificate valid (a warning when it expires within 30 days), a ztunnel ready on every node,
every ztunnel and waypoint connected to istiod and in sync, every enrolled workload holding
its certificate.
check --pre: Kubernetes version, the permissions install needs, the Gateway API channel,
no other control plane in istio-system.`,
		Example: `  ambientctl check --pre
  ambientctl check
  ambientctl check -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			report := runChecks(cmd.Context(), env, checks(), pre)
			if format == formatTable {
				printCheckReport(env.Stdout, report)
			} else if err := printStructured(env.Stdout, format, report); err != nil {
				return err
			}
			if !report.Success {
				return errSilent
			}
			return nil
		},
	}
	c.Flags().BoolVar(&pre, "pre", false, "check the cluster before installing instead of the installed mesh")
	addOutputFlag(c, &format)
	return c
}

// runChecks runs the checks of the mode in order, stopping after a fatal
// one fails.
func runChecks(ctx context.Context, env *Env, list []check, pre bool) checkReport {
	s := &checkState{env: env}
	report := checkReport{Success: true}
	for _, ch := range list {
		if pre && !ch.pre || !pre && !ch.post {
			continue
		}
		err := ch.run(ctx, s)
		r := checkResult{Description: ch.description, Result: resultSuccess}
		var w warning
		switch {
		case err == nil:
		case errors.As(err, &w):
			r.Result, r.Error, r.Hint = resultWarning, w.msg, ch.hint
		default:
			r.Result, r.Error, r.Hint = resultError, describe(err), ch.hint
			report.Success = false
		}
		if n := len(report.Categories); n == 0 || report.Categories[n-1].Name != ch.category {
			report.Categories = append(report.Categories, checkCategory{Name: ch.category})
		}
		cat := &report.Categories[len(report.Categories)-1]
		cat.Checks = append(cat.Checks, r)
		if r.Result == resultError && ch.fatal {
			break
		}
	}
	return report
}

// Marks of the three results, as Linkerd prints them.
var resultMarks = map[string]string{resultSuccess: "✔", resultWarning: "‼", resultError: "✖"}

func printCheckReport(w io.Writer, r checkReport) {
	failed, warned := 0, 0
	for i, cat := range r.Categories {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s\n%s\n", cat.Name, strings.Repeat("-", len(cat.Name)))
		for _, c := range cat.Checks {
			fmt.Fprintf(w, "%s %s\n", resultMarks[c.Result], c.Description)
			if c.Error != "" {
				for line := range strings.Lines(c.Error) {
					fmt.Fprintf(w, "    %s\n", strings.TrimRight(line, "\n"))
				}
			}
			if c.Hint != "" {
				fmt.Fprintf(w, "    hint: %s\n", c.Hint)
			}
			switch c.Result {
			case resultError:
				failed++
			case resultWarning:
				warned++
			}
		}
	}
	fmt.Fprintln(w)
	switch {
	case failed > 0:
		fmt.Fprintf(w, "Status check results are ✖: %s failed, %s\n", plural(failed, "check"), plural(warned, "warning"))
	case warned > 0:
		fmt.Fprintf(w, "Status check results are ✔ with %s\n", plural(warned, "warning"))
	default:
		fmt.Fprintln(w, "Status check results are ✔")
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
