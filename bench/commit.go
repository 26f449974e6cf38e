package main

import (
	goruntime "runtime"

	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"strings"
	"sync"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// ackPolicies lists every ack policy, weakest first.
func ackPolicies() []board.AckPolicy {
	return []board.AckPolicy{board.AckNone, board.AckOne, board.AckOnePeer, board.AckQuorum, board.AckAllPeers, board.AckAll}
}

// policies are the ack policies the commit section measures.
func (s *suite) policies() []board.AckPolicy {
	if len(s.cfg.Policies) > 0 {
		return s.cfg.Policies
	}
	return ackPolicies()
}

// policyByName is the inverse of policyName (case-insensitive).
func policyByName(name string) (board.AckPolicy, bool) {
	for _, p := range ackPolicies() {
		if strings.EqualFold(policyName(p), name) {
			return p, true
		}
	}
	return 0, false
}

func policyName(p board.AckPolicy) string {
	return map[board.AckPolicy]string{board.AckNone: "NONE", board.AckOne: "ONE", board.AckOnePeer: "ONE_PEER",
		board.AckQuorum: "QUORUM", board.AckAllPeers: "ALL_PEERS", board.AckAll: "ALL"}[p]
}

const inProcessSetup = "Boards run in this process: board.Open is called inside each board's network namespace (rig Board.Do), " +
	"so each board's raw transport socket lives on its own veth of the chassis; board 1 is started as master (StartMaster), " +
	"the others as replicas, and every replica has caught up before measuring. Writers call Board.Update on the master, " +
	"one 16-byte key and a 100-byte value per call, keys cycling over 4096 per writer; latency is the Update call until it returns Perm. " +
	"Memory: pool 256 MiB, log 32 MiB, checkpoint every 256 KiB (a pinned checkpoint keeps the pages freed after it from reuse, so small commits need frequent checkpoints to stay within the pool); timing settings are the defaults. " +
	"While a group runs, the chassis's other boards are on a bridge of their own (rig Partition): the bridge floods multicast to every port, " +
	"and on this rig the receive work of every copy runs on the sending CPU, inside the master's send, where a chassis's other line cards would spend their own. "

// group is a replication group of in-process boards on the chassis.
type group struct {
	boards []*board.Board
	// reclaim, if set, gives mastership back to boards[0] when another
	// process's board took it (a process-per-board group after an
	// election on a loaded machine), and returns it; nil if it could not.
	reclaim func(ctx context.Context) *board.Board
}

// master returns the board that is master now, waiting up to 5 s for one
// (on a loaded machine a replica may miss heartbeats and call an election).
func (g *group) master(ctx context.Context) *board.Board {
	deadline := time.Now().Add(5 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		for _, b := range g.boards {
			if b.IsMaster() {
				return b
			}
		}
		time.Sleep(time.Millisecond) // polling the published role; no event covers "any board"
	}
	return nil
}

func (g *group) close() {
	for _, b := range g.boards {
		_ = b.Close()
	}
}

// openGroup opens boards 1..n of the chassis as one group and waits until
// every replica has caught up with board 1, the master.
func (s *suite) openGroup(ctx context.Context, n int, name string, tune func(*board.Config)) (*group, error) {
	if n > len(s.chassis.Boards) {
		return nil, fmt.Errorf("group of %d boards on a chassis of %d", n, len(s.chassis.Boards))
	}
	if err := s.isolate(n); err != nil {
		return nil, err
	}
	peers := map[uint16]string{}
	for _, rb := range s.chassis.Boards[:n] {
		peers[rb.Site] = ""
	}
	g := &group{}
	for _, rb := range s.chassis.Boards[:n] {
		cfg := board.Config{Site: rb.Site, Group: name, Peers: peers, Priority: 100, Transport: board.RawTransport(rb.Iface),
			PoolSize: 256 << 20, LogSize: 32 << 20, CheckpointKiB: 256}
		if tune != nil {
			tune(&cfg)
		}
		var b *board.Board
		err := rb.Do(func() (err error) { b, err = board.Open(cfg); return err })
		if err != nil {
			g.close()
			return nil, fmt.Errorf("opening board %d: %w", rb.Site, err)
		}
		g.boards = append(g.boards, b)
	}
	for i, b := range g.boards {
		mode := board.StartClient
		if i == 0 {
			mode = board.StartMaster
		}
		if err := b.Start(ctx, mode); err != nil {
			g.close()
			return nil, fmt.Errorf("starting board %d: %w", b.Site(), err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, b := range g.boards {
		m, err := b.WaitMaster(wctx)
		if err == nil && m != g.boards[0].Site() {
			err = fmt.Errorf("board %d follows master %d, not the designated board %d", b.Site(), m, g.boards[0].Site())
		}
		if err != nil {
			g.close()
			return nil, fmt.Errorf("group %s of %d boards: board %d not ready: %w", name, n, b.Site(), err)
		}
	}
	return g, nil
}

// load is the outcome of writers committing on a master for a while.
type load struct {
	lat     Samples
	commits int
	notPerm int
	errs    int
	err     error // first error
	elapsed time.Duration
	perTx   float64 // commits per group-commit batch on the master
	moves   int     // times the writers found mastership had moved
	// reclaimed: mastership had moved to another process's board during
	// the warm-up and was given back before measuring (group.reclaim).
	reclaimed int
	// cpu is the CPU time (user+system) this process spent over the
	// measured interval: every board of the group runs here, so per
	// commit it is the whole group's cost, the figure that explains how
	// latency grows with the group on a machine of few CPUs.
	cpu time.Duration
}

// cpuPerCommit is the group's CPU time per permanent commit.
func (l load) cpuPerCommit() time.Duration {
	if l.commits == 0 {
		return 0
	}
	return l.cpu / time.Duration(l.commits)
}

// processCPU is the CPU time (user+system) of this process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (l load) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.commits) / l.elapsed.Seconds()
}

// runLoad runs writers concurrent Update callers against the group's
// master for d after a warm-up, and returns the measured interval only.
func runLoad(ctx context.Context, g *group, writers int, d time.Duration) load {
	warm := min(d/2, 200*time.Millisecond)
	_ = drive(ctx, g, writers, warm, false)
	m := g.master(ctx)
	reclaimed := 0
	if m == nil && g.reclaim != nil {
		if m = g.reclaim(ctx); m != nil {
			reclaimed++
		}
	}
	if m == nil {
		return load{err: fmt.Errorf("no master in the group after the warm-up")}
	}
	before := m.Stat().Counters
	cpu0 := processCPU()
	l := drive(ctx, g, writers, d, true)
	l.reclaimed = reclaimed
	l.cpu = processCPU() - cpu0
	after := m.Stat().Counters
	if b := after.Batches - before.Batches; b > 0 {
		l.perTx = float64(after.Commits-before.Commits) / float64(b)
	}
	return l
}

func drive(ctx context.Context, g *group, writers int, d time.Duration, record bool) load {
	var (
		mu  sync.Mutex
		out load
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	val := []byte(strings.Repeat("v", 100))
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make(Samples, 0, 4096)
			key := make([]byte, 16)
			binary.BigEndian.PutUint32(key, uint32(w))
			var commits, notPerm, errs, moves int
			var first error
			m := g.master(ctx)
			for i := 0; ctx.Err() == nil && m != nil; i++ {
				t0 := time.Now()
				// Every writer commits at least once, so an overloaded
				// machine yields slow figures rather than none.
				if i > 0 && !t0.Before(deadline) {
					break
				}
				binary.BigEndian.PutUint64(key[8:], uint64(i%4096))
				c, err := m.Update(ctx, func(tx *board.Tx) error { return tx.Bucket("bench").Put(key, val) })
				el := time.Since(t0)
				switch {
				case err != nil:
					errs++
					if first == nil {
						first = err
					}
					// Mastership moved (an election on a busy machine):
					// follow it, and say so in the results.
					if errors.Is(err, board.ErrNotMaster) || errors.Is(err, board.ErrLockout) || errors.Is(err, board.ErrUnavail) {
						moves++
						time.Sleep(200 * time.Microsecond) // pacing while a lockout lasts, not synchronisation
						m = g.master(ctx)
					}
					if errors.Is(err, board.ErrClosed) {
						m = nil
					}
				case !c.Perm:
					notPerm++
				default:
					commits++
					if record {
						lat = append(lat, el)
					}
				}
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.commits += commits
			out.notPerm += notPerm
			out.errs += errs
			out.moves += moves
			if out.err == nil {
				out.err = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

// loadRow renders one load for the commit and scale tables.
func (s *suite) loadCells(l load) (map[string]float64, []string) {
	v := map[string]float64{
		"p50_us": usF(l.lat.Quantile(.5)), "p99_us": usF(l.lat.Quantile(.99)), "commits_per_s": l.rate(),
		"commits": float64(l.commits), "not_perm": float64(l.notPerm), "errors": float64(l.errs), "commits_per_batch": l.perTx,
	}
	ratio := "-"
	if s.bare != nil && s.bare.rtt[64] > 0 {
		r := float64(l.lat.Quantile(.5)) / float64(s.bare.rtt[64])
		v["p50_over_bare_rtt64"] = r
		ratio = fmt.Sprintf("%.2fx", r)
	}
	c := []string{us(l.lat.Quantile(.5)), us(l.lat.Quantile(.99)), fmt.Sprintf("%.0f", l.rate()), ratio, fmt.Sprintf("%.1f", l.perTx),
		fmt.Sprintf("%d/%d", l.notPerm, l.errs)}
	return v, c
}

func (s *suite) runCommit(ctx context.Context) Section {
	sec := emptySection(secCommit)
	sec.Setup = inProcessSetup + fmt.Sprintf("Each configuration is measured for %v after a warm-up. Ratio: commit p50 over the bare 64 B round trip of this run. ", s.cfg.CommitTime) +
		perProcessSetup
	sec.Columns = []string{"ack policy", "boards", "writers", "p50", "p99", "commits/s", "p50 / bare RTT", "commits per batch", "not perm / errors"}
	for i, n := range s.cfg.CommitBoards {
		for _, p := range s.policies() {
			g, err := s.openGroup(ctx, n, fmt.Sprintf("bench-c%d-%s", n, p), func(c *board.Config) { c.AckPolicy = p })
			s.measureVariants(ctx, &sec, []variant{{label: policyName(p)}}, n, g, err)
			if i > 0 {
				continue
			}
			// The smallest group again, laid out as a chassis runs it,
			// and for QUORUM also with the master's process at one P,
			// side by side.
			vs := []variant{{label: policyName(p) + perProcessLabel}}
			if p == board.AckQuorum && goruntime.GOMAXPROCS(0) != 1 {
				vs = append(vs, variant{label: policyName(p) + perProcessLabel + oneProcLabel, procs: 1})
			}
			g, c, err := s.openProcGroup(ctx, n, fmt.Sprintf("p%d%s", n, p), p)
			loads := s.measureVariants(ctx, &sec, vs, n, g, err)
			if len(loads) == 2 {
				for j, w := range s.cfg.Writers {
					def, one := loads[0][j], loads[1][j]
					if def.commits > 0 && one.commits > 0 {
						sec.note("%s%s, writers %d: master at one P against the default GOMAXPROCS, p50 %.2fx, commits/s %.2fx",
							policyName(p), perProcessLabel, w, float64(one.lat.Quantile(.5))/float64(def.lat.Quantile(.5)), one.rate()/def.rate())
					}
				}
			}
			if c != nil {
				c.close()
			}
		}
	}
	return sec
}

// perProcessLabel marks the commit rows of a group with one process per
// board.
const perProcessLabel = ", process per board"

const perProcessSetup = "Rows marked \"process per board\": the same group laid out as a chassis runs it, each board in its own process: board 1, the master, " +
	"in this process with the writers (as a firmware process embeds it), boards 2.. as `boardd run` processes in their namespaces with the same memory settings. " +
	"Every hand-off between boards is then a wake-up of another process, where in-process boards share one Go runtime whose threads are often still awake. " +
	"The QUORUM group is measured a second time with this process at GOMAXPROCS=1 (the row saying so), alternating which goes first at each writer count: " +
	"with a second P, a writer readied by the goroutine that received its acks is handed to another thread, woken on the other CPU to take it; " +
	"one P saves that hand-off but caps the process at one CPU."

// oneProcLabel marks the process-per-board row measured with the master's
// process at GOMAXPROCS=1.
const oneProcLabel = ", master at GOMAXPROCS 1"

// variant is one way of running a group's writers: this process's
// GOMAXPROCS while they run (0: leave it).
type variant struct {
	label string
	procs int
}

// measureVariants runs each writer count against g once per variant, the
// variants in turn at each count (in the opposite order at the next count,
// so that neither is always measured first) so that they are measured side
// by side, and adds a row per variant and count; it closes g. It returns
// the loads by variant and writer count (nil if none was measured).
func (s *suite) measureVariants(ctx context.Context, sec *Section, vs []variant, n int, g *group, err error) [][]load {
	if err != nil {
		for _, v := range vs {
			sec.missing(fmt.Sprintf("%s, %d boards", v.label, n), err.Error())
		}
		return nil
	}
	defer g.close()
	if ctx.Err() != nil {
		for _, v := range vs {
			sec.missing(fmt.Sprintf("%s, %d boards", v.label, n), "interrupted")
		}
		return nil
	}
	loads := make([][]load, len(vs))
	for k, w := range s.cfg.Writers {
		for j := range vs {
			i := j
			if k%2 == 1 {
				i = len(vs) - 1 - j
			}
			v := vs[i]
			prev := 0
			if v.procs > 0 {
				prev = goruntime.GOMAXPROCS(v.procs)
			}
			loads[i] = append(loads[i], runLoad(ctx, g, w, s.cfg.CommitTime))
			if prev > 0 {
				goruntime.GOMAXPROCS(prev)
			}
		}
	}
	for i, v := range vs {
		for j, w := range s.cfg.Writers {
			s.addLoad(sec, v.label, n, w, loads[i][j])
		}
	}
	return loads
}

// addLoad adds the row of one measured load.
func (s *suite) addLoad(sec *Section, label string, n, w int, l load) {
	if l.commits == 0 {
		sec.missing(label, fmt.Sprintf("%d boards, %d writers: no permanent commit (%d not perm, %d errors, first: %v)", n, w, l.notPerm, l.errs, l.err))
		return
	}
	v, c := s.loadCells(l)
	v["boards"], v["writers"] = float64(n), float64(w)
	sec.add(label, v, append([]string{fmt.Sprint(n), fmt.Sprint(w)}, c...)...)
	if n == 3 && w == 1 && !strings.Contains(label, perProcessLabel) {
		s.latency[label] = l.lat
	}
	if l.err != nil {
		sec.note("%s, %d boards, %d writers: %d errors (%d times mastership had moved), first: %v", label, n, w, l.errs, l.moves, l.err)
	}
	if l.reclaimed > 0 {
		sec.note("%s, %d boards, %d writers: an election during the warm-up had moved mastership to a `boardd` replica; it was asked to step down (`boardd stepdown`) and board 1, of higher priority, elected again before measuring (the row is the measured interval only)", label, n, w)
	}
	s.logf("commit %s boards=%d writers=%d p50=%v rate=%.0f/s", label, n, w, l.lat.Quantile(.5), l.rate())
}

func (s *suite) runScale(ctx context.Context) Section {
	sec := emptySection(secScale)
	sec.Setup = inProcessSetup + fmt.Sprintf("Ack policy QUORUM; %v per configuration after a warm-up. Growth: p50 over the p50 of the smallest group.", s.cfg.ScaleTime)
	sec.Columns = []string{"boards", "p50 1 writer", "p99 1 writer", "commits/s 1 writer", "growth", "CPU per commit 1 writer", "p50 64 writers", "p99 64 writers", "commits/s 64 writers", "CPU per commit 64 writers"}
	var base, baseCPU time.Duration
	for _, n := range s.cfg.ScaleBoards {
		label := fmt.Sprint(n)
		if ctx.Err() != nil {
			sec.missing(label, "interrupted")
			continue
		}
		g, err := s.openGroup(ctx, n, fmt.Sprintf("bench-s%d", n), func(c *board.Config) { c.AckPolicy = board.AckQuorum })
		if err != nil {
			sec.missing(label, err.Error())
			continue
		}
		one := runLoad(ctx, g, 1, s.cfg.ScaleTime)
		many := runLoad(ctx, g, 64, s.cfg.ScaleTime)
		g.close()
		if one.commits == 0 || many.commits == 0 {
			sec.missing(label, fmt.Sprintf("no permanent commit (1 writer: %d not perm, %d errors, first %v; 64 writers: %d not perm, %d errors, first %v)",
				one.notPerm, one.errs, one.err, many.notPerm, many.errs, many.err))
			continue
		}
		p50 := one.lat.Quantile(.5)
		if base == 0 {
			base, baseCPU = p50, one.cpuPerCommit()
		}
		growth := float64(p50) / float64(base)
		sec.add(label, map[string]float64{
			"boards": float64(n), "p50_1w_us": usF(p50), "p99_1w_us": usF(one.lat.Quantile(.99)), "commits_per_s_1w": one.rate(), "growth_p50_1w": growth,
			"cpu_per_commit_1w_us": usF(one.cpuPerCommit()),
			"p50_64w_us":           usF(many.lat.Quantile(.5)), "p99_64w_us": usF(many.lat.Quantile(.99)), "commits_per_s_64w": many.rate(),
			"cpu_per_commit_64w_us": usF(many.cpuPerCommit()),
			"not_perm":              float64(one.notPerm + many.notPerm), "errors": float64(one.errs + many.errs),
		}, us(p50), us(one.lat.Quantile(.99)), fmt.Sprintf("%.0f", one.rate()), fmt.Sprintf("%.2fx", growth), us(one.cpuPerCommit()),
			us(many.lat.Quantile(.5)), us(many.lat.Quantile(.99)), fmt.Sprintf("%.0f", many.rate()), us(many.cpuPerCommit()))
		if baseCPU > 0 && n != s.cfg.ScaleBoards[0] {
			sec.note("%d boards: the group spends %.1fx the CPU per commit (1 writer) of the %d-board group, all on the machine's %d CPUs",
				n, float64(one.cpuPerCommit())/float64(baseCPU), s.cfg.ScaleBoards[0], goruntime.NumCPU())
		}
		if one.notPerm+many.notPerm+one.errs+many.errs > 0 {
			sec.note("%d boards: %d commits not perm, %d errors (%d times mastership had moved; first: %v %v)", n, one.notPerm+many.notPerm, one.errs+many.errs, one.moves+many.moves, one.err, many.err)
		}
		s.logf("scale boards=%d p50=%v rate64=%.0f/s", n, p50, many.rate())
	}
	return sec
}
