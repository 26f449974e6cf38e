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
	"time"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// startCluster builds boardd and starts n `boardd run` processes, one per
// board namespace, with the default timing, and waits until they agree on a
// master. The caller closes the cluster.
func (s *suite) startCluster(ctx context.Context, group string, n int) (*cluster, error) {
	if err := s.isolate(n); err != nil {
		return nil, err
	}
	c, err := s.buildCluster(ctx, group)
	if err != nil {
		return nil, err
	}
	for _, rb := range s.chassis.Boards[:n] {
		p := c.newProc(rb, group, s.chassis.Boards[:n])
		if err := c.start(p); err != nil {
			c.close()
			return nil, err
		}
	}
	t0 := time.Now()
	if err := waitFor(ctx, 30*time.Second, "a master agreed by all boards", func() bool { m, _ := c.master(); return m != 0 }); err != nil {
		err = fmt.Errorf("%v; board logs: %s", err, c.tail())
		c.close()
		return nil, err
	}
	s.logf("%s: %d boards up, master agreed after %v", group, n, time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// newProc adds a `boardd run` process for board rb of the group "bench-"+group
// whose sites are those of boards, with boarddArgs and extra; start runs it.
func (c *cluster) newProc(rb *rig.Board, group string, boards []*rig.Board, extra ...string) *proc {
	var sites []string
	for _, b := range boards {
		sites = append(sites, strconv.Itoa(int(b.Site)))
	}
	p := &proc{site: rb.Site, ns: rb, sock: filepath.Join(c.dir, fmt.Sprintf("b%d.sock", rb.Site)),
		shm: fmt.Sprintf("boardha-bench%d-%s%d", os.Getpid(), group, rb.Site), logf: filepath.Join(c.dir, fmt.Sprintf("b%d.log", rb.Site))}
	p.args = append([]string{"run", "-site", strconv.Itoa(int(rb.Site)), "-group", "bench-" + group, "-peers", strings.Join(sites, ","),
		"-sock", p.sock, "-shm", p.shm}, boarddArgs()...)
	p.args = append(append(p.args, c.args...), extra...)
	c.procs = append(c.procs, p)
	return p
}

// buildCluster returns an empty cluster with its own temporary directory
// (which close removes), building boardd first if this run has not yet.
func (s *suite) buildCluster(ctx context.Context, group string) (*cluster, error) {
	if s.boardd == "" {
		dir, err := os.MkdirTemp("", "boardha-bench-bin-")
		if err != nil {
			return nil, err
		}
		bin := filepath.Join(dir, "boardd")
		s.logf("%s: building boardd", group)
		build := exec.CommandContext(ctx, goTool(), "build", "-o", bin, "github.com/seed61e250c8/boardha/cmd/boardd")
		if out, err := build.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("building boardd (run the bench from the module's directory, with the go tool in PATH): %v: %s", err, strings.TrimSpace(string(out)))
		}
		s.boardd, s.binDir = bin, dir
	}
	dir, err := os.MkdirTemp("", "boardha-bench-")
	if err != nil {
		return nil, err
	}
	return &cluster{dir: dir, bin: s.boardd, args: s.cfg.BoarddArgs, logf: s.logf}, nil
}

// startWriters runs two writers per board until the function returned is
// called (which waits for them).
func (c *cluster) startWriters(ctx context.Context) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range c.procs {
		for k := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); c.writer(wctx, p, int(p.site)*2+k) }()
		}
	}
	return func() { cancel(); wg.Wait() }
}

// runStability runs a group of boardd processes under continuous writes,
// with no fault, and counts the elections: with the default timing none
// should happen (a spurious election is a failover nobody asked for).
func (s *suite) runStability(ctx context.Context) Section {
	sec := emptySection(secStability)
	n := s.cfg.FailoverBoards
	sec.Setup = fmt.Sprintf("%d `boardd run` processes as in the failover section (default timing: heartbeat %v, heartbeat monitor %v, election timeout %v), "+
		"two writers per board putting keys through its local socket without pause, no fault injected, for %v. "+
		"Elections: the sum over the boards of Stat.Election.Elections started during the run; master changes: how often the agreed master, sampled every 10 ms, differed from the previous sample's; board stalls: the sum of Stat.Counters.Stalls, times a board's runtime did not run for longer than the monitor (a master's stall looks like its death to the replicas, and each replica counts the election it starts); keepalives: the sum of Stat.Counters.KeepAlives, heartbeats a master's loop sent while its runtime was held.",
		n, board.DefaultHeartbeatSend, board.DefaultHeartbeatMonitor, board.DefaultElectionTimeout, s.cfg.StabilityTime)
	sec.Setup += fmt.Sprintf(" Before it, for %v with nothing of ours running, a busy thread pinned to each CPU at nice -20 counts the gaps in its clock longer than the monitor: "+
		"times the CPU was taken from the whole guest, which stop a master as surely as SIGSTOP.", s.cfg.StallProbe)
	if s.cfg.HalfLoadTime > 0 {
		sec.Setup += fmt.Sprintf(" After it, the same group for %v with its writers held to half the Perm commits a second the run reached (the row saying so), "+
			"to tell elections that come with saturated CPUs from those that come whatever the load; the target counts the run without a limit.", s.cfg.HalfLoadTime)
	}
	sec.Columns = []string{"boards", "duration", "Perm commits", "commits/s", "failed calls", "elections", "master changes", "board stalls > monitor", "CPU stalls > monitor (probe)"}
	if ctx.Err() != nil {
		sec.NotMeasured = "interrupted"
		return sec
	}
	s.logf("stability: probing the CPUs for stalls for %v", s.cfg.StallProbe)
	probe, err := probeCPUStalls(ctx, s.cfg.StallProbe, board.DefaultHeartbeatMonitor)
	if err != nil {
		sec.NotMeasured = err.Error()
		return sec
	}
	over, probeLongest := 0, time.Duration(0)
	var per []string
	for _, st := range probe {
		over += st.Over
		probeLongest = max(probeLongest, st.Max)
		per = append(per, fmt.Sprintf("CPU %d: %d, longest %v", st.CPU, st.Over, st.Max.Round(10*time.Microsecond)))
	}
	perMin := float64(over) / s.cfg.StallProbe.Minutes()
	sec.note("CPU stall probe, gaps over %v in %v: %s", board.DefaultHeartbeatMonitor, s.cfg.StallProbe, strings.Join(per, "; "))
	s.logf("stability: %d CPU stalls over %v in %v (longest %v)", over, board.DefaultHeartbeatMonitor, s.cfg.StallProbe, probeLongest.Round(10*time.Microsecond))

	c, err := s.startCluster(ctx, "st", n)
	if err != nil {
		sec.NotMeasured = err.Error()
		return sec
	}
	defer c.close()
	probeCell := fmt.Sprintf("%d in %v (%.1f/min, longest %v)", over, s.cfg.StallProbe, perMin, probeLongest.Round(100*time.Microsecond))
	probeValues := map[string]float64{"cpu_stalls_over_monitor": float64(over), "cpu_stall_probe_seconds": s.cfg.StallProbe.Seconds(),
		"cpu_stalls_per_minute": perMin, "cpu_stall_longest_ms": float64(probeLongest) / 1e6}

	full := s.stabilityPhase(ctx, &sec, c, fmt.Sprint(n), s.cfg.StabilityTime, 0, probeValues, probeCell)
	// The same group with its writers held to half the rate it reached:
	// whether the elections come with the saturated CPUs or with this
	// machine whatever the load.
	if s.cfg.HalfLoadTime > 0 && ctx.Err() == nil && full > 0 {
		s.stabilityPhase(ctx, &sec, c, fmt.Sprintf("%d, half load", n), s.cfg.HalfLoadTime, full/2, nil, "-")
	}
	return sec
}

// stabilityPhase runs the writers for dur (at most rate Perm commits a second
// in all, if rate > 0), counts what the boards did meanwhile and adds a row
// labelled label; it returns the commits per second reached.
func (s *suite) stabilityPhase(ctx context.Context, sec *Section, c *cluster, label string, dur time.Duration, rate float64, extra map[string]float64, probeCell string) float64 {
	who := "the run without a limit"
	if rate > 0 {
		who = "the run at half load"
	}
	_, sts0 := c.master()
	c.pace = nil
	if rate > 0 {
		c.pace = &pacer{every: time.Duration(float64(time.Second) / rate)}
	}
	stopWriters := c.startWriters(ctx)
	perms0, errs0 := c.perms.Load(), c.errs.Load()
	t0 := time.Now()
	var last uint16
	changes := 0
	tick := time.NewTicker(10 * time.Millisecond)
	for ctx.Err() == nil && time.Since(t0) < dur {
		<-tick.C
		if m, _ := c.master(); m != 0 {
			if last != 0 && m != last {
				changes++
				s.logf("stability: master moved from %d to %d after %v", last, m, time.Since(t0).Round(time.Millisecond))
			}
			last = m
		}
	}
	tick.Stop()
	el := time.Since(t0)
	stopWriters()
	perms, errs := c.perms.Load()-perms0, c.errs.Load()-errs0
	_, sts := c.master()
	// Per board, from its count at the start: a board that did not answer
	// one of the two stats is left out (and said so).
	var started, stalls, keepAlives, silences uint64
	var longest time.Duration
	var by []string
	for _, p := range c.procs {
		st0, ok0 := sts0[p.site]
		st, ok := sts[p.site]
		if !ok0 || !ok {
			sec.note("%s: site %d did not answer the first or the last stat: its elections and stalls are not counted", who, p.site)
			continue
		}
		d := st.Election.Elections - st0.Election.Elections
		ds := st.Counters.Stalls - st0.Counters.Stalls
		dk := st.Counters.KeepAlives - st0.Counters.KeepAlives
		dm := st.Counters.MasterSilences - st0.Counters.MasterSilences
		started += d
		stalls += ds
		keepAlives += dk
		silences += dm
		longest = max(longest, st.Counters.LongestStall)
		by = append(by, fmt.Sprintf("site %d (%s): %d elections, %d stalls, %d keepalives, %d master silences", p.site, st.Role, d, ds, dk, dm))
	}
	if ctx.Err() != nil {
		sec.note("%s: interrupted after %v", who, el.Round(time.Second))
	}
	rateGot := float64(perms) / el.Seconds()
	v := map[string]float64{
		"boards": float64(len(c.procs)), "seconds": el.Seconds(), "commits": float64(perms), "commits_per_s": rateGot,
		"failed_calls": float64(errs), "elections": float64(started), "master_changes": float64(changes),
		"board_stalls": float64(stalls), "master_silences": float64(silences), "board_longest_stall_ms": float64(longest) / 1e6, "keepalives": float64(keepAlives),
	}
	if rate > 0 {
		v["commits_per_s_asked"] = rate
	}
	for k, x := range extra {
		v[k] = x
	}
	sec.add(label, v, el.Round(time.Second).String(), fmt.Sprint(perms), fmt.Sprintf("%.0f", rateGot),
		fmt.Sprint(errs), fmt.Sprint(started), fmt.Sprint(changes),
		fmt.Sprintf("%d (longest %v)", stalls, longest.Round(100*time.Microsecond)), probeCell)
	if rate > 0 {
		sec.note("%s: the writers held to %.0f Perm commits/s in all, half the rate the run without a limit reached", who, rate)
	}
	sec.note("%s: keepalives sent by masters' loops while their runtime was held: %d", who, keepAlives)
	sec.note("%s: master silences (Stat.Counters.MasterSilences, summed over the replicas): %d times a replica heard its master again after more than half the heartbeat monitor (%v) of silence, halfway to an election",
		who, silences, board.DefaultHeartbeatMonitor/2)
	if causes, err := c.electionCauses(t0, t0.Add(el), board.DefaultHeartbeatSend); err != nil {
		sec.note("%s: elections by cause: the boards' logs could not be read: %v", who, err)
	} else if causes.total() > 0 {
		sec.Rows[len(sec.Rows)-1].Values["elections_master_starved"] = float64(causes.masterStarved)
		sec.note("%s: elections by what the boards' logs show at their start (%d logged): the lost master's process hardly ran "+
			"(its stall covers the start, and its loop ran less than once per heartbeat period of it, so could not speak for it) %d; "+
			"its runtime was held while its loop ran at least that often %d; the electing board itself was stalled or had frames waiting %d; none of these %d",
			who, causes.total(), causes.masterStarved, causes.masterHeld, causes.ownLate, causes.unexplained)
	}
	if started > 0 || stalls > 0 {
		sec.note("%s: by board: %s", who, strings.Join(by, "; "))
		sec.note("%s: board logs (last lines): %s", who, c.tail())
	}
	s.logf("stability (%s): %v, %d commits, %d elections, %d master changes", label, el.Round(time.Second), perms, started, changes)
	return rateGot
}
