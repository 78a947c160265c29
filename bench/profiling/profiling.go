// Package profiling is the benchmarks' way of profiling a process they
// started without a flag of its own: commands on its stdin start and stop a
// CPU profile. It imports nothing heavier than runtime/pprof, so that a
// measured process linking it keeps its own memory footprint.
package profiling

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
)

// ServeCommands reads a process's commands on stdin until it closes
// (the bench is gone: nil) or ctx ends (nil): "profile NAME" starts a CPU
// profile of this process into dir/<prefix>-NAME.pprof, "stop" ends it.
// Without dir the commands are ignored. A profile still running is
// written when it returns.
func ServeCommands(ctx context.Context, stdin io.Reader, dir, prefix string) error {
	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case cmds <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	var profile *os.File
	defer func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case cmd, ok := <-cmds:
			if !ok {
				return nil
			}
			switch name, isProfile := strings.CutPrefix(cmd, "profile "); {
			case isProfile && profile == nil && dir != "":
				f, err := os.Create(filepath.Join(dir, prefix+"-"+name+".pprof"))
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
				profile = f
			case cmd == "stop" && profile != nil:
				pprof.StopCPUProfile()
				if err := profile.Close(); err != nil {
					return err
				}
				profile = nil
			}
		}
	}
}
