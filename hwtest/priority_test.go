package hwtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestPriorities runs 4 boards with priorities 0, 10, 50 and 100. Writes
// stop and every board catches up before each kill of the master, so the
// survivors are equally current and the highest priority among the
// electable survivors must win. The priority-0 board must never be master,
// not even when it is asked to call an election itself.
func TestPriorities(t *testing.T) {
	prio := map[uint16]uint32{1: 0, 2: 10, 3: 50, 4: 100}
	s := newScenario(t, 4, nil, func(o *harness.ClusterOptions) { o.Priority = prio })
	s.start()
	s.monitor()
	rounds := 3
	if *soak {
		rounds = 8
	}
	var winners []string
	for i := range rounds {
		w := &harness.Writer{DB: s.db, Prefix: fmt.Sprintf("%sp%d/", s.prefix, i), Pick: s.cl.Pick,
			Workers: 1, Timeout: 3 * time.Second, Interval: 2 * time.Millisecond, ValueSize: 32, Tag: "prio"}
		if err := w.Start(s.ctx, &s.hist); err != nil {
			t.Fatal(err)
		}
		s.writers = append(s.writers, w)
		s.waitPerm(20, 30*time.Second, fmt.Sprintf("commits in round %d", i+1))
		w.Stop()

		ctx, cancel := s.within(60 * time.Second)
		m, err := s.cl.WaitCaughtUp(ctx)
		if err != nil {
			cancel()
			t.Fatalf("round %d: %v", i+1, err)
		}
		if m == 1 {
			s.rep.Add(harness.Violation{Kind: "unelectable-master", Site: 1, Msg: "priority-0 board is master"})
		}
		var want uint16
		for _, site := range s.cl.Live() {
			if site != m && prio[site] > 0 && (want == 0 || prio[site] > prio[want]) {
				want = site
			}
		}
		s.cl.Kill(m)
		s.fault("SIGKILL master %d (priority %d) with every board caught up", m, prio[m])
		// Ask the priority-0 board to call the election: it may run it,
		// it must not win it.
		ec, ecancel := context.WithTimeout(ctx, 5*time.Second)
		c1 := harness.NewClient(s.cl.Node(1).Sock)
		_, _ = c1.Elect(ec)
		c1.Close()
		ecancel()
		got, err := s.cl.WaitMaster(ctx)
		if err != nil {
			cancel()
			t.Fatalf("round %d: no master after killing %d: %v", i+1, m, err)
		}
		winners = append(winners, fmt.Sprintf("%d->%d", m, got))
		if got != want {
			s.rep.Add(harness.Violation{Kind: "priority-ignored", Site: got, Msg: fmt.Sprintf(
				"round %d: equally current survivors, site %d (priority %d) won over site %d (priority %d)",
				i+1, got, prio[got], want, prio[want])})
		}
		if err := s.cl.Start(ctx, m, false); err != nil {
			cancel()
			t.Fatal(err)
		}
		s.fault("restart site %d with empty memory", m)
		cancel()
	}
	s.verify()
	for _, smp := range s.cl.StopMonitor() {
		if smp.Site == 1 && smp.Master {
			s.rep.Add(harness.Violation{Kind: "unelectable-master", Site: 1,
				Msg: "priority-0 board sampled as master at " + smp.Sent.Format("15:04:05.000")})
			break
		}
	}
	s.finish(fmt.Sprintf("kills(master->winner)=%v", winners))
}
