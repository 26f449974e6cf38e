package harness

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a fake boardd: with fakeBoarddEnv set it
// serves the socket named by -sock (site 1 is master, the others replicas
// of it) until killed. That lets the Cluster's process handling be tested
// without root, namespaces or the real daemon.
const fakeBoarddEnv = "HARNESS_FAKE_BOARDD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeBoarddEnv) == "1" {
		os.Exit(fakeBoarddMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeBoarddMain(args []string) int {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "fake boardd: want run")
		return 2
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	site := fs.Int("site", 0, "")
	sock := fs.String("sock", "", "")
	fail := fs.Bool("fail", false, "exit at once")
	fs.String("group", "", "")
	fs.String("transport", "", "")
	fs.String("iface", "", "")
	fs.String("peers", "", "")
	fs.String("priority", "", "")
	fs.String("ack", "", "")
	fs.String("shm", "", "")
	fs.String("pool-size", "", "")
	fs.String("log-size", "", "")
	fs.String("checkpoint-kib", "", "")
	fs.String("heartbeat-send", "", "")
	fs.String("heartbeat-monitor", "", "")
	fs.String("election-timeout", "", "")
	fs.String("ack-timeout", "", "")
	fs.String("log-level", "", "")
	fs.Bool("leases", false, "")
	fs.String("lease-timeout", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *fail {
		fmt.Fprintln(os.Stderr, "fake boardd: failing as asked")
		return 1
	}
	_ = os.Remove(*sock) // left by a killed predecessor, as boardd does
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	role := "client"
	if *site == 1 {
		role = "master"
	}
	stat, _ := json.Marshal(map[string]any{"site": *site, "role": role, "master": 1, "gen": 1, "lsn": 100,
		"lease": map[string]any{"enabled": true, "valid": *site == 1}})
	var mu sync.Mutex
	data := map[string]string{}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			dec := json.NewDecoder(c)
			enc := json.NewEncoder(c)
			for {
				var req Request
				if dec.Decode(&req) != nil {
					return
				}
				var resp Response
				mu.Lock()
				switch req.Op {
				case "stat":
					resp.Stat = stat
				case "put":
					data[string(req.Key)] = string(req.Value)
					resp.Commit = &Commit{LSN: 1, Perm: true}
				case "scan":
					for k, v := range data {
						resp.Items = append(resp.Items, KV{Key: []byte(k), Value: []byte(v)})
					}
				}
				mu.Unlock()
				if enc.Encode(resp) != nil {
					return
				}
			}
		}()
	}
}

// execBoard runs the fake boardd (the test binary) for a site.
type execBoard struct{ extra []string }

func (b execBoard) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, append(args, b.extra...)...)
	cmd.Env = append(os.Environ(), fakeBoarddEnv+"=1")
	return cmd
}

func TestClusterLifecycle(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip("cannot find the test binary:", err)
	}
	dir := shortTempDir(t)
	c, err := NewCluster(ClusterOptions{Bin: self, Dir: dir, Group: "g", Iface: "bp0", Leases: true,
		Boards:   map[uint16]Board{1: execBoard{}, 2: execBoard{}, 3: execBoard{}},
		Priority: map[uint16]uint32{3: 0}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	args := strings.Join(c.Args(3, false), " ")
	for _, want := range []string{"run", "-site 3", "-group g", "-transport raw", "-iface bp0", "-peers 1,2,3",
		"-priority 0", "-ack quorum", "-shm private", "-leases", "-heartbeat-monitor 150ms"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "-master") || !slices.Contains(c.Args(1, true), "-master") {
		t.Errorf("-master misplaced: %q", args)
	}
	ctx := ctxT(t, 30*time.Second)
	if err := c.StartAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, 2, false); err == nil {
		t.Fatal("starting a running site succeeded")
	}
	m, err := c.WaitMaster(ctx)
	if err != nil || m != 1 {
		t.Fatalf("WaitMaster = %d, %v", m, err)
	}
	if tg, ok := c.Pick(0, 0); !ok || tg.Site != 1 {
		t.Fatalf("Pick after WaitMaster = %+v, %v; want the master", tg, ok)
	}
	c.StartMonitor(ctx, 5*time.Millisecond)
	if err := WaitFor(ctx, "monitor samples", time.Millisecond, func(context.Context) (bool, error) {
		c.monMu.Lock()
		defer c.monMu.Unlock()
		return len(c.samples) >= 6, nil
	}); err != nil {
		t.Fatal(err)
	}
	samples := c.StopMonitor()
	if vs := CheckLeases(samples); len(vs) != 0 {
		t.Fatalf("one leased master flagged: %v", vs)
	}
	p1 := c.Node(1).Proc()
	if at := c.Kill(1); at.IsZero() || !p1.Exited() {
		t.Fatal("Kill did not end site 1")
	}
	if got := c.Live(); !slices.Equal(got, []uint16{2, 3}) {
		t.Fatalf("Live after the kill = %v", got)
	}
	for i := range 4 {
		if tg, ok := c.Pick(0, i); !ok || tg.Site == 1 {
			t.Fatalf("Pick sent to a dead site: %+v %v", tg, ok)
		}
	}
	if err := c.Start(ctx, 1, false); err != nil {
		t.Fatal(err)
	}
	if c.Node(1).Restarts != 2 {
		t.Fatalf("restarts %d, want 2", c.Node(1).Restarts)
	}
	procs := []*Proc{c.Node(1).Proc(), c.Node(2).Proc(), c.Node(3).Proc()}
	c.Close()
	for _, p := range procs {
		if !p.Exited() {
			t.Fatalf("%s still running after Close", p.Name)
		}
	}
}

func TestClusterStartFailureShowsLog(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip("cannot find the test binary:", err)
	}
	c, err := NewCluster(ClusterOptions{Bin: self, Dir: shortTempDir(t), Group: "g", Iface: "bp0",
		Boards: map[uint16]Board{1: execBoard{extra: []string{"-fail"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Start(ctxT(t, 30*time.Second), 1, false)
	if err == nil || !strings.Contains(err.Error(), "failing as asked") {
		t.Fatalf("Start of a board that exits: %v; want its log in the error", err)
	}
	if _, err := NewCluster(ClusterOptions{Bin: self, Dir: strings.Repeat("d", 120), Group: "g", Iface: "bp0",
		Boards: map[uint16]Board{1: execBoard{}}}); err == nil {
		t.Fatal("a socket path over the unix limit was accepted")
	}
}
