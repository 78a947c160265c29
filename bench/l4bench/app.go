package l4bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fortio.org/fortio/fhttp"
	"fortio.org/log"
)

// The "app" role is the server pod's application: fortio's echo handler
// (the request body comes back) on the HTTP ports and a throughput sink on
// the sink ports. It prints "ready" once every port listens, and answers
// the command "count" on stdin with "count N": the HTTP requests it has
// served so far (over every port), so that a benchmark can see how a proxy
// split the load between two apps.

func runApp(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpPorts := fs.String("http", "", "comma-separated ports for the fortio echo server")
	sinkPorts := fs.String("sink", "", "comma-separated ports for the throughput sink")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	log.SetLogLevelQuiet(log.Warning)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	listen := func(list string) ([]net.Listener, error) {
		var out []net.Listener
		for p := range strings.SplitSeq(list, ",") {
			if p == "" {
				continue
			}
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return nil, fmt.Errorf("%w: port %q", ErrUsage, p)
			}
			ln, err := net.Listen("tcp", ":"+p)
			if err != nil {
				return nil, err
			}
			lns = append(lns, ln)
			out = append(out, ln)
		}
		return out, nil
	}
	httpLns, err := listen(*httpPorts)
	if err != nil {
		return err
	}
	sinkLns, err := listen(*sinkPorts)
	if err != nil {
		return err
	}

	var served atomic.Int64
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fhttp.EchoHandler(w, r)
	})
	srv := &http.Server{Handler: echo, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	for _, ln := range httpLns {
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	sinks := &sinkServer{conns: map[net.Conn]bool{}}
	for _, ln := range sinkLns {
		wg.Go(func() { sinks.serve(ln) })
	}
	fmt.Fprintln(stdout, "ready")
	go func() {
		// Ends with stdin (the bench closes it when it stops the app).
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if sc.Text() == "count" {
				fmt.Fprintf(stdout, "count %d\n", served.Load())
			}
		}
	}()
	<-ctx.Done()
	_ = srv.Close()
	for _, ln := range sinkLns {
		ln.Close()
	}
	sinks.closeAll()
	wg.Wait()
	return nil
}

// sinkServer reads and discards everything a client sends and writes one
// byte back for every sinkBlock read (see bulkSend).
type sinkServer struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func (s *sinkServer) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			_ = sink(c)
		})
	}
}

func (s *sinkServer) closeAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// sink serves one sink connection until the client closes it.
func sink(c net.Conn) error {
	buf := make([]byte, 256<<10)
	var pending int64 // bytes read since the last acknowledgement
	for {
		n, err := c.Read(buf)
		pending += int64(n)
		if pending >= sinkBlock {
			ack := make([]byte, pending/sinkBlock)
			pending %= sinkBlock
			if _, werr := c.Write(ack); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
