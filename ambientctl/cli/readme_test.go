package cli

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// README.md describes every command, and its example command lines use
// commands and flags that exist.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	root := newRoot(&Env{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden {
				continue
			}
			path := strings.TrimPrefix(sub.CommandPath(), "ambientctl ")
			parent := strings.TrimPrefix(c.CommandPath()+" ", "ambientctl ")
			// "ambientctl waypoint apply", or one of "ambientctl waypoint generate|apply|…".
			listed := regexp.MustCompile(`ambientctl ` + regexp.QuoteMeta(parent) + `[\w|-]*\b` + regexp.QuoteMeta(sub.Name()) + `\b`)
			if !strings.Contains(readme, "ambientctl "+path) && !listed.MatchString(readme) {
				t.Errorf("README.md does not mention `ambientctl %s`", path)
			}
			walk(sub)
		}
	}
	walk(root)

	lines := 0
	for line := range strings.Lines(readme) {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "$ ")
		line = strings.TrimPrefix(line, "_output/bin/")
		if !strings.HasPrefix(line, "ambientctl ") || strings.ContainsAny(line, "[|…<") {
			continue
		}
		lines++
		args := strings.Fields(strings.TrimPrefix(line, "ambientctl "))
		cmd, rest, err := newRoot(&Env{}).Find(args)
		if err != nil {
			t.Errorf("README: %q: %v", line, err)
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("README: %q: %v", line, err)
		}
		if cmd.HasSubCommands() && len(cmd.Flags().Args()) > 0 {
			t.Errorf("README: %q: %q is no subcommand of %s", line, cmd.Flags().Args()[0], cmd.CommandPath())
		}
	}
	if lines < 10 {
		t.Errorf("only %d example lines found in README.md", lines)
	}
	for _, fact := range []string{"-update", "127.0.0.1:15000", "15014", "/debug/syncz", "/config_dump", fieldManager, "--kubeconfig", "--context"} {
		if !strings.Contains(readme, fact) {
			t.Errorf("README.md does not mention %q", fact)
		}
	}
}
