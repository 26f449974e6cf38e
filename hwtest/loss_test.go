package hwtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestFrameLoss drops 1%, 5% and 20% of every board's backplane frames
// (XDP on each board's bridge-side link) while writers commit. Commits must
// keep coming at every level, none that returned Perm may be lost, and the
// boards' re-request counters must show the gaps being repaired.
func TestFrameLoss(t *testing.T) {
	s := newScenario(t, 3, nil, nil)
	s.start()
	s.monitor()
	s.writer("loss", 2, nil)
	s.waitPerm(50, 30*time.Second, "commits before the loss")

	perPhase := 300
	if *soak {
		perPhase = 1500
	}
	sumReReq := func() (uint64, bool) {
		ctx, cancel := s.within(5 * time.Second)
		defer cancel()
		stats := s.cl.Stats(ctx, 2*time.Second)
		var n uint64
		for _, st := range stats {
			n += st.Counters.ReRequests
		}
		return n, len(stats) == len(s.cl.Sites())
	}
	var phases []string
	var repaired uint64
	for _, loss := range []float64{0.01, 0.05, 0.20} {
		before, ok := sumReReq()
		if !ok {
			t.Fatalf("not every board answered stat before the %.0f%% phase", loss*100)
		}
		injs := s.lossEverywhere(loss)
		start := time.Now()
		p0 := s.hist.PermCount()
		s.waitPerm(perPhase, 90*time.Second, fmt.Sprintf("commits under %.0f%% loss", loss*100))
		rate := float64(s.hist.PermCount()-p0) / time.Since(start).Seconds()
		seen, dropped := s.endLoss(injs)
		after, ok := sumReReq()
		if !ok {
			t.Fatalf("not every board answered stat after the %.0f%% phase", loss*100)
		}
		if dropped == 0 {
			t.Fatalf("%.0f%% phase: the injectors dropped nothing (%d frames seen): no fault was injected", loss*100, seen)
		}
		if loss >= 0.05 {
			repaired += after - before
		}
		phases = append(phases, fmt.Sprintf("%.0f%%:dropped=%d/%d rereq=%d perm/s=%.0f", loss*100, dropped, seen, after-before, rate))
		t.Logf("%.0f%% loss: %d of %d frames dropped, %d re-requests, %.0f Perm commits/s", loss*100, dropped, seen, after-before, rate)
	}
	if repaired == 0 {
		s.rep.Add(harness.Violation{Kind: "no-repair", Msg: "no re-request counted under 5% and 20% frame loss: lost log records were not re-requested (or counters.rerequests is not maintained)"})
	}
	ctx, cancel := s.within(30 * time.Second)
	defer cancel()
	if _, err := s.cl.WaitMaster(ctx); err != nil {
		t.Fatal(err)
	}
	s.waitPerm(20, 30*time.Second, "commits after the loss")
	s.verify()
	s.finish("phases=[" + strings.Join(phases, " ") + "]")
}
