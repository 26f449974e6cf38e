package shm

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const childEnv = "BOARDHA_SHM_TEST_CHILD"

// TestMain lets the test binary act as a second process: re-executed with childEnv set,
// it runs one role against a region and never runs the tests.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Getenv("BOARDHA_SHM_NAME")))
	}
	os.Exit(m.Run())
}

// runChild performs role, prints "ready" on stdout, then blocks until stdin closes (the
// parent dying or closing it) so it never outlives the test.
func runChild(role, name string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	switch role {
	case "reader":
		r, err := Attach(name, ReadOnly)
		if err != nil {
			return fail(err)
		}
		s, err := r.AcquireReader()
		if err != nil {
			return fail(err)
		}
		// Without a txid the slot stays held with no snapshot, as a
		// reader's between reads.
		if v := os.Getenv("BOARDHA_SHM_TXID"); v != "" {
			txid, _ := strconv.ParseUint(v, 10, 64)
			s.Set(txid)
		}
	case "writer":
		r, err := Attach(name, ReadWrite)
		if err != nil {
			return fail(err)
		}
		if err := r.LockWriter(); err != nil {
			return fail(err)
		}
	case "lockfail":
		// Try to take a lock the parent holds; report the error text instead of "ready".
		r, err := Attach(name, ReadWrite)
		if err != nil {
			return fail(err)
		}
		err = r.LockWriter()
		if !errors.Is(err, ErrWriterActive) {
			return fail(fmt.Errorf("LockWriter = %v, want ErrWriterActive", err))
		}
		fmt.Println("refused", err)
		return 0
	default:
		return fail(fmt.Errorf("unknown role %q", role))
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	line  string
}

// startChild re-executes the test binary in role and waits (with a deadline) for its
// first stdout line. The child is killed and reaped at cleanup whatever happens.
func startChild(t *testing.T, role, name string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, "BOARDHA_SHM_NAME="+name)
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(l)
	}()
	select {
	case c.line = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatalf("child %s: no output within 20s; stderr: %s", role, stderr.String())
	}
	if c.line == "" {
		cmd.Wait()
		t.Fatalf("child %s exited without output: %v; stderr: %s", role, cmd.ProcessState, stderr.String())
	}
	return c
}

// kill SIGKILLs the child and reaps it, so its pid is gone from /proc.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// uniqueName returns a /dev/shm name private to this process and test, removed at cleanup
// (also when the test fails).
func uniqueName(t testing.TB) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	clean := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	name := fmt.Sprintf("boardha-shmtest-%d-%s-%s", os.Getpid(), clean, hex.EncodeToString(b[:]))
	t.Cleanup(func() {
		if err := Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name
}

// newRegion creates a region (named unless name is "") closed at cleanup.
func newRegion(t testing.TB, name string, opt Options) *Region {
	t.Helper()
	r, err := Create(name, opt)
	if err != nil {
		t.Fatalf("Create(%q, %+v): %v", name, opt, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func attach(t testing.TB, name string, mode AttachMode) *Region {
	t.Helper()
	r, err := Attach(name, mode)
	if err != nil {
		t.Fatalf("Attach(%q, %v): %v", name, mode, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// killNoReap SIGKILLs the child and waits until it has exited without reaping it, so it
// stays a zombie: its pid still exists in /proc, as when a holder's parent is slow to
// wait for it.
func (c *child) killNoReap(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, c.pid(), &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("waitid(%d): %v", c.pid(), err)
		}
		return
	}
}
