package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed61e250c8/boardha/shm"
)

// Timing is the replication timing every board of a cluster runs with. The
// board defaults (2 ms heartbeats, 10 ms monitor) suit a quiet backplane;
// a 2-core machine shared with other work needs wider margins to avoid
// elections caused by scheduling delays alone.
type Timing struct {
	HeartbeatSend    time.Duration
	HeartbeatMonitor time.Duration
	ElectionTimeout  time.Duration
	AckTimeout       time.Duration
	LeaseTimeout     time.Duration
}

// DefaultTiming is what scenarios use unless they say otherwise.
var DefaultTiming = Timing{
	HeartbeatSend:    10 * time.Millisecond,
	HeartbeatMonitor: 150 * time.Millisecond,
	ElectionTimeout:  100 * time.Millisecond,
	AckTimeout:       500 * time.Millisecond,
	LeaseTimeout:     100 * time.Millisecond,
}

// Board is where one site's boardd runs: hwtest/rig's *rig.Board provides
// Command (a process inside the board's network namespace); Iface is the
// backplane link there.
type Board interface {
	Command(ctx context.Context, name string, args ...string) *exec.Cmd
}

// ClusterOptions describe a group of boardd processes on a chassis.
type ClusterOptions struct {
	Bin   string // the boardd binary
	Dir   string // sockets and logs; keep it short (socket paths are limited to 107 bytes)
	Group string // group name, unique per scenario
	// Boards by site: the sites of the group.
	Boards map[uint16]Board
	// Iface is the raw transport's backplane link in every board ("bp0").
	Iface string
	// Priority per site; sites not listed get 100.
	Priority map[uint16]uint32
	Ack      string // default quorum
	Leases   bool
	// TwoSiteStrict is passed to every board.
	TwoSiteStrict bool
	Timing        Timing // zero fields take DefaultTiming's
	PoolSize      string // default 64M
	LogSize       string // default 16M
	CheckpointKiB int    // default 1024
	// Extra flags for every board.
	Extra []string
	// NamedShm gives every board a named shared-memory region (Node.Shm,
	// in /dev/shm) that other processes can attach to, instead of private
	// memory. Start removes a region left by a killed process first, so a
	// restart still begins with empty memory; Close removes what is left.
	NamedShm bool
}

// Node is one board of the cluster.
type Node struct {
	Site  uint16
	Board Board
	Sock  string
	Log   string
	// Shm is the board's region: "private", or a name in /dev/shm
	// (ClusterOptions.NamedShm).
	Shm string
	// Restarts counts how often the board was (re)started.
	Restarts int

	// proc is swapped by Start while writers and the monitor read it.
	proc atomic.Pointer[Proc]
	cl   *Client // for the cluster's own stat calls
}

// Proc returns the current process, nil if never started.
func (n *Node) Proc() *Proc { return n.proc.Load() }

// Running reports whether the board's process is alive.
func (n *Node) Running() bool {
	p := n.proc.Load()
	return p != nil && !p.Exited()
}

// Cluster runs boardd on boards of a chassis over the raw transport.
type Cluster struct {
	opt   ClusterOptions
	sup   Supervisor
	mu    sync.Mutex
	nodes map[uint16]*Node

	master atomic.Uint32 // last master seen by the monitor, 0 = none

	monMu   sync.Mutex
	samples []LeaseSample
	monStop context.CancelFunc
	monDone chan struct{}
	rr      atomic.Uint64
}

// NewCluster prepares (but does not start) the boards.
func NewCluster(opt ClusterOptions) (*Cluster, error) {
	if opt.Bin == "" || opt.Dir == "" || opt.Group == "" || len(opt.Boards) == 0 || opt.Iface == "" {
		return nil, errors.New("harness: ClusterOptions needs Bin, Dir, Group, Boards and Iface")
	}
	if opt.Ack == "" {
		opt.Ack = "quorum"
	}
	t := &opt.Timing
	d := DefaultTiming
	for _, p := range []struct{ v, def *time.Duration }{
		{&t.HeartbeatSend, &d.HeartbeatSend}, {&t.HeartbeatMonitor, &d.HeartbeatMonitor},
		{&t.ElectionTimeout, &d.ElectionTimeout}, {&t.AckTimeout, &d.AckTimeout}, {&t.LeaseTimeout, &d.LeaseTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if opt.PoolSize == "" {
		opt.PoolSize = "64M"
	}
	if opt.LogSize == "" {
		opt.LogSize = "16M"
	}
	if opt.CheckpointKiB == 0 {
		opt.CheckpointKiB = 1024
	}
	c := &Cluster{opt: opt, nodes: map[uint16]*Node{}}
	for s, b := range opt.Boards {
		if s == 0 || s == 0xFFFF || b == nil {
			return nil, fmt.Errorf("harness: site %d: want a site 1..65534 with a board", s)
		}
		sock := filepath.Join(opt.Dir, fmt.Sprintf("b%d.sock", s))
		if len(sock) > 107 {
			return nil, fmt.Errorf("harness: socket path %s is longer than a unix socket allows; use a shorter Dir", sock)
		}
		shmName := "private"
		if opt.NamedShm {
			shmName = fmt.Sprintf("boardha-hw%d-%s-%d", os.Getpid(), opt.Group, s)
		}
		c.nodes[s] = &Node{Site: s, Board: b, Sock: sock, Shm: shmName, Log: filepath.Join(opt.Dir, fmt.Sprintf("b%d.log", s)), cl: NewClient(sock)}
	}
	return c, nil
}

// Sites returns the cluster's sites in order.
func (c *Cluster) Sites() []uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedSites(c.nodes)
}

// Node returns the board with site s (nil if not in the cluster).
func (c *Cluster) Node(s uint16) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[s]
}

// Args returns the `boardd run` arguments of site s.
func (c *Cluster) Args(s uint16, master bool) []string {
	n := c.nodes[s]
	var peers []string
	for _, p := range sortedSites(c.nodes) {
		peers = append(peers, strconv.Itoa(int(p)))
	}
	prio := uint32(100)
	if p, ok := c.opt.Priority[s]; ok {
		prio = p
	}
	t := c.opt.Timing
	args := []string{"run",
		"-site", strconv.Itoa(int(s)), "-group", c.opt.Group,
		"-transport", "raw", "-iface", c.opt.Iface, "-peers", strings.Join(peers, ","),
		"-priority", strconv.FormatUint(uint64(prio), 10), "-ack", c.opt.Ack,
		"-sock", n.Sock, "-shm", n.Shm,
		"-pool-size", c.opt.PoolSize, "-log-size", c.opt.LogSize, "-checkpoint-kib", strconv.Itoa(c.opt.CheckpointKiB),
		"-heartbeat-send", t.HeartbeatSend.String(), "-heartbeat-monitor", t.HeartbeatMonitor.String(),
		"-election-timeout", t.ElectionTimeout.String(), "-ack-timeout", t.AckTimeout.String(),
		"-log-level", "info",
	}
	if c.opt.Leases {
		args = append(args, "-leases", "-lease-timeout", t.LeaseTimeout.String())
	}
	if c.opt.TwoSiteStrict {
		args = append(args, "-two-site-strict")
	}
	if master {
		args = append(args, "-master")
	}
	return append(args, c.opt.Extra...)
}

// Start starts site s's boardd with empty memory (a named region a killed
// process left is removed first: a board that reboots loses its memory) and
// waits until its socket answers stat.
func (c *Cluster) Start(ctx context.Context, s uint16, master bool) error {
	c.mu.Lock()
	n := c.nodes[s]
	c.mu.Unlock()
	if n == nil {
		return fmt.Errorf("harness: site %d not in the cluster", s)
	}
	if n.Running() {
		return fmt.Errorf("harness: site %d already running (pid %d)", s, n.proc.Load().Pid)
	}
	if err := n.removeShm(); err != nil {
		return err
	}
	// The process is tied to no context: the supervisor ends it by pid,
	// and a context kill would race the scenario's own SIGKILLs.
	cmd := n.Board.Command(context.WithoutCancel(ctx), c.opt.Bin, c.Args(s, master)...)
	p, err := c.sup.Start(fmt.Sprintf("boardd site %d", s), cmd, n.Log)
	if err != nil {
		return err
	}
	c.mu.Lock()
	n.proc.Store(p)
	n.Restarts++
	c.mu.Unlock()
	_ = n.cl.Close()
	err = WaitFor(ctx, fmt.Sprintf("site %d socket", s), 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, Abort(fmt.Errorf("boardd site %d exited: %v", s, p.Err()))
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := n.cl.Stat(sctx)
		return err == nil, err
	})
	if err != nil && p.Exited() {
		return fmt.Errorf("boardd site %d exited at start: %v; log tail:\n%s", s, p.Err(), p.Tail(2000))
	}
	return err
}

// StartAll starts every site (none designated master) and waits for their
// sockets.
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, s := range c.Sites() {
		if err := c.Start(ctx, s, false); err != nil {
			return err
		}
	}
	return nil
}

// Kill SIGKILLs site s and returns when it is reaped, with the signal time.
func (c *Cluster) Kill(s uint16) time.Time {
	n := c.Node(s)
	if n == nil || n.proc.Load() == nil {
		return time.Time{}
	}
	at := n.proc.Load().Kill()
	_ = n.cl.Close()
	if uint32(s) == c.master.Load() {
		c.master.Store(0)
	}
	return at
}

// Live returns the sites whose process runs.
func (c *Cluster) Live() []uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint16
	for _, s := range sortedSites(c.nodes) {
		if c.nodes[s].Running() {
			out = append(out, s)
		}
	}
	return out
}

// Stats asks every live board for its stat, concurrently; boards that do not
// answer within timeout are absent from the result.
func (c *Cluster) Stats(ctx context.Context, timeout time.Duration) map[uint16]Stat {
	type res struct {
		s  uint16
		st Stat
		ok bool
	}
	live := c.Live()
	ch := make(chan res, len(live))
	for _, s := range live {
		n := c.Node(s)
		go func() {
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := n.cl.Stat(sctx)
			ch <- res{s, st, err == nil}
		}()
	}
	out := map[uint16]Stat{}
	for range live {
		r := <-ch
		if r.ok {
			out[r.s] = r.st
		}
	}
	return out
}

// StatsWithHash is Stats with every board's content hash (a full read of
// each board: for final checks only).
func (c *Cluster) StatsWithHash(ctx context.Context, timeout time.Duration) map[uint16]Stat {
	out := map[uint16]Stat{}
	for _, s := range c.Live() {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := c.Node(s).cl.StatWithHash(sctx)
		cancel()
		if err == nil {
			out[s] = st
		}
	}
	return out
}

// Stat asks one board.
func (c *Cluster) Stat(ctx context.Context, s uint16) (Stat, error) {
	n := c.Node(s)
	if n == nil {
		return Stat{}, fmt.Errorf("harness: site %d not in the cluster", s)
	}
	return n.cl.Stat(ctx)
}

// AgreedMaster returns the master when every board in sites answers, exactly
// one of them says it is master, and every other one names it as its
// master, is not locked out and is not initialising.
func AgreedMaster(stats map[uint16]Stat, sites []uint16) (uint16, bool) {
	var m uint16
	for _, s := range sites {
		st, ok := stats[s]
		if !ok {
			return 0, false
		}
		if st.IsMaster() {
			if m != 0 {
				return 0, false
			}
			m = s
		}
	}
	if m == 0 {
		return 0, false
	}
	for _, s := range sites {
		st := stats[s]
		if s != m && (st.Master != m || st.LockedOut || st.Init.Active || st.Role != "client") {
			return 0, false
		}
	}
	return m, true
}

// WaitMaster waits until every board of sites (default: all live ones)
// agrees on one master, and returns it.
func (c *Cluster) WaitMaster(ctx context.Context, sites ...uint16) (uint16, error) {
	var m uint16
	err := WaitFor(ctx, "an agreed master", 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		ss := sites
		if len(ss) == 0 {
			ss = c.Live()
		}
		var ok bool
		m, ok = AgreedMaster(c.Stats(ctx, time.Second), ss)
		if ok {
			c.master.Store(uint32(m))
		}
		return ok, nil
	})
	return m, err
}

// WaitCaughtUp waits until every board of sites (default: all live) agrees
// on one master and has applied the master's whole log (same LSN and gen).
func (c *Cluster) WaitCaughtUp(ctx context.Context, sites ...uint16) (uint16, error) {
	var m uint16
	var last string
	err := WaitFor(ctx, "replicas caught up with the master", 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		ss := sites
		if len(ss) == 0 {
			ss = c.Live()
		}
		stats := c.Stats(ctx, time.Second)
		var ok bool
		m, ok = AgreedMaster(stats, ss)
		if !ok {
			last = describe(stats)
			return false, nil
		}
		ms := stats[m]
		for _, s := range ss {
			if st := stats[s]; st.LSN != ms.LSN || st.Gen != ms.Gen {
				last = describe(stats)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("%w; last stats: %s", err, last)
	}
	c.master.Store(uint32(m))
	return m, nil
}

// Describe summarises stats on one line: site:role/master gen lsn flags.
func describe(stats map[uint16]Stat) string {
	var parts []string
	for _, s := range sortedSites(stats) {
		st := stats[s]
		p := fmt.Sprintf("%d:%s/m%d g%d lsn%d", s, st.Role, st.Master, st.Gen, st.LSN)
		if st.LockedOut {
			p += " locked"
		}
		if st.Init.Active {
			p += " init"
		}
		if st.Lease.Valid {
			p += " lease"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// Describe is describe for callers outside the package.
func Describe(stats map[uint16]Stat) string { return describe(stats) }

// Contents scans db on every board of sites.
func (c *Cluster) Contents(ctx context.Context, db string, sites ...uint16) (map[uint16]Content, error) {
	out := map[uint16]Content{}
	for _, s := range sites {
		n := c.Node(s)
		m, err := n.cl.ScanAll(ctx, db, 200) // 200 values of up to 4 KiB stay well under a line limit
		if err != nil {
			return nil, fmt.Errorf("harness: scanning %s on site %d: %w", db, s, err)
		}
		out[s] = Content(m)
	}
	return out, nil
}

// Master returns the master the monitor (or the last wait) saw, 0 if none.
func (c *Cluster) Master() uint16 { return uint16(c.master.Load()) }

// Pick is a Writer.Pick that sends to the known master first and rotates
// over the live boards (which forward to the master) after failures.
func (c *Cluster) Pick(worker, attempt int) (Target, bool) {
	if m := c.Master(); m != 0 && attempt == 0 {
		if n := c.Node(m); n != nil && n.Running() {
			return Target{Site: m, Sock: n.Sock}, true
		}
	}
	live := c.Live()
	if len(live) == 0 {
		return Target{}, false
	}
	s := live[int(c.rr.Add(1))%len(live)]
	return Target{Site: s, Sock: c.Node(s).Sock}, true
}

// StartMonitor samples every live board's stat every interval until
// StopMonitor, keeping lease samples and the current master.
func (c *Cluster) StartMonitor(ctx context.Context, interval time.Duration) {
	ctx, c.monStop = context.WithCancel(ctx)
	c.monDone = make(chan struct{})
	go func() {
		defer close(c.monDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		clients := map[uint16]*Client{}
		defer func() {
			for _, cl := range clients {
				cl.Close()
			}
		}()
		for {
			c.sampleOnce(ctx, clients)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (c *Cluster) sampleOnce(ctx context.Context, clients map[uint16]*Client) {
	live := c.Live()
	ch := make(chan LeaseSample, len(live))
	for _, s := range live {
		cl := clients[s]
		if cl == nil {
			cl = NewClient(c.Node(s).Sock)
			clients[s] = cl
		}
		go func() {
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			sent := time.Now()
			st, err := cl.Stat(sctx)
			if err != nil {
				ch <- LeaseSample{}
				return
			}
			ch <- LeaseSample{Site: s, Sent: sent, Recv: time.Now(), Master: st.IsMaster(), Valid: st.Lease.Valid, Gen: st.Gen}
		}()
	}
	var round []LeaseSample
	for range live {
		if s := <-ch; s.Site != 0 {
			round = append(round, s)
		}
	}
	// The master a writer should use: the master of the highest gen.
	var best LeaseSample
	for _, s := range round {
		if s.Master && (best.Site == 0 || s.Gen > best.Gen) {
			best = s
		}
	}
	c.master.Store(uint32(best.Site))
	c.monMu.Lock()
	c.samples = append(c.samples, round...)
	c.monMu.Unlock()
}

// StopMonitor stops sampling and returns every sample taken.
func (c *Cluster) StopMonitor() []LeaseSample {
	if c.monStop != nil {
		c.monStop()
		<-c.monDone
		c.monStop = nil
	}
	c.monMu.Lock()
	defer c.monMu.Unlock()
	out := append([]LeaseSample(nil), c.samples...)
	sort.Slice(out, func(i, j int) bool { return out[i].Sent.Before(out[j].Sent) })
	return out
}

// Close stops the monitor and kills every process the cluster started.
func (c *Cluster) Close() {
	c.StopMonitor()
	c.sup.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		_ = n.cl.Close()
		_ = n.removeShm()
	}
}

// removeShm removes the board's named region, if any is left.
func (n *Node) removeShm() error {
	if n.Shm == "private" {
		return nil
	}
	if err := shm.Remove(n.Shm); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("harness: removing site %d's region %s: %w", n.Site, n.Shm, err)
	}
	return nil
}

// Tails returns the last bytes of every board's log, for failure messages.
func (c *Cluster) Tails(n int) string {
	var b strings.Builder
	for _, s := range c.Sites() {
		nd := c.Node(s)
		p := nd.proc.Load()
		if p == nil {
			continue
		}
		fmt.Fprintf(&b, "--- site %d (%s) ---\n%s\n", s, nd.Log, p.Tail(n))
	}
	return b.String()
}
