package hwtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestTwoSiteNonStrict partitions a two-site group: without TwoSiteStrict
// each side may elect itself (one vote suffices), so both become master.
// After the link returns, DUPMASTER resolution must leave one master, the
// two divergent histories must not be merged (only one side's partition
// writes may survive), and no Perm commit may be lost.
func TestTwoSiteNonStrict(t *testing.T) {
	s := newScenario(t, 2, nil, nil)
	m := s.start()
	r := other(m)
	var events harness.EventLog
	evCtx, evCancel := context.WithCancel(s.ctx)
	defer func() { evCancel(); events.Wait() }()
	for _, site := range []uint16{1, 2} {
		if err := events.Follow(evCtx, site, s.cl.Node(site).Sock); err != nil {
			t.Fatal(err)
		}
	}
	s.monitor()
	s.writer("pre", 1, nil)
	s.waitPerm(30, 30*time.Second, "commits before the partition")
	s.stopWriters()

	if err := s.ch.Board(r).LinkDown(); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	s.fault("link down on site %d (group split in two)", r)
	ctx, cancel := s.within(60 * time.Second)
	defer cancel()
	err := harness.WaitFor(ctx, "both sites master", 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		st := s.cl.Stats(ctx, time.Second)
		return st[m].IsMaster() && st[r].IsMaster(), nil
	})
	if err != nil {
		t.Fatalf("non-strict two-site partition: %v; stats: %s", err, s.describe())
	}
	t.Logf("both sites master %v after the cut", time.Since(cut).Round(time.Millisecond))
	side := map[uint16]*harness.Writer{}
	for _, site := range []uint16{m, r} {
		side[site] = s.writer(fmt.Sprintf("side%d", site), 1, s.pinned(site))
	}
	err = harness.WaitFor(ctx, "writes on both sides", 10*time.Millisecond, func(context.Context) (bool, error) {
		n := map[string]int{}
		for _, w := range s.hist.Writes() {
			if w.Outcome != harness.Failed {
				n[w.Tag]++
			}
		}
		return n[fmt.Sprintf("side%d", m)] >= 5 && n[fmt.Sprintf("side%d", r)] >= 5, nil
	})
	if err != nil {
		t.Fatalf("writes during the split: %v; last errors: %s", err, s.lastErrors(4))
	}
	for _, w := range side {
		w.Stop()
	}
	if err := s.ch.Board(r).LinkUp(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	s.fault("link up on site %d", r)
	final := s.verify()
	resolved := time.Since(healed)

	// Only one side's split-brain history may survive.
	contents, err := s.cl.Contents(ctx, s.db, final)
	if err != nil {
		t.Fatal(err)
	}
	surviving := map[uint16]int{}
	for _, w := range s.hist.Writes() {
		for _, site := range []uint16{m, r} {
			if w.Tag == fmt.Sprintf("side%d", site) {
				if _, ok := contents[final][w.Key]; ok {
					surviving[site]++
				}
			}
		}
	}
	if surviving[m] > 0 && surviving[r] > 0 {
		s.rep.Add(harness.Violation{Kind: "merged-histories", Site: final,
			Msg: fmt.Sprintf("writes of both split-brain masters survived (site %d: %d, site %d: %d)", m, surviving[m], r, surviving[r])})
	}
	dup := 0
	for _, ev := range events.Events() {
		if ev.Type == "dupmaster" && ev.Time.After(healed) {
			dup++
		}
	}
	s.finish(fmt.Sprintf("final-master=%d resolved-after=%v dupmaster-events=%d surviving-split-writes=%v",
		final, resolved.Round(time.Millisecond), dup, surviving))
}

// TestTwoSiteStrict kills the master of a strict two-site group: the
// survivor must not become master alone however many elections it tries;
// once the peer returns (with empty memory) a master is elected, and it must
// be the survivor, since it holds every Perm commit.
func TestTwoSiteStrict(t *testing.T) {
	s := newScenario(t, 2, nil, func(o *harness.ClusterOptions) { o.TwoSiteStrict = true })
	m := s.start()
	r := other(m)
	s.monitor()
	s.writer("pre", 1, nil)
	s.waitPerm(30, 30*time.Second, "commits before the kill")
	s.stopWriters()

	ctx, cancel := s.within(60 * time.Second)
	defer cancel()
	base, err := s.cl.Stat(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	killed := s.cl.Kill(m)
	s.fault("SIGKILL master %d", m)
	var st harness.Stat
	// Egen counts election attempts (Counters.Elections counts elections,
	// which a retried attempt does not start anew).
	err = harness.WaitFor(ctx, fmt.Sprintf("site %d to try 3 elections alone", r), 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		var err error
		st, err = s.cl.Stat(ctx, r)
		if err != nil {
			return false, err
		}
		if st.IsMaster() {
			return false, fmt.Errorf("site %d became master without its peer", r)
		}
		return st.Egen >= base.Egen+3, nil
	})
	if err != nil {
		t.Fatalf("%v (egen %d -> %d, role %s); stat of site %d: %s", err, base.Egen, st.Egen, st.Role, r, st.Raw)
	}
	alone := time.Since(killed)
	restarted := time.Now()
	if err := s.cl.Start(ctx, m, false); err != nil {
		t.Fatal(err)
	}
	s.fault("restart site %d with empty memory", m)
	final := s.verify()
	for _, smp := range s.cl.StopMonitor() {
		if smp.Site == r && smp.Master && smp.Sent.After(killed) && smp.Recv.Before(restarted) {
			s.rep.Add(harness.Violation{Kind: "master-without-peer", Site: r, Msg: "sampled as master while its strict peer was down"})
			break
		}
	}
	if final != r {
		s.rep.Add(harness.Violation{Kind: "wrong-winner", Site: final,
			Msg: fmt.Sprintf("site %d restarted with empty memory won against site %d holding the data", final, r)})
	}
	s.finish(fmt.Sprintf("survivor=%d elections-alone=%d alone-for=%v final-master=%d",
		r, st.Egen-base.Egen, alone.Round(time.Millisecond), final))
}

// other is the other site of a two-site group.
func other(s uint16) uint16 {
	if s == 1 {
		return 2
	}
	return 1
}
