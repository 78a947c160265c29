package l4bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child is a process the bench started: a role of its own binary or a peer
// proxy. It dies with the bench (PR_SET_PDEATHSIG), however the bench ends.
type Child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout, line by line
	done  chan struct{} // closed once the process has exited
	err   error         // its exit status, set before done is closed

	mu   sync.Mutex
	tail []string // the last lines of stderr, for error messages
}

// StartChild starts argv with env added to this process's environment.
// Its stdout is read line by line (see WaitLine), its stderr is copied to
// logw with the child's name in front of every line.
func StartChild(name string, argv, env []string, logw io.Writer) (*Child, error) {
	c := &Child{name: name, lines: make(chan string, 64), done: make(chan struct{})}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	if len(env) > 0 {
		c.cmd.Env = append(os.Environ(), env...)
	}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.cmd.Stdout = &lineWriter{fn: func(l string) {
		select {
		case c.lines <- l:
		default: // nobody reads that much: drop
		}
	}}
	c.cmd.Stderr = &lineWriter{fn: func(l string) {
		c.mu.Lock()
		c.tail = append(c.tail, l)
		if len(c.tail) > 10 {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
		fmt.Fprintf(logw, "  [%s] %s\n", name, l)
	}}
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	c.stdin = stdin
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Name is the name the child was started with (its log prefix).
func (c *Child) Name() string { return c.name }

// Pid is the process id (nsenter execs the command in place, so it is the
// command's own).
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Exited returns an error describing how the child ended, with the last
// lines it wrote to stderr.
func (c *Child) Exited() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := fmt.Sprintf("%s exited (%v)", c.name, c.err)
	if len(c.tail) > 0 {
		msg += ": " + strings.Join(c.tail, " | ")
	}
	return errors.New(msg)
}

// WaitLine waits for a stdout line starting with prefix and returns it.
func (c *Child) WaitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-c.done:
			// Lines written just before exiting are still in the channel.
			select {
			case l := <-c.lines:
				if strings.HasPrefix(l, prefix) {
					return l, nil
				}
				continue
			default:
			}
			return "", c.Exited()
		case <-t.C:
			return "", fmt.Errorf("%s: no %q line within %s", c.name, prefix, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// Send writes one command line to the child's stdin.
func (c *Child) Send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// Running reports whether the child has not exited.
func (c *Child) Running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Stop ends the child: SIGTERM (and stdin closed), then SIGKILL after grace.
func (c *Child) Stop(grace time.Duration) {
	c.stdin.Close()
	if !c.Running() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// lineWriter calls fn for every complete line written to it, without the
// newline; an unterminated last line is dropped.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
