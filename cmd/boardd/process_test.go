package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildDir  string
)

// boarddBinary builds this command once per test run.
func boarddBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "boardd-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "boardd")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// procBoard is one `boardd run` process under test.
type procBoard struct {
	site   uint16
	sock   string
	shm    string
	args   []string
	ns     *rig.Board
	cmd    *exec.Cmd
	done   chan struct{}
	logf   string
	killed bool
}

type procGroup struct {
	t      *testing.T
	bin    string
	boards []*procBoard
}

var testTimings = []string{"-heartbeat-send", "5ms", "-heartbeat-monitor", "200ms", "-election-timeout", "80ms",
	"-ack-timeout", "1s", "-pool-size", "16M", "-log-size", "1M", "-checkpoint-kib", "128", "-log-level", "info"}

func newProcGroup(t *testing.T, n int, chassis *rig.Chassis) *procGroup {
	t.Helper()
	g := &procGroup{t: t, bin: boarddBinary(t)}
	dir := t.TempDir()
	peers := make([]string, n)
	if chassis == nil {
		ports, err := freeUDPPorts(n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			peers[i] = fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[i])
		}
	} else {
		for i := range n {
			peers[i] = strconv.Itoa(i + 1)
		}
	}
	for i := range n {
		site := uint16(i + 1)
		b := &procBoard{site: site, sock: filepath.Join(dir, fmt.Sprintf("b%d.sock", site)),
			shm: fmt.Sprintf("boardha-ptest%d-%d", os.Getpid(), site), logf: filepath.Join(dir, fmt.Sprintf("b%d.log", site))}
		b.args = append([]string{"run", "-site", strconv.Itoa(int(site)), "-group", "ptest", "-peers", strings.Join(peers, ","),
			"-sock", b.sock, "-shm", b.shm}, testTimings...)
		if chassis != nil {
			b.ns = chassis.Boards[i]
			b.args = append(b.args, "-transport", "raw", "-iface", b.ns.Iface)
		}
		g.boards = append(g.boards, b)
	}
	t.Cleanup(func() {
		for _, b := range g.boards {
			g.kill(b)
			os.Remove(filepath.Join("/dev/shm", b.shm))
			if t.Failed() {
				if log, err := os.ReadFile(b.logf); err == nil {
					t.Logf("board %d log:\n%s", b.site, lastLines(string(log), 40))
				}
			}
		}
	})
	for _, b := range g.boards {
		g.start(b)
	}
	return g
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (g *procGroup) start(b *procBoard) {
	g.t.Helper()
	logf, err := os.OpenFile(b.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	if b.ns != nil {
		b.cmd = b.ns.Command(context.Background(), g.bin, b.args...)
	} else {
		b.cmd = exec.Command(g.bin, b.args...)
	}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	logf.Close()
	b.done = make(chan struct{})
	b.killed = false
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(b.cmd, b.done)
}

func (g *procGroup) kill(b *procBoard) {
	if b.cmd == nil || b.killed {
		return
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
	b.killed = true
}

// client runs a boardd client command against board b.
func (g *procGroup) client(b *procBoard, args ...string) (int, string) {
	full := append([]string{args[0], "-sock", b.sock, "-timeout", "3s"}, args[1:]...)
	code, out, errs := cli(full...)
	return code, out + errs
}

func (g *procGroup) stat(b *procBoard) (board.Stat, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dial(ctx, b.sock)
	if err != nil {
		return board.Stat{}, false
	}
	defer c.Close()
	resp, err := c.call(ctx, request{Op: "stat"})
	if err != nil || resp.Stat == nil {
		return board.Stat{}, false
	}
	return *resp.Stat, true
}

// master waits until a live board other than not is master and every live
// board knows it.
func (g *procGroup) master(not uint16) *procBoard {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var m uint16
		agree := true
		for _, b := range g.boards {
			if b.killed {
				continue
			}
			st, ok := g.stat(b)
			if !ok || st.Master == 0 || st.Master == not || (m != 0 && st.Master != m) {
				agree = false
				break
			}
			m = st.Master
		}
		if agree && m != 0 {
			return g.boards[m-1]
		}
		time.Sleep(10 * time.Millisecond) // polling boards' state with a deadline
	}
	g.t.Fatalf("no agreed master (other than %d) within 30s", not)
	return nil
}

func (g *procGroup) eventually(what string, cond func() bool) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// scenario: put on one board, get on all; kill -9 the master, a new one is
// elected and writes resume; a restarted board with empty memory catches up.
func runScenario(t *testing.T, g *procGroup) {
	m := g.master(0)
	var replica *procBoard
	for _, b := range g.boards {
		if b != m {
			replica = b
			break
		}
	}
	// A put on a replica is forwarded to the master.
	if code, out := g.client(replica, "put", "hello", "world"); code != 0 {
		t.Fatalf("put via replica %d: exit %d: %s", replica.site, code, out)
	}
	for _, b := range g.boards {
		g.eventually(fmt.Sprintf("hello on board %d", b.site), func() bool {
			code, out := g.client(b, "get", "hello")
			return code == 0 && out == "world\n"
		})
	}
	// Enough data that the log is reclaimed and a blank board needs init.
	for i := 0; i < 600; i++ {
		if code, out := g.client(m, "put", fmt.Sprintf("fill%04d", i), strings.Repeat("x", 4000)); code != 0 {
			t.Fatalf("fill %d: exit %d: %s", i, code, out)
		}
	}
	t0 := time.Now()
	g.kill(m)
	m2 := g.master(m.site)
	t.Logf("board %d master %v after SIGKILL of %d", m2.site, time.Since(t0), m.site)
	g.eventually("a write on the new master", func() bool {
		code, _ := g.client(m2, "put", "after", "failover")
		return code == 0
	})
	// Reboot the killed board with empty memory.
	os.Remove(filepath.Join("/dev/shm", m.shm))
	g.start(m)
	g.eventually("the rebooted board to catch up", func() bool {
		code, out := g.client(m, "get", "after")
		return code == 0 && out == "failover\n"
	})
	if code, out := g.client(m, "get", "fill0599"); code != 0 || len(out) != 4001 {
		t.Fatalf("rebooted board lacks old data: exit %d, %d bytes", code, len(out))
	}
	st, _ := g.stat(m)
	t.Logf("rebooted board: inits %d (%d pages in %v)", st.Init.Count, st.Init.PagesTotal, st.Init.LastDuration)
	if st.Init.Count == 0 {
		t.Fatalf("rebooted board caught up without an internal init; the log should have been reclaimed")
	}
	if code, out := g.client(m, "get", "nothere"); code != exitNotFound {
		t.Fatalf("get of a missing key: exit %d (%s), want %d", code, out, exitNotFound)
	}
}

func TestProcessesUDP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds boardd and runs processes; skipped with -short")
	}
	g := newProcGroup(t, 3, nil)
	runScenario(t, g)
}

func TestProcessesRawInNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("builds boardd and runs processes; skipped with -short")
	}
	c := rig.NewForTest(t, rig.Options{Boards: 3})
	g := newProcGroup(t, 3, c)
	runScenario(t, g)
}

// rigScript runs `boardd rig -script` and checks it completes the demo and
// leaves nothing behind.
func rigScript(t *testing.T, extra ...string) {
	bin := boarddBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"rig", "-script"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("boardd %s:\n%s", strings.Join(args, " "), lastLines(string(out), 12))
	if err != nil {
		t.Fatalf("boardd rig: %v", err)
	}
	for _, want := range []string{"killing master", "internally initialised", "rejoined as a replica", "summary: failover"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rig output lacks %q", want)
		}
	}
	left, _ := filepath.Glob(fmt.Sprintf("/dev/shm/boardha-rig%d-*", cmd.Process.Pid))
	if len(left) > 0 {
		t.Errorf("rig left shared memory behind: %v", left)
	}
}

func TestRigScriptUDP(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole rig; skipped with -short")
	}
	rigScript(t, "-udp")
}

func TestRigScriptRaw(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole rig; skipped with -short")
	}
	rig.RequireRoot(t)
	rigScript(t)
}
