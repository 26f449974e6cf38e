package hwtest

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// scenarioBudget bounds one scenario unless the test deadline is nearer;
// soak runs get longer.
func scenarioBudget() time.Duration {
	if *soak {
		return 15 * time.Minute
	}
	return 4 * time.Minute
}

// scenario is one fault scenario: a chassis, a boardd cluster on it, the
// writers' history and the report of what the checks found.
type scenario struct {
	t      *testing.T
	ctx    context.Context
	ch     *rig.Chassis
	cl     *harness.Cluster
	opt    harness.ClusterOptions
	dir    string
	db     string
	prefix string

	hist    harness.History
	rep     harness.Report
	writers []*harness.Writer
	faults  []string
	// failovers are the measured times from a master's loss to the first
	// Perm commit by its successor.
	failovers []time.Duration
	monitored bool
	begun     time.Time
}

// newScenario builds boardd (once), a chassis of boards boards and a
// cluster on sites (default: all), with mod adjusting the options. Nothing
// is started yet.
func newScenario(t *testing.T, boards int, sites []uint16, mod func(*harness.ClusterOptions)) *scenario {
	t.Helper()
	rig.RequireRoot(t)
	bin := boardd(t)
	ch := rig.NewForTest(t, rig.Options{Boards: boards})
	dir, err := os.MkdirTemp("", "hw"+ch.ID())
	if err != nil {
		t.Fatal(err)
	}
	s := &scenario{t: t, ch: ch, dir: dir, db: "kv", prefix: "w/", begun: time.Now()}
	t.Cleanup(func() {
		if t.Failed() || *keepLog {
			t.Logf("board logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), scenarioBudget())
	if dl, ok := t.Deadline(); ok && time.Until(dl) < scenarioBudget()+30*time.Second {
		ctx, cancel = context.WithDeadline(context.Background(), dl.Add(-30*time.Second))
	}
	t.Cleanup(cancel)
	s.ctx = ctx

	opt := harness.ClusterOptions{Bin: bin, Dir: dir, Group: "hw-" + ch.ID(), Iface: rig.BoardIface,
		Boards: map[uint16]harness.Board{}}
	if len(sites) == 0 {
		for _, b := range ch.Boards {
			sites = append(sites, b.Site)
		}
	}
	for _, site := range sites {
		opt.Boards[site] = ch.Board(site)
	}
	if mod != nil {
		mod(&opt)
	}
	cl, err := harness.NewCluster(opt)
	if err != nil {
		t.Fatal(err)
	}
	s.cl, s.opt = cl, opt
	// Registered after the chassis's cleanup, so it runs first: every
	// process is dead before its namespace goes away.
	t.Cleanup(func() {
		for _, w := range s.writers {
			w.Stop()
		}
		cl.Close()
		if t.Failed() {
			t.Logf("board log tails:\n%s", cl.Tails(4000))
		}
	})
	return s
}

// within returns a context bounded by d and the scenario's budget.
func (s *scenario) within(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, d)
}

// start starts every board and waits for an agreed master.
func (s *scenario) start() uint16 {
	s.t.Helper()
	ctx, cancel := s.within(60 * time.Second)
	defer cancel()
	if err := s.cl.StartAll(ctx); err != nil {
		s.t.Fatalf("starting the boards: %v", err)
	}
	m, err := s.cl.WaitMaster(ctx)
	if err != nil {
		s.t.Fatalf("no master elected after start: %v; stats: %s", err, s.describe())
	}
	return m
}

// monitor starts sampling stats (master tracking for writers, lease samples).
func (s *scenario) monitor() {
	s.cl.StartMonitor(s.ctx, 20*time.Millisecond)
	s.monitored = true
}

// writer starts a continuous writer; pick defaults to the cluster's.
func (s *scenario) writer(tag string, workers int, pick func(int, int) (harness.Target, bool)) *harness.Writer {
	s.t.Helper()
	if pick == nil {
		pick = s.cl.Pick
	}
	w := &harness.Writer{DB: s.db, Prefix: fmt.Sprintf("%s%s%d/", s.prefix, tag, len(s.writers)), Pick: pick,
		Workers: workers, Timeout: 3 * time.Second, Interval: 2 * time.Millisecond, ValueSize: 64, Tag: tag}
	if err := w.Start(s.ctx, &s.hist); err != nil {
		s.t.Fatal(err)
	}
	s.writers = append(s.writers, w)
	return w
}

// pinned is a Pick that always sends to one site.
func (s *scenario) pinned(site uint16) func(int, int) (harness.Target, bool) {
	return func(int, int) (harness.Target, bool) {
		return harness.Target{Site: site, Sock: s.cl.Node(site).Sock}, true
	}
}

// avoiding is the cluster's Pick restricted to sites other than skip.
func (s *scenario) avoiding(skip uint16) func(int, int) (harness.Target, bool) {
	return func(worker, attempt int) (harness.Target, bool) {
		for i := range 8 {
			tg, ok := s.cl.Pick(worker, attempt+i)
			if !ok {
				return tg, false
			}
			if tg.Site != skip {
				return tg, true
			}
		}
		return harness.Target{}, false
	}
}

// waitPerm waits until n more Perm commits than now were recorded.
func (s *scenario) waitPerm(n int, d time.Duration, what string) {
	s.t.Helper()
	base := s.hist.PermCount()
	s.waitPermTotal(base+n, d, what)
}

func (s *scenario) waitPermTotal(total int, d time.Duration, what string) {
	s.t.Helper()
	ctx, cancel := s.within(d)
	defer cancel()
	err := harness.WaitFor(ctx, what, 5*time.Millisecond, func(context.Context) (bool, error) {
		return s.hist.PermCount() >= total, nil
	})
	if err != nil {
		p, np, f := s.hist.Counts()
		s.t.Fatalf("no progress: %v (perm %d of %d wanted, notperm %d, failed %d; last errors: %s); stats: %s",
			err, p, total, np, f, s.lastErrors(3), s.describe())
	}
}

func (s *scenario) lastErrors(n int) string {
	ws := s.hist.Writes()
	var errs []string
	for i := len(ws) - 1; i >= 0 && len(errs) < n; i-- {
		if ws[i].Err != "" {
			errs = append(errs, fmt.Sprintf("via %d: %s", ws[i].Via, ws[i].Err))
		}
	}
	return strings.Join(errs, " | ")
}

// describe summarises every board's stat for failure messages. A board
// whose loop is stuck answers stat only after a second, so wait longer.
func (s *scenario) describe() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stats := s.cl.Stats(ctx, 3*time.Second)
	d := harness.Describe(stats)
	for _, site := range s.cl.Live() {
		if _, ok := stats[site]; !ok {
			d += fmt.Sprintf("; %d: no stat answer within 3s", site)
		}
	}
	return d
}

// logWarnings counts WARN and ERROR lines in every board's log and returns
// the most frequent message, for the result line: a scenario can pass its
// checks while the runtime complains, and that is worth seeing.
func (s *scenario) logWarnings() string {
	total := 0
	msgs := map[string]int{}
	for _, site := range s.cl.Sites() {
		n := s.cl.Node(site)
		b, err := os.ReadFile(n.Log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
				continue
			}
			total++
			if i := strings.Index(line, "msg="); i >= 0 {
				m := line[i+4:]
				if strings.HasPrefix(m, `"`) {
					if j := strings.Index(m[1:], `"`); j >= 0 {
						m = m[1 : j+1]
					}
				} else if j := strings.IndexByte(m, ' '); j >= 0 {
					m = m[:j]
				}
				msgs[m]++
			}
		}
	}
	if total == 0 {
		return "log-warnings=0"
	}
	top, topN := "", 0
	for m, n := range msgs {
		if n > topN || n == topN && m < top {
			top, topN = m, n
		}
	}
	return fmt.Sprintf("log-warnings=%d (most: %q x%d)", total, top, topN)
}

// fault records an injected fault for the result line.
// lossEverywhere drops fraction of every board's backplane frames (XDP on
// its bridge-side link) until endLoss.
func (s *scenario) lossEverywhere(fraction float64) []*rig.Injector {
	s.t.Helper()
	var injs []*rig.Injector
	for _, site := range s.cl.Sites() {
		inj, err := s.ch.Board(site).InjectLoss(fraction)
		if err != nil {
			for _, i := range injs {
				i.Close()
			}
			s.t.Fatalf("loss injector on site %d: %v", site, err)
		}
		injs = append(injs, inj)
	}
	s.fault("%.0f%% frame loss on every board", fraction*100)
	return injs
}

// endLoss removes the injectors and reports the frames they saw and dropped.
func (s *scenario) endLoss(injs []*rig.Injector) (seen, dropped uint64) {
	s.t.Helper()
	for _, inj := range injs {
		a, b := inj.Stats()
		seen, dropped = seen+a, dropped+b
		if err := inj.Close(); err != nil {
			s.t.Fatalf("closing injector: %v", err)
		}
	}
	return seen, dropped
}

func (s *scenario) fault(format string, args ...any) {
	s.faults = append(s.faults, fmt.Sprintf(format, args...))
	s.t.Logf("%s fault: %s", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// stopWriters stops every writer and waits for their last results.
func (s *scenario) stopWriters() {
	for _, w := range s.writers {
		w.Stop()
	}
}

// verify stops the writers, waits until every running board agrees on a
// master and has caught up, and runs the checks: no Perm commit lost, no
// phantom, convergence by scan (and content hash if published), lease
// samples. It returns the final master. Faults must be healed before.
func (s *scenario) verify() uint16 {
	s.t.Helper()
	s.stopWriters()
	// Reading back a soak-sized group (hundreds of MB per board through
	// the socket) takes minutes, not seconds.
	budget := 90 * time.Second
	if *soak {
		budget = 6 * time.Minute
	}
	ctx, cancel := s.within(budget)
	defer cancel()
	m, err := s.cl.WaitCaughtUp(ctx)
	if err != nil {
		s.t.Fatalf("boards did not converge after the faults healed: %v", err)
	}
	live := s.cl.Live()
	contents, err := s.cl.Contents(ctx, s.db, live...)
	if err != nil {
		s.t.Fatalf("reading the final contents: %v", err)
	}
	ws := s.hist.Writes()
	for _, site := range live {
		s.rep.Add(harness.CheckDurable(ws, site, contents[site])...)
		s.rep.Add(harness.CheckNoPhantom(ws, s.prefix, site, contents[site])...)
	}
	s.rep.Add(harness.CheckConverged(m, contents)...)
	s.checkHashes(ctx, m, live)
	if s.monitored {
		samples := s.cl.StopMonitor()
		if s.opt.Leases {
			s.rep.Add(harness.CheckLeases(samples)...)
		}
	}
	return m
}

// checkHashes compares content hashes if the daemon publishes them.
func (s *scenario) checkHashes(ctx context.Context, m uint16, live []uint16) {
	stats := s.cl.StatsWithHash(ctx, 30*time.Second)
	mh, ok := stats[m].ContentHash()
	if !ok {
		s.rep.Missing("content hash in `stat` (board.Stat has no content_hash; convergence checked by full scan only)")
		return
	}
	for _, site := range live {
		if h, ok := stats[site].ContentHash(); !ok || h != mh {
			s.rep.Add(harness.Violation{Kind: "hash-differs", Site: site,
				Msg: fmt.Sprintf("content hash %#x (present %v), master %d has %#x", h, ok, m, mh)})
		}
	}
}

// finish prints the result line and fails the test if any check found a
// violation.
func (s *scenario) finish(extra string) {
	s.t.Helper()
	perm, notPerm, failed := s.hist.Counts()
	lost := s.rep.Count("lost") + s.rep.Count("wrong-value")
	line := fmt.Sprintf("%s: faults=%d commits perm=%d notperm=%d failed=%d lost=%d violations=%d",
		s.t.Name(), len(s.faults), perm, notPerm, failed, lost, s.rep.Count(""))
	if len(s.failovers) > 0 {
		fo := append([]time.Duration(nil), s.failovers...)
		sort.Slice(fo, func(i, j int) bool { return fo[i] < fo[j] })
		var sum time.Duration
		for _, d := range fo {
			sum += d
		}
		line += fmt.Sprintf(" failover max=%v median=%v mean=%v n=%d", fo[len(fo)-1].Round(time.Millisecond),
			fo[len(fo)/2].Round(time.Millisecond), (sum / time.Duration(len(fo))).Round(time.Millisecond), len(fo))
	}
	if extra != "" {
		line += " " + extra
	}
	line += fmt.Sprintf(" took=%v %s", time.Since(s.begun).Round(100*time.Millisecond), s.logWarnings())
	if miss := s.rep.MissingFeatures(); len(miss) > 0 {
		line += fmt.Sprintf(" not-checked=[%s]", strings.Join(miss, "; "))
	}
	s.t.Log(line)
	fmt.Println("RESULT " + line)
	if s.rep.Count("") > 0 {
		s.t.Fatalf("guarantee violations:\n%s", s.rep.Summary(30))
	}
}
