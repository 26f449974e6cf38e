package hwtest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestPartitionMinorityMaster cuts the master of a 5-board group off the
// backplane while writers run on both sides. The isolated master must not
// report any write Perm; the majority elects a new master and goes on
// committing; after the link returns the old master rejoins as a replica
// and everything it took alone is rolled back.
func TestPartitionMinorityMaster(t *testing.T) {
	rounds := 2
	if *soak {
		rounds = 6
	}
	s := newScenario(t, 5, nil, func(o *harness.ClusterOptions) { o.Leases = true })
	s.start()
	s.monitor()
	// The majority writer avoids whichever master is being isolated.
	var isolated atomic.Uint32
	s.writer("maj", 2, func(worker, attempt int) (harness.Target, bool) {
		return s.avoiding(uint16(isolated.Load()))(worker, attempt)
	})
	s.waitPerm(50, 30*time.Second, "commits before the partition")

	var summary []string
	var final uint16
	for round := range rounds {
		ctx, cancel := s.within(90 * time.Second)
		old, err := s.cl.WaitMaster(ctx)
		if err != nil {
			cancel()
			t.Fatalf("round %d: no agreed master: %v; stats: %s", round+1, err, s.describe())
		}
		isolated.Store(uint32(old))
		if err := s.ch.Board(old).LinkDown(); err != nil {
			cancel()
			t.Fatal(err)
		}
		cut := time.Now()
		s.fault("link down on master %d (round %d/%d)", old, round+1, rounds)
		tag := fmt.Sprintf("minority%d", round)
		minority := s.writer(tag, 1, s.pinned(old))

		var others []uint16
		for _, site := range s.cl.Sites() {
			if site != old {
				others = append(others, site)
			}
		}
		nm, err := s.cl.WaitMaster(ctx, others...)
		if err != nil {
			cancel()
			t.Fatalf("the majority elected no master after the partition: %v; stats: %s", err, s.describe())
		}
		elected := time.Since(cut)
		s.waitPerm(50, 30*time.Second, "majority commits during the partition")
		// The isolated side must have tried: a few attempts recorded.
		err = harness.WaitFor(ctx, "writes attempted on the isolated master", 10*time.Millisecond, func(context.Context) (bool, error) {
			n := 0
			for _, w := range s.hist.Writes() {
				if w.Tag == tag {
					n++
				}
			}
			return n >= 5, nil
		})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		oldStat, _ := s.cl.Stat(ctx, old)
		minority.Stop()
		if err := s.ch.Board(old).LinkUp(); err != nil {
			cancel()
			t.Fatal(err)
		}
		s.fault("link up on site %d", old)
		isolated.Store(0)
		if round < rounds-1 {
			// The old master must be back as a replica before the next
			// round isolates whoever is master then.
			if _, err := s.cl.WaitMaster(ctx); err != nil {
				cancel()
				t.Fatalf("round %d: site %d did not rejoin: %v; stats: %s", round+1, old, err, s.describe())
			}
		} else {
			final = s.verify()
		}
		cancel()

		var minPerm, minNotPerm, minFailed int
		for _, w := range s.hist.Writes() {
			if w.Tag != tag {
				continue
			}
			switch w.Outcome {
			case harness.Perm:
				minPerm++
				s.rep.Add(harness.Violation{Kind: "perm-on-minority", Site: old, Key: w.Key,
					Msg: fmt.Sprintf("isolated master reported Perm (lsn %d) at %s, %v after the cut", w.LSN, w.End.Format("15:04:05.000"), w.Start.Sub(cut))})
			case harness.NotPerm:
				minNotPerm++
			default:
				minFailed++
			}
		}
		summary = append(summary, fmt.Sprintf("%d->%d(elected %v, isolated writes notperm=%d failed=%d perm=%d, isolated role %s)",
			old, nm, elected.Round(time.Millisecond), minNotPerm, minFailed, minPerm, oldStat.Role))
	}

	// Everything the isolated masters took alone was rolled back.
	ctx, cancel := s.within(60 * time.Second)
	defer cancel()
	contents, err := s.cl.Contents(ctx, s.db, s.cl.Live()...)
	if err != nil {
		t.Fatal(err)
	}
	ws := s.hist.Writes()
	for site, c := range contents {
		s.rep.Add(harness.CheckAbsent(ws, func(w harness.Write) bool { return strings.HasPrefix(w.Tag, "minority") }, site, c)...)
	}
	s.finish(fmt.Sprintf("final-master=%d rounds=%v", final, summary))
}
