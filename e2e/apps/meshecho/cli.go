package meshecho

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
)

const serverUsage = `Usage: meshecho server [flags]

Serves, until SIGINT or SIGTERM:
  HTTP   HTTP/1.1 and h2c on one port. Every path echoes the request as
         Key=Value lines (ServiceVersion, Hostname, Namespace, Method, URL,
         Host, Proto, RemoteAddr, RequestHeader..., BodyLength, StatusCode,
         then Upstream=... per --call); /healthz answers "ok". Controls:
         ?status=NNN or x-echo-status, ?delay=150ms or x-echo-delay.
  gRPC   meshecho.Echo/Echo (google.protobuf.Struct in and out), grpc.health.v1
         and server reflection.
  TCP    a banner "ServiceVersion=<v> Hostname=<name>", then echoes until EOF.

Flags:
  --http-port N          HTTP/1.1 + h2c port (default 8080)
  --grpc-port N          gRPC port, 0 disables (default 9090)
  --tcp-port N           TCP echo port, 0 disables (default 9000)
  --listen-address IP    address to listen on (default: all)
  --name NAME            reported Hostname (default: $POD_NAME, else the host name)
  --namespace NS         reported Namespace (default: $POD_NAMESPACE)
  --version V            reported ServiceVersion, the pod's version label
                         (default: $SERVICE_VERSION, else v1)
  --call URL             GET URL on every HTTP request and append its reply;
                         repeatable, called in order
  --fail-rate F          fraction 0..1 of HTTP and gRPC requests to fail (default 0)
  --fail-code N          HTTP status of those failures (default 503; gRPC uses UNAVAILABLE)
  --log-level L          debug, info, warn or error; debug logs every request (default info)
`

const clientUsage = `Usage: meshecho client [flags] URL

URL is one of:
  http://host:port/path   HTTP/1.1
  h2c://host:port/path    HTTP/2 with prior knowledge over cleartext
  grpc://host:port        unary meshecho.Echo/Echo
  tcp://host:port         read the banner, send --message, half-close, check the echo

Flags (they may also follow URL):
  -n N                    number of requests (default 1)
  -c, --concurrency N     requests in flight at once (default 1)
  --qps R                 start at most R requests per second, 0 = no limit (default 0)
  -H, --header "N: v"     request header (HTTP) or metadata (gRPC); repeatable;
                          "Host: x" sets the Host header or gRPC authority
  --method M              HTTP method (default GET)
  --body S                HTTP request body
  --message S             gRPC message field and TCP payload (default hello)
  --timeout D             per-request timeout (default 5s)
  --keepalive             reuse connections for http, h2c and grpc; tcp always
                          dials anew (default true; --keepalive=false for one
                          connection per request)
  --expect-status N       fail unless every reply has HTTP status (or gRPC code) N
  -o text|json            output format (default text)
  --print-body            print the first reply's body before the summary

Text output, each group sorted by key:
  Requests: N  OK: N  Errors: N
  Status <code>: N
  Version <version>: N
  Hostname <name>: N
  Error <message>: N

JSON output: {"requests", "ok", "errors", "status", "versions", "hostnames",
"errorMessages", "body" (with --print-body)}.

Exit status: 0 if every request succeeded at transport level (any HTTP status,
gRPC OK, TCP echo matched) and matched --expect-status; 1 otherwise; 2 for
usage errors.
`

// newFlagSet returns a FlagSet that reports errors and -h with text.
func newFlagSet(name, text string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, text) }
	return fs
}

// parseFlags parses args into fs, allowing flags after positional
// arguments, and returns the positional ones. It returns flag.ErrHelp for -h
// and an ErrUsage error for bad flags (the message and usage are already on
// stderr).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usageError writes err and the usage text to stderr and returns an
// ErrUsage error.
func usageError(stderr io.Writer, cmd, text string, err error) error {
	fmt.Fprintf(stderr, "meshecho %s: %v\n\n%s", cmd, err, text)
	return fmt.Errorf("%w: %w", ErrUsage, err)
}

// serverOptions are the server command's flags.
type serverOptions struct {
	cfg                         ServerConfig
	httpPort, grpcPort, tcpPort int
	listenAddress               string
	level                       slog.Level
}

func (o *serverOptions) flagSet(stderr io.Writer) *flag.FlagSet {
	fs := newFlagSet("meshecho server", serverUsage, stderr)
	fs.IntVar(&o.httpPort, "http-port", 8080, "HTTP/1.1 + h2c port")
	fs.IntVar(&o.grpcPort, "grpc-port", 9090, "gRPC port, 0 disables")
	fs.IntVar(&o.tcpPort, "tcp-port", 9000, "TCP echo port, 0 disables")
	fs.StringVar(&o.listenAddress, "listen-address", "", "address to listen on")
	fs.StringVar(&o.cfg.Name, "name", envOr("POD_NAME", hostname()), "reported Hostname")
	fs.StringVar(&o.cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "reported Namespace")
	fs.StringVar(&o.cfg.Version, "version", envOr("SERVICE_VERSION", DefaultVersion), "reported ServiceVersion")
	fs.Func("call", "upstream URL, repeatable", func(v string) error {
		o.cfg.Calls = append(o.cfg.Calls, v)
		return nil
	})
	fs.Float64Var(&o.cfg.FailRate, "fail-rate", 0, "fraction of requests to fail")
	fs.IntVar(&o.cfg.FailCode, "fail-code", DefaultFailCode, "HTTP status of failures")
	fs.TextVar(&o.level, "log-level", slog.LevelInfo, "log level")
	return fs
}

func runServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	var o serverOptions
	positional, err := parseFlags(o.flagSet(stderr), args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case err != nil:
		return err
	case len(positional) > 0:
		return usageError(stderr, "server", serverUsage, fmt.Errorf("unexpected argument %q", positional[0]))
	}
	for _, p := range []struct {
		flag string
		port int
		min  int
	}{{"--http-port", o.httpPort, 1}, {"--grpc-port", o.grpcPort, 0}, {"--tcp-port", o.tcpPort, 0}} {
		if p.port < p.min || p.port > 65535 {
			return usageError(stderr, "server", serverUsage, fmt.Errorf("%s %d: want a port from %d to 65535", p.flag, p.port, p.min))
		}
	}
	cfg := o.cfg
	if err := cfg.Validate(); err != nil {
		return usageError(stderr, "server", serverUsage, err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level}))
	srv, err := NewServer(cfg)
	if err != nil {
		return err
	}
	lc := ListenConfig{HTTP: net.JoinHostPort(o.listenAddress, strconv.Itoa(o.httpPort))}
	if o.grpcPort > 0 {
		lc.GRPC = net.JoinHostPort(o.listenAddress, strconv.Itoa(o.grpcPort))
	}
	if o.tcpPort > 0 {
		lc.TCP = net.JoinHostPort(o.listenAddress, strconv.Itoa(o.tcpPort))
	}
	ls, err := lc.Listen(ctx)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ls)
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// headerFlag collects repeated -H values.
type headerFlag []string

func (h *headerFlag) String() string     { return fmt.Sprint(*h) }
func (h *headerFlag) Set(v string) error { *h = append(*h, v); return nil }

// clientOptions are the client command's flags.
type clientOptions struct {
	cfg          ClientConfig
	headers      headerFlag
	keepAlive    bool
	expectStatus int
	output       string
	printBody    bool
}

func (o *clientOptions) flagSet(stderr io.Writer) *flag.FlagSet {
	fs := newFlagSet("meshecho client", clientUsage, stderr)
	fs.IntVar(&o.cfg.Count, "n", DefaultCount, "number of requests")
	fs.IntVar(&o.cfg.Concurrency, "c", 1, "requests in flight at once")
	fs.IntVar(&o.cfg.Concurrency, "concurrency", 1, "requests in flight at once")
	fs.Float64Var(&o.cfg.QPS, "qps", 0, "requests per second, 0 = no limit")
	fs.Var(&o.headers, "H", "request header \"Name: value\", repeatable")
	fs.Var(&o.headers, "header", "request header \"Name: value\", repeatable")
	fs.StringVar(&o.cfg.Method, "method", DefaultMethod, "HTTP method")
	fs.StringVar(&o.cfg.Body, "body", "", "HTTP request body")
	fs.StringVar(&o.cfg.Message, "message", DefaultMessage, "gRPC message and TCP payload")
	fs.DurationVar(&o.cfg.Timeout, "timeout", DefaultTimeout, "per-request timeout")
	fs.BoolVar(&o.keepAlive, "keepalive", true, "reuse connections")
	fs.IntVar(&o.expectStatus, "expect-status", 0, "required status of every reply")
	fs.StringVar(&o.output, "o", "text", "output format: text or json")
	fs.BoolVar(&o.printBody, "print-body", false, "print the first reply's body")
	return fs
}

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o clientOptions
	positional, err := parseFlags(o.flagSet(stderr), args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case err != nil:
		return err
	case len(positional) == 0:
		return usageError(stderr, "client", clientUsage, errors.New("missing URL"))
	case len(positional) > 1:
		return usageError(stderr, "client", clientUsage, fmt.Errorf("unexpected argument %q after the URL", positional[1]))
	}
	cfg := o.cfg
	cfg.URL = positional[0]
	cfg.Headers = o.headers
	cfg.DisableKeepAlive = !o.keepAlive
	if cfg.Count < 1 {
		return usageError(stderr, "client", clientUsage, fmt.Errorf("-n %d: want at least 1", cfg.Count))
	}
	if cfg.Concurrency < 1 {
		return usageError(stderr, "client", clientUsage, fmt.Errorf("--concurrency %d: want at least 1", cfg.Concurrency))
	}
	if cfg.Timeout <= 0 {
		return usageError(stderr, "client", clientUsage, fmt.Errorf("--timeout %v: want a positive duration", cfg.Timeout))
	}
	if o.output != "text" && o.output != "json" {
		return usageError(stderr, "client", clientUsage, fmt.Errorf("-o %q: want text or json", o.output))
	}
	if err := cfg.Validate(); err != nil {
		return usageError(stderr, "client", clientUsage, err)
	}
	if scheme, _, _ := parseTarget(cfg.URL); scheme == "tcp" && o.expectStatus != 0 {
		return usageError(stderr, "client", clientUsage, errors.New("--expect-status does not apply to tcp:// (it has no status)"))
	}

	rep, runErr := RunClient(ctx, cfg)
	if rep == nil {
		return runErr
	}
	if !o.printBody {
		rep.Body = ""
	}
	if o.output == "json" {
		if err := rep.WriteJSON(stdout); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	} else {
		if o.printBody && rep.Body != "" {
			fmt.Fprintf(stdout, "%s\n", rep.Body)
		}
		if err := rep.WriteText(stdout); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	if runErr != nil {
		return runErr
	}
	return rep.Check(o.expectStatus)
}
