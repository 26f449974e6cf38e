package hwtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestEmptiedMasterVotesWithItsLostLog: three boards, QUORUM. A replica (the
// stale one) is cut off and falls behind while the master and the other
// replica (the holder) make writes Perm. The master is killed and restarted
// with empty memory: it hears the holder but waits, since it needs two
// boards that remember. Then the holder is cut off and the stale replica
// comes back: the emptied board has now heard both and recovers, and the
// stale replica, alone with it, asks for votes. Electing it would lose every
// write made Perm while it was away (the holder would roll them back when
// it returns); the emptied board votes as if it still had the log it lost
// (its vote floor, the holder's log), so no master is elected until the
// holder is back. One board lost its memory: the guarantee covers it.
func TestEmptiedMasterVotesWithItsLostLog(t *testing.T) {
	s := newScenario(t, 3, nil, nil)
	m := s.start()
	s.monitor()
	s.writer("load", 2, nil)
	s.waitPerm(30, 30*time.Second, "commits before the faults")
	var stale, holder uint16
	for _, site := range s.cl.Sites() {
		switch {
		case site == m:
		case stale == 0:
			stale = site
		default:
			holder = site
		}
	}
	link := func(site uint16, up bool) {
		t.Helper()
		set, state := s.ch.Board(site).LinkDown, "down"
		if up {
			set, state = s.ch.Board(site).LinkUp, "up"
		}
		if err := set(); err != nil {
			t.Fatal(err)
		}
		s.fault("link %s on board %d", state, site)
	}
	link(stale, false)
	s.waitPerm(30, 30*time.Second, "commits held by the master and the holder only")

	ctx, cancel := s.within(60 * time.Second)
	defer cancel()
	s.cl.Kill(m)
	s.fault("SIGKILL master %d", m)
	if err := s.cl.Start(ctx, m, false); err != nil {
		t.Fatalf("restarting board %d: %v", m, err)
	}
	s.fault("restart board %d with empty memory", m)
	stat := func(site uint16) func(context.Context) (harness.Stat, error) {
		return func(ctx context.Context) (harness.Stat, error) { return s.cl.Stat(ctx, site) }
	}
	var st harness.Stat
	err := harness.WaitFor(ctx, fmt.Sprintf("board %d recovering, having heard the holder %d", m, holder), 5*time.Millisecond,
		func(ctx context.Context) (bool, error) {
			var err error
			st, err = stat(m)(ctx)
			return err == nil && st.Election.Recovering && st.Election.Witnesses >= 1, nil
		})
	if err != nil {
		t.Fatalf("%v: last stat %+v", err, st.Election)
	}

	link(holder, false)
	link(stale, true)
	err = harness.WaitFor(ctx, fmt.Sprintf("board %d recovered with a vote floor", m), 5*time.Millisecond,
		func(ctx context.Context) (bool, error) {
			var err error
			st, err = stat(m)(ctx)
			return err == nil && !st.Election.Recovering, nil
		})
	if err != nil {
		t.Fatalf("%v: last stat %+v", err, st.Election)
	}
	if st.Election.VoteFloorLSN == 0 {
		t.Fatalf("board %d recovered without a vote floor: %+v", m, st.Election)
	}
	// The absence of a master is what is checked here, so it needs a
	// window: four times a failover's worth of the cluster's timing (the
	// stale board elected itself with the emptied board's vote within one
	// before the floor).
	tm := s.opt.Timing
	if tm.ElectionTimeout == 0 {
		tm = harness.DefaultTiming
	}
	wctx, wcancel := context.WithTimeout(ctx, 4*(tm.HeartbeatMonitor+tm.ElectionTimeout))
	got, err := s.cl.WaitMaster(wctx, m, stale)
	wcancel()
	if err == nil {
		t.Errorf("board %d (stale) and the emptied board %d agreed on master %d without the holder %d", stale, m, got, holder)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a master among %d and %d: %v", m, stale, err)
	}
	s.fault("no master among the emptied board and the stale one")

	link(holder, true)
	s.waitPerm(20, 60*time.Second, "commits after the holder returned")
	s.verify()
	s.finish(fmt.Sprintf("stale=%d holder=%d floor=%d", stale, holder, st.Election.VoteFloorLSN))
}
