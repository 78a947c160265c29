package images

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"
)

// ErrUsage marks a command-line mistake; main exits 2 for it.
var ErrUsage = errors.New("usage error")

const usage = `usage: images [flags]

Builds the project's OCI images without Docker, as docker-archive tarballs
<out>/<name>.tar tagged <prefix>/<name>:<tag>; with --load imports them into
the local cluster's containerd, with --push sends them to a registry.

An image standing in for an upstream one keeps its fixed reference whatever
--prefix and --tag say, but --push sends it to PREFIX/<name>:<tag> like the
others. Fixed references:
%s
images: %s

flags:
`

// Run is the images command's main.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := Options{Logger: slog.New(slog.NewTextHandler(stderr, nil))}
	var load bool
	var push, only string
	fs.StringVar(&opts.OutDir, "out", "_output/images", "directory for the tarballs")
	fs.StringVar(&opts.Tag, "tag", DefaultTag, "tag of every image")
	fs.StringVar(&opts.Prefix, "prefix", DefaultPrefix, "images are `PREFIX`/<name>:<tag>, but for fixed references")
	fs.StringVar(&opts.ToolsDir, "tools-dir", "", "directory of prebuilt upstream binaries such as coredns (default: none; images needing one are skipped)")
	fs.BoolVar(&load, "load", false, "import each image into the local containerd ("+DefaultContainerdAddress+", namespace "+DefaultNamespace+")")
	fs.StringVar(&push, "push", "", "push each image to `REGISTRY/PREFIX`/<name>:<tag>, fixed references included (replaces --prefix)")
	fs.StringVar(&only, "only", "", "build only these images, a comma-separated `list` (default: all available)")
	fs.Usage = func() {
		var fixed strings.Builder
		for _, img := range Catalog() {
			if img.Ref != "" {
				fmt.Fprintf(&fixed, "  %s: %s\n", img.Name, img.Ref)
			}
		}
		fmt.Fprintf(stderr, usage, fixed.String(), strings.Join(Names(), ", "))
		fs.PrintDefaults()
	}
	fail := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "images: "+format+"\n", a...)
		fs.Usage()
		return ErrUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return ErrUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if load && push != "" {
		return fail("--load and --push exclude each other")
	}
	if push != "" {
		opts.Prefix = push
	}
	for _, n := range strings.Split(only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			opts.Names = append(opts.Names, n)
		}
	}
	if err := opts.Validate(); err != nil {
		return fail("%v", err)
	}

	start := time.Now()
	built, err := Build(ctx, opts)
	if err != nil {
		return err
	}
	if len(built) == 0 {
		return errors.New("no image to build: every image needing a prebuilt binary was skipped (see --tools-dir)")
	}
	took := fmt.Sprintf("built %d images in %s", len(built), time.Since(start).Round(10*time.Millisecond))
	switch {
	case load:
		start := time.Now()
		for _, b := range built {
			if err := Import(ctx, b.Tarball); err != nil {
				return err
			}
		}
		took += fmt.Sprintf(", imported into containerd in %s", time.Since(start).Round(10*time.Millisecond))
	case push != "":
		start := time.Now()
		for i, b := range built {
			if _, err := Push(ctx, b.Tarball, b.PushRef); err != nil {
				return err
			}
			built[i].Ref = b.PushRef // what the table shows
		}
		took += fmt.Sprintf(", pushed in %s", time.Since(start).Round(10*time.Millisecond))
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREFERENCE\tDIGEST\tIMAGE ID\tSIZE\tTARBALL")
	for _, b := range built {
		id := strings.TrimPrefix(b.ID, "sha256:")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Ref, b.Digest, id[:min(12, len(id))], mebibytes(b.Size), b.Tarball)
	}
	tw.Flush()
	fmt.Fprintln(stdout, took)
	return nil
}

// mebibytes formats a size in bytes for people.
func mebibytes(n int64) string {
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}
