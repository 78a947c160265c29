// Package meshecho is the test application of the e2e tests and the demo: one
// binary that serves HTTP/1.1 and h2c, gRPC and raw TCP echo endpoints which
// report who answered (service version, pod name, namespace), and a load
// client that calls them and counts the answers by status, version and pod.
//
// The server side is [Server] (constructed with [NewServer] from a
// [ServerConfig] and run on caller-provided [Listeners]); the client side is
// [RunClient] with a [ClientConfig], returning a [Report]. [Run] is the
// command line around both.
package meshecho

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// ErrUsage marks a command-line mistake; main exits 2 for it. The usage text
// has already been written to stderr when Run returns it.
var ErrUsage = errors.New("usage error")

// Version is the meshecho build version, set with
// -ldflags "-X github.com/ambientlite/mesh/e2e/apps/meshecho.Version=...".
// When empty, the module version from the build info is used.
var Version = ""

const usage = `meshecho: echo server and load client for the Ambient Lite e2e tests.

Usage:
  meshecho server [flags]        serve HTTP/1.1+h2c, gRPC and TCP echo
  meshecho client [flags] URL    call URL (http://, h2c://, grpc://, tcp://) and count replies
  meshecho version               print the version
  meshecho help [command]        print this help or a command's flags
`

// Run runs the meshecho command line: args are the arguments after the
// program name. Output goes to stdout, usage messages and logs to stderr.
// It returns ErrUsage (wrapped) for command-line mistakes.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ErrUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "server":
		return runServer(ctx, rest, stdout, stderr)
	case "client":
		return runClient(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "meshecho %s %s\n", buildVersion(), runtime.Version())
		return nil
	case "help", "-h", "-help", "--help":
		return runHelp(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "meshecho: unknown command %q\n\n%s", cmd, usage)
		return fmt.Errorf("unknown command %q: %w", cmd, ErrUsage)
	}
}

func runHelp(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch args[0] {
	case "server":
		fmt.Fprint(stdout, serverUsage)
	case "client":
		fmt.Fprint(stdout, clientUsage)
	default:
		fmt.Fprintf(stderr, "meshecho help: unknown command %q\n\n%s", args[0], usage)
		return fmt.Errorf("unknown command %q: %w", args[0], ErrUsage)
	}
	return nil
}

func buildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
