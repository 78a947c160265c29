package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary plays two more parts, chosen by this variable: "pause"
// starts a child that exits at once, prints its PID and runs main; "exit"
// exits at once.
const roleEnv = "PAUSE_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "exit":
		os.Exit(0)
	case "pause":
		self, err := os.Executable()
		if err != nil {
			panic(err)
		}
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, roleEnv+"=") })
		child, err := os.StartProcess(self, []string{self}, &os.ProcAttr{Env: append(env, roleEnv+"=exit")})
		if err != nil {
			panic(err)
		}
		fmt.Println(child.Pid)
		main()
	}
	os.Exit(m.Run())
}

func TestPause(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), roleEnv+"=pause")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				t.Fatalf("read child PID: %v", err)
			}
			child, err := strconv.Atoi(line[:len(line)-1])
			if err != nil {
				t.Fatalf("child PID %q: %v", line, err)
			}
			// Until pause reaps it, the exited child stays a zombie in /proc.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", child)); errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("child %d was never reaped", child)
				}
			}

			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("pause after %s: %v, want exit status 0", tc.name, err)
			}
		})
	}
}
