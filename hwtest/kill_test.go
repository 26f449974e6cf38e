package hwtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestMasterKill SIGKILLs the master of a 5-board group while two writers
// commit continuously, restarts the killed board with empty memory, and
// repeats. Failover is measured from the SIGKILL to the first Perm commit
// of a write that started after it (so it was committed by the successor).
func TestMasterKill(t *testing.T) {
	kills := 3
	if *soak {
		kills = 20
	}
	s := newScenario(t, 5, nil, nil)
	s.start()
	s.monitor()
	s.writer("k", 2, nil)
	s.waitPerm(50, 30*time.Second, "first commits")
	var boardFailover time.Duration
	for i := range kills {
		ctx, cancel := s.within(60 * time.Second)
		m, err := s.cl.WaitMaster(ctx)
		if err != nil {
			cancel()
			t.Fatalf("kill %d: no agreed master: %v; stats: %s", i+1, err, s.describe())
		}
		s.waitPerm(20, 30*time.Second, fmt.Sprintf("commits by master %d before kill %d", m, i+1))
		at := s.cl.Kill(m)
		s.fault("SIGKILL master %d (kill %d/%d)", m, i+1, kills)

		var first harness.Write
		err = harness.WaitFor(ctx, "a Perm commit by the new master", 2*time.Millisecond, func(context.Context) (bool, error) {
			var ok bool
			first, ok = s.hist.FirstPermStartedAfter(at)
			return ok, nil
		})
		if err != nil {
			cancel()
			t.Fatalf("kill %d of master %d: %v; last errors: %s; stats: %s", i+1, m, err, s.lastErrors(3),
				s.describe())
		}
		s.failovers = append(s.failovers, first.End.Sub(at))
		t.Logf("kill %d: master %d killed, first Perm commit by the successor after %v (via site %d)",
			i+1, m, first.End.Sub(at).Round(time.Millisecond), first.Via)
		if st, err := s.cl.Stat(ctx, first.Via); err == nil {
			boardFailover = max(boardFailover, st.Election.LastFailover)
		}

		// The killed board comes back with empty memory and must rejoin
		// (internal init) while the writers go on.
		if err := s.cl.Start(ctx, m, false); err != nil {
			cancel()
			t.Fatalf("restarting site %d: %v", m, err)
		}
		s.fault("restart site %d with empty memory", m)
		cancel()
	}
	s.waitPerm(20, 30*time.Second, "commits after the last kill")
	s.verify()
	s.finish(fmt.Sprintf("board-reported-failover-max=%v", boardFailover.Round(time.Millisecond)))
}
