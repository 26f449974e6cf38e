package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// boarddArgs are what every boardd of the failover section gets besides its
// identity: default timing (heartbeat, election, ack policy QUORUM); the log
// is smaller and checkpoints more frequent than the defaults so the small
// commits of the writers cannot fill the pool with pages a pinned checkpoint
// keeps from reuse.
func boarddArgs() []string {
	return []string{"-transport", "raw", "-iface", "bp0", "-pool-size", "256M", "-log-size", "32M", "-checkpoint-kib", "256", "-log-level", "warn"}
}

// proc is one `boardd run` process in a board namespace.
type proc struct {
	site   uint16
	ns     *rig.Board
	sock   string
	shm    string
	logf   string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
	alive  atomic.Bool // writers use it
}

// cluster is the failover section's boardd processes.
type cluster struct {
	bin   string
	dir   string
	args  []string // added to every process's arguments (Config.BoarddArgs)
	procs []*proc

	mu       sync.Mutex
	after    time.Time // writes that start after this count for the current round
	firstEnd time.Time // end of the first Perm write started after `after`
	reaps    Samples   // SIGKILL to reaped, per round
	perms    atomic.Uint64
	errs     atomic.Uint64
	moved    int // rounds whose restore ended under another master than the failover's
	logf     func(format string, args ...any)
	// reapers are the goroutines timing a killed master's reaping; close
	// waits for them, so none logs after the section is done.
	reapers sync.WaitGroup
	// pace, if set before the writers start, spaces their calls.
	pace *pacer
}

// pacer spaces calls evenly, every `every` in all, whoever makes them: a
// writer waits for the next free moment before its call. (Waiting for a
// moment on the clock is the pacing itself, not synchronisation.)
type pacer struct {
	every time.Duration
	mu    sync.Mutex
	next  time.Time
}

// wait reserves the next moment and waits for it; false if ctx ended first.
func (p *pacer) wait(ctx context.Context) bool {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func (c *cluster) start(p *proc) error {
	_ = os.Remove(p.sock)
	_ = os.Remove(filepath.Join("/dev/shm", p.shm)) // empty memory: the board rejoins by internal init
	lf, err := os.OpenFile(p.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	p.cmd = p.ns.Command(context.Background(), c.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	// The boards die with bench even if it is killed outright.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting boardd for site %d: %w", p.site, err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(p.cmd, p.exited)
	p.alive.Store(true)
	return nil
}

// kill SIGKILLs p (also when stopped) and reaps it.
func (c *cluster) kill(p *proc) {
	p.alive.Store(false)
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (c *cluster) close() {
	for _, p := range c.procs {
		c.kill(p)
		_ = os.Remove(filepath.Join("/dev/shm", p.shm))
	}
	_ = os.RemoveAll(c.dir)
	c.reapers.Wait()
}

// call sends one request on a fresh or given connection.
type sockClient struct {
	conn net.Conn
	r    *bufio.Reader
}

type sockRequest struct {
	Op        string `json:"op"`
	DB        string `json:"db,omitempty"`
	Key       []byte `json:"key,omitempty"`
	Value     []byte `json:"value,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	NoHash    bool   `json:"nohash,omitempty"`
}

type sockResponse struct {
	Code   string `json:"code,omitempty"`
	Err    string `json:"error,omitempty"`
	Commit *struct {
		Perm bool `json:"perm"`
	} `json:"commit,omitempty"`
	Stat *board.Stat `json:"stat,omitempty"`
}

func dialSock(path string, timeout time.Duration) (*sockClient, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	return &sockClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
}

func (c *sockClient) call(req sockRequest, timeout time.Duration) (sockResponse, error) {
	var resp sockResponse
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return resp, err
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("malformed response %q: %w", line, err)
	}
	if resp.Code != "" {
		return resp, fmt.Errorf("%s: %s", resp.Code, resp.Err)
	}
	return resp, nil
}

// stepDown asks the board of p, if master, to step down (boardd stepdown).
func (c *cluster) stepDown(p *proc) error {
	cl, err := dialSock(p.sock, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer cl.conn.Close()
	_, err = cl.call(sockRequest{Op: "stepdown"}, 2*time.Second)
	return err
}

func (c *cluster) stat(p *proc) (board.Stat, error) {
	cl, err := dialSock(p.sock, 200*time.Millisecond)
	if err != nil {
		return board.Stat{}, err
	}
	defer cl.conn.Close()
	resp, err := cl.call(sockRequest{Op: "stat", NoHash: true}, 500*time.Millisecond)
	if err != nil {
		return board.Stat{}, err
	}
	if resp.Stat == nil {
		return board.Stat{}, fmt.Errorf("stat without a stat")
	}
	return *resp.Stat, nil
}

// master returns the site all live boards agree is master and that says so
// itself, or 0.
func (c *cluster) master() (uint16, map[uint16]board.Stat) {
	sts := map[uint16]board.Stat{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range c.procs {
		if !p.alive.Load() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := c.stat(p); err == nil {
				mu.Lock()
				sts[p.site] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var m uint16
	for _, p := range c.procs {
		if !p.alive.Load() {
			continue
		}
		st, ok := sts[p.site]
		if !ok {
			return 0, sts
		}
		if m == 0 {
			m = st.Master
		}
		if st.Master == 0 || st.Master != m {
			return 0, sts
		}
	}
	if st, ok := sts[m]; !ok || st.Role != board.RoleMaster {
		return 0, sts
	}
	return m, sts
}

// waitFor polls cond every millisecond until it holds or limit passes.
func waitFor(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if ctx.Err() != nil {
			return errInterrupted
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, limit)
		}
		time.Sleep(time.Millisecond) // polling external processes; no event to wait on
	}
	return nil
}

// writer keeps putting keys through one board's socket (a replica forwards
// them to the master) and records Perm commits for the current round.
func (c *cluster) writer(ctx context.Context, p *proc, id int) {
	var cl *sockClient
	defer func() {
		if cl != nil {
			cl.conn.Close()
		}
	}()
	key := make([]byte, 8)
	binary.BigEndian.PutUint16(key, uint16(id))
	val := bytes.Repeat([]byte{'f'}, 64)
	for i := 0; ctx.Err() == nil; i++ {
		if !p.alive.Load() {
			if cl != nil {
				cl.conn.Close()
				cl = nil
			}
			time.Sleep(time.Millisecond) // idle while the board is down
			continue
		}
		if cl == nil {
			var err error
			if cl, err = dialSock(p.sock, 100*time.Millisecond); err != nil {
				cl = nil
				time.Sleep(time.Millisecond) // the board is starting
				continue
			}
		}
		if c.pace != nil && !c.pace.wait(ctx) {
			return
		}
		binary.BigEndian.PutUint32(key[4:], uint32(i%1024))
		start := time.Now()
		resp, err := cl.call(sockRequest{Op: "put", DB: "fo", Key: key, Value: val, TimeoutMS: 200}, 300*time.Millisecond)
		end := time.Now()
		if err != nil {
			c.errs.Add(1)
			cl.conn.Close()
			cl = nil
			continue
		}
		if resp.Commit == nil || !resp.Commit.Perm {
			continue
		}
		c.perms.Add(1)
		c.mu.Lock()
		if !c.after.IsZero() && !start.Before(c.after) && c.firstEnd.IsZero() {
			c.firstEnd = end
		}
		c.mu.Unlock()
	}
}

func (s *suite) runFailover(ctx context.Context) Section {
	sec := emptySection(secFailover)
	n := s.cfg.FailoverBoards
	sec.Setup = fmt.Sprintf("%d `boardd run` processes, one per board namespace, raw transport, pool 256 MiB, log 32 MiB, checkpoint every 256 KiB, default timing "+
		"(heartbeat %v, heartbeat monitor %v, election timeout %v, ack policy QUORUM, ack timeout %v). "+
		"Two writers per live board put keys through its local socket continuously (replicas forward to the master). "+
		"Each round faults the master, then measures from the signal to the end of the first Perm write that started after the faulted process "+
		"could no longer run (SIGKILL: 1 ms after the signal, since the kernel stops a killed process's threads before they return to user space; reaping it, which waits for its memory to be torn down, is timed in the log; SIGSTOP: state T in /proc) - a write the old master cannot have committed. "+
		"The faulted board is then killed if needed and restarted with empty memory (it rejoins by internal init) before the next round. "+
		"The chassis's other boards are on a bridge of their own meanwhile (as in the commit section).",
		n, board.DefaultHeartbeatSend, board.DefaultHeartbeatMonitor, board.DefaultElectionTimeout, board.DefaultAckTimeout)
	sec.Columns = []string{"fault", "rounds", "median", "p90", "max", "min", "successor's own failover p50"}
	if ctx.Err() != nil {
		sec.NotMeasured = "interrupted"
		return sec
	}
	c, err := s.startCluster(ctx, "fo", n)
	if err != nil {
		sec.NotMeasured = err.Error()
		return sec
	}
	defer c.close()
	stopWriters := c.startWriters(ctx)
	defer stopWriters()

	kinds := []struct {
		name   string
		sig    syscall.Signal
		rounds int
	}{{"SIGKILL master", syscall.SIGKILL, s.cfg.Kills}, {"SIGSTOP master", syscall.SIGSTOP, s.cfg.Stops}}
	for _, k := range kinds {
		var got, own Samples
		var failed error
		for r := 0; r < k.rounds && failed == nil; r++ {
			var d, o time.Duration
			rt0 := time.Now()
			d, o, failed = c.round(ctx, k.sig)
			if failed != nil {
				failed = fmt.Errorf("round %d of %d: %w", r+1, k.rounds, failed)
				break
			}
			got = append(got, d)
			if o > 0 {
				own = append(own, o)
			}
			s.logf("failover %s round %d: %v (round took %v)", k.name, r+1, d.Round(10*time.Microsecond), time.Since(rt0).Round(time.Millisecond))
		}
		if failed != nil {
			sec.note("%s: stopped after %d rounds: %v; board logs: %s", k.name, len(got), failed, c.tail())
		}
		if len(got) == 0 {
			sec.missing(k.name, fmt.Sprint(failed))
			continue
		}
		s.failover[k.name] = got
		v := map[string]float64{"rounds": float64(len(got)), "median_ms": msF(got.Quantile(.5)), "p90_ms": msF(got.Quantile(.9)),
			"max_ms": msF(got.Max()), "min_ms": msF(got.Quantile(0))}
		ownCell := "-"
		if len(own) > 0 {
			v["successor_reported_p50_ms"] = msF(own.Quantile(.5))
			ownCell = ms(own.Quantile(.5))
		}
		raw := make([]float64, len(got))
		for i, d := range got {
			raw[i] = msF(d)
		}
		sec.add(k.name, v, fmt.Sprint(len(got)), ms(got.Quantile(.5)), ms(got.Quantile(.9)), ms(got.Max()), ms(got.Quantile(0)), ownCell)
		sec.note("%s samples (ms): %s", k.name, fmtList(raw))
	}
	c.mu.Lock()
	if len(c.reaps) > 0 {
		sec.note("SIGKILL to the killed master reaped (its memory torn down by the kernel; not part of the failover): median %s, max %s", ms(c.reaps.Quantile(.5)), ms(c.reaps.Max()))
	}
	c.mu.Unlock()
	sec.note("successor's own failover: Stat.Election.LastFailover of the new master (first missed heartbeat period until a master is known), as boardd reports it")
	if c.moved > 0 {
		sec.note("in %d rounds the group replaced its new master again while the restarted board caught up (a master stalled for a heartbeat monitor period); the next round faulted the newest", c.moved)
	}
	sec.note("writes: %d Perm commits, %d failed or timed-out calls over the section (calls to a dead master fail by design)", c.perms.Load(), c.errs.Load())
	return sec
}

// killMargin is how long after SIGKILL a write must start to count as one
// the killed master cannot have taken: the kernel stops a killed process's
// running threads within microseconds (an inter-processor interrupt).
const killMargin = time.Millisecond

// round faults the current master once and returns the failover time and
// the successor's own failover figure.
func (c *cluster) round(ctx context.Context, sig syscall.Signal) (time.Duration, time.Duration, error) {
	var m uint16
	if err := waitFor(ctx, 30*time.Second, "an agreed master", func() bool { m, _ = c.master(); return m != 0 }); err != nil {
		return 0, 0, err
	}
	rt0 := time.Now()
	base := c.perms.Load()
	if err := waitFor(ctx, 30*time.Second, "20 Perm writes before the fault", func() bool { return c.perms.Load() >= base+20 }); err != nil {
		return 0, 0, err
	}
	victim := c.bySite(m)
	pre := time.Since(rt0)
	c.mu.Lock()
	c.after, c.firstEnd = time.Time{}, time.Time{}
	c.mu.Unlock()

	victim.alive.Store(false)
	t0 := time.Now()
	if err := victim.cmd.Process.Signal(sig); err != nil {
		return 0, 0, fmt.Errorf("signalling master %d: %w", m, err)
	}
	after := t0.Add(killMargin)
	if sig == syscall.SIGKILL {
		// A killed process runs no user code once the signal is queued:
		// the kernel stops every thread before it can return to user
		// space. Reaping it waits for the kernel to tear down its memory
		// (256 MiB mapped), which is not the group's failover: writes
		// count from killMargin after the signal; the reap is timed on
		// the side.
		// The channel is taken now: the restart below gives the proc a
		// new one.
		exited := victim.exited
		c.reapers.Add(1)
		go func() {
			defer c.reapers.Done()
			<-exited
			d := time.Since(t0)
			c.mu.Lock()
			c.reaps = append(c.reaps, d)
			c.mu.Unlock()
			c.logf("failover: master %d reaped %v after SIGKILL", m, d.Round(10*time.Microsecond))
		}()
	} else if err := waitFor(ctx, 5*time.Second, "the master to stop", func() bool { return stopped(victim.cmd.Process.Pid) }); err != nil {
		return 0, 0, err
	} else {
		after = time.Now()
	}
	c.mu.Lock()
	c.after = after
	c.mu.Unlock()
	var end time.Time
	err := waitFor(ctx, 30*time.Second, fmt.Sprintf("a Perm write by a new master after %v of master %d", sig, m), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		end = c.firstEnd
		return !end.IsZero()
	})
	if err != nil {
		return 0, 0, err
	}
	d := end.Sub(t0)

	var nm uint16
	var sts map[uint16]board.Stat
	if err := waitFor(ctx, 30*time.Second, "the new master agreed", func() bool { nm, sts = c.master(); return nm != 0 }); err != nil {
		return 0, 0, err
	}
	own := sts[nm].Election.LastFailover
	agreed := time.Since(t0)
	// Restore: the faulted board comes back empty and must catch up before
	// the next round, so every round starts from a full group.
	c.kill(victim)
	if err := c.start(victim); err != nil {
		return 0, 0, err
	}
	var cur uint16 // the master the group agreed on when it was full again
	err = waitFor(ctx, 60*time.Second, fmt.Sprintf("restarted site %d to catch up", victim.site), func() bool {
		m, sts := c.master()
		if m == 0 || !c.full(m, sts) {
			return false
		}
		cur = m
		return true
	})
	if err != nil && ctx.Err() == nil {
		// The boards log at warn level, so their logs rarely say why: the
		// Stats of the restarted board and of the master(s) do.
		err = fmt.Errorf("%w; victim %s; new master %s%s", err, c.statLine(victim), c.statLine(c.bySite(nm)), c.otherMasters(victim.site, nm))
	}
	moved := ""
	if err == nil && cur != nm {
		// Not a failure: with a 10 ms heartbeat monitor the group may
		// replace a master that stalled meanwhile. Counted in the notes.
		c.moved++
		moved = fmt.Sprintf(" (the master moved to %d meanwhile)", cur)
	}
	c.logf("failover round: master %d -> %d; before the fault %v, fault to agreed new master %v, restart and catch-up of site %d %v%s",
		m, nm, pre.Round(time.Millisecond), agreed.Round(time.Millisecond), victim.site, time.Since(t0).Round(time.Millisecond)-agreed.Round(time.Millisecond), moved)
	return d, own, err
}

// full reports whether the group is whole again under master m: every
// other live board follows m, is neither initializing nor locked out, has
// acked a commit in m's tenure and lags it by less than 256 KiB. Which board
// is master does not matter: the group may replace its master while the
// restarted board catches up, and the next round faults whichever it is.
func (c *cluster) full(m uint16, sts map[uint16]board.Stat) bool {
	mst, ok := sts[m]
	if !ok {
		return false
	}
	for _, p := range c.procs {
		if p.site == m || !p.alive.Load() {
			continue
		}
		st, ok := sts[p.site]
		if !ok || st.Role != board.RoleClient || st.Master != m || st.Init.Active || st.LockedOut {
			return false
		}
		caughtUp := false
		for _, ss := range mst.Sites {
			if ss.Site == p.site {
				caughtUp = ss.AckedLSN > 0 && ss.LagBytes < 256<<10
			}
		}
		if !caughtUp {
			return false
		}
	}
	return true
}

// otherMasters describes, for a failure report, the live boards other than
// victim and nm that claim to be master or that the others follow.
func (c *cluster) otherMasters(victim, nm uint16) string {
	var b strings.Builder
	seen := map[uint16]bool{victim: true, nm: true}
	for _, p := range c.procs {
		if !p.alive.Load() {
			continue
		}
		st, err := c.stat(p)
		if err != nil {
			continue
		}
		claims := []uint16{st.Master}
		if st.Role == board.RoleMaster {
			claims = append(claims, p.site)
		}
		for _, s := range claims {
			if s != 0 && !seen[s] {
				seen[s] = true
				fmt.Fprintf(&b, "; master %s", c.statLine(c.bySite(s)))
			}
		}
	}
	return b.String()
}

// statLine is one board's Stat, compact enough for an error message.
func (c *cluster) statLine(p *proc) string {
	if p == nil {
		return "(no such site)"
	}
	st, err := c.stat(p)
	if err != nil {
		return fmt.Sprintf("[site %d: stat: %v]", p.site, err)
	}
	return fmtStat(st)
}

func fmtStat(st board.Stat) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[site %d %s master %d gen %d egen %d lsn %d perm %d ckpt %d locked %v up %v",
		st.Site, st.Role, st.Master, st.Gen, st.Egen, st.LSN, st.PermLSN, st.CheckpointLSN, st.LockedOut, st.Uptime.Round(time.Millisecond))
	fmt.Fprintf(&b, " init{active %v %d/%d count %d last %v}", st.Init.Active, st.Init.PagesDone, st.Init.PagesTotal, st.Init.Count, st.Init.LastDuration.Round(time.Millisecond))
	fmt.Fprintf(&b, " pool %d/%d log %d..%d/%d", st.Pool.UsedPages, st.Pool.TotalPages, st.Log.Begin, st.Log.End, st.Log.Size)
	if st.Election.InProgress {
		fmt.Fprintf(&b, " electing(%s)", st.Election.Phase)
	}
	fmt.Fprintf(&b, " elections %d rereq %d msgs %d/%d dropped %d sendErr %d permFailed %d",
		st.Election.Elections, st.Counters.ReRequests, st.Counters.MsgsSent, st.Counters.MsgsRecv, st.Counters.MsgsDropped, st.Counters.SendErrors, st.Counters.PermFailed)
	if len(st.Counters.MsgDrops) > 0 {
		fmt.Fprintf(&b, " %v", st.Counters.MsgDrops)
	}
	for _, ss := range st.Sites {
		fmt.Fprintf(&b, " {%d acked %d lag %d heard %v}", ss.Site, ss.AckedLSN, ss.LagBytes, ss.LastHeard.Round(time.Microsecond))
	}
	b.WriteString("]")
	return b.String()
}

func (c *cluster) bySite(site uint16) *proc {
	for _, p := range c.procs {
		if p.site == site {
			return p
		}
	}
	return nil
}

// stopped reports whether pid is in the stopped state.
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

// tail returns the last lines of every board's log, for failure reports.
func (c *cluster) tail() string {
	var parts []string
	for _, p := range c.procs {
		b, err := os.ReadFile(p.logf)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		lines = lines[max(0, len(lines)-3):]
		for i, l := range lines {
			if len(l) > 300 {
				lines[i] = l[:300] + "..."
			}
		}
		parts = append(parts, fmt.Sprintf("[site %d] %s", p.site, strings.Join(lines, " / ")))
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, "; ")
}

func fmtList(v []float64) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.1f", x)
	}
	return b.String()
}
