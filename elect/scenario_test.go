package elect

import (
	"slices"
	"testing"
	"time"
)

// site spec for scenarios: id, last record gen, LSN, priority.
type spec struct {
	id   uint16
	gen  uint32
	lsn  uint64
	prio uint32
}

func build(t *testing.T, o simOpt, sites ...spec) *sim {
	t.Helper()
	s := newSim(t, o)
	for _, sp := range sites {
		s.add(sp.id, sp.gen, sp.lsn, sp.prio)
	}
	return s
}

// settle runs until every site is idle or won and nothing is in flight.
func (s *sim) settle(limit time.Duration) {
	s.run(limit, func() bool {
		if len(s.queue) > 0 {
			return false
		}
		for _, st := range s.sites {
			if !st.down && (st.e.InProgress() || (!st.started && st.master == 0)) {
				return false
			}
		}
		return true
	})
}

func TestSimConnectedOneWinnerMostCurrent(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		s := build(t, simOpt{seed: seed},
			spec{1, 3, 1000, 100},
			spec{2, 4, 200, 10}, // most current: newest gen, though shorter
			spec{3, 3, 5000, 100},
			spec{4, 4, 150, 100},
			spec{5, 2, 9000, 100},
		)
		s.settle(time.Minute)
		s.checkSafety()
		if w := s.winners(); !slices.Equal(w, []uint16{2}) {
			t.Fatalf("seed %d: winners %v, want exactly [2]\n%s", seed, w, s.dump())
		}
		for _, st := range s.sites {
			if st.master != 2 {
				t.Fatalf("seed %d: s%d knows master s%d", seed, st.id, st.master)
			}
		}
	}
}

func TestSimPriorityPicksAmongEquallyCurrent(t *testing.T) {
	s := build(t, simOpt{seed: 1},
		spec{1, 5, 700, 10},
		spec{2, 5, 700, 90},
		spec{3, 5, 700, 50},
		spec{4, 5, 699, 1000},
	)
	s.settle(time.Minute)
	s.checkSafety()
	if w := s.winners(); !slices.Equal(w, []uint16{2}) {
		t.Fatalf("winners %v, want [2]\n%s", w, s.dump())
	}
}

func TestSimPriorityZeroNeverWins(t *testing.T) {
	s := build(t, simOpt{seed: 2},
		spec{1, 9, 99999, 0}, // most current, not electable
		spec{2, 8, 100, 5},
		spec{3, 8, 200, 5},
		spec{4, 8, 150, 5},
	)
	s.settle(time.Minute)
	s.checkSafety()
	if w := s.winners(); !slices.Equal(w, []uint16{3}) {
		t.Fatalf("winners %v, want [3]\n%s", w, s.dump())
	}
	// With only priority-0 sites nobody ever wins.
	s = build(t, simOpt{seed: 3}, spec{1, 1, 10, 0}, spec{2, 1, 20, 0}, spec{3, 1, 5, 0})
	s.run(5*time.Minute, nil)
	if len(s.wins) != 0 {
		t.Fatalf("priority-0 group elected %v", s.winners())
	}
}

func TestSimMinorityPartitionNoWinner(t *testing.T) {
	minority := func(id uint16) bool { return id <= 2 }
	s := build(t, simOpt{seed: 4},
		spec{1, 5, 9000, 100}, // the best logs are in the minority
		spec{2, 5, 8000, 100},
		spec{3, 5, 100, 10},
		spec{4, 5, 200, 10},
		spec{5, 5, 300, 10},
	)
	s.cut = func(from, to uint16) bool { return minority(from) != minority(to) }
	s.run(5*time.Minute, nil)
	s.checkSafety()
	if w := s.winners(); !slices.Equal(w, []uint16{5}) {
		t.Fatalf("winners %v, want only the majority's best, s5\n%s", w, s.dump())
	}
	for _, id := range []uint16{1, 2} {
		if st := s.site(id); st.e.Stats().Wins != 0 || st.master != 0 || st.e.Stats().Retries == 0 {
			t.Fatalf("minority s%d: master %d stats %+v; want no master and retries", id, st.master, st.e.Stats())
		}
	}

	// The minority alone (the majority is down) never elects.
	s = build(t, simOpt{seed: 5}, spec{1, 1, 1, 1}, spec{2, 1, 1, 1}, spec{3, 1, 1, 1}, spec{4, 1, 1, 1}, spec{5, 1, 1, 1})
	for _, id := range []uint16{3, 4, 5} {
		s.site(id).down = true
	}
	s.run(10*time.Minute, nil)
	if len(s.wins) != 0 {
		t.Fatalf("a minority of 2 in 5 elected %v", s.winners())
	}
}

func TestSimRetryElectsAfterDrops(t *testing.T) {
	elected := 0
	for seed := uint64(0); seed < 10; seed++ {
		s := build(t, simOpt{seed: seed, dropRate: 1},
			spec{1, 2, 10, 1}, spec{2, 2, 20, 1}, spec{3, 2, 30, 1})
		s.run(10*time.Second, nil) // everything lost: attempts fail
		if len(s.wins) != 0 {
			t.Fatalf("seed %d: won with every message dropped: %v", seed, s.winners())
		}
		s.dropRate = 0.3 // heal partly
		s.run(10*time.Minute, func() bool { return len(s.wins) > 0 })
		s.checkSafety()
		if len(s.wins) == 0 {
			t.Fatalf("seed %d: no winner after the network healed\n%s", seed, s.dump())
		}
		if s.site(s.wins[0].site).e.Stats().Retries == 0 && s.wins[0].egen < 2 {
			t.Fatalf("seed %d: first attempt won despite total loss", seed)
		}
		elected++
	}
	if elected != 10 {
		t.Fatalf("elected %d/10", elected)
	}
}

func TestSimLeaseWaitDelaysVoting(t *testing.T) {
	s := build(t, simOpt{seed: 6}, spec{1, 1, 100, 1}, spec{2, 1, 200, 1}, spec{3, 1, 300, 1})
	s.site(2).leaseEnd = 20 * time.Second
	s.site(3).leaseEnd = 30 * time.Second
	s.settle(time.Minute)
	s.checkSafety()
	for _, m := range s.sent1 {
		if lease := s.site(m.from).leaseEnd; m.at < lease {
			t.Fatalf("s%d sent VOTE1 at %v, before its lease ends at %v", m.from, m.at, lease)
		}
	}
	if len(s.wins) != 1 || s.wins[0].at < 20*time.Second {
		t.Fatalf("wins %+v: want one, after the second lease ended", s.wins)
	}
	if s.wins[0].site != 3 {
		t.Fatalf("winner s%d, want the most current s3", s.wins[0].site)
	}
}

func TestSimConcurrentElectionsConvergeOnHigherEgen(t *testing.T) {
	s := build(t, simOpt{seed: 7}, spec{1, 1, 100, 1}, spec{2, 1, 200, 1}, spec{3, 1, 300, 1}, spec{4, 1, 50, 1})
	s.site(1).e.ObserveEgen(10) // site 1 has seen egen 10 somewhere
	s.site(3).e.ObserveEgen(3)
	s.settle(time.Minute)
	s.checkSafety()
	if len(s.wins) != 1 || s.wins[0].egen != 11 || s.wins[0].site != 3 {
		t.Fatalf("wins %+v: want s3 in egen 11\n%s", s.wins, s.dump())
	}
	for _, st := range s.sites {
		if st.e.Egen() != 11 {
			t.Fatalf("s%d ended in egen %d, want 11", st.id, st.e.Egen())
		}
	}
}

func TestSimHoldElectionSpreads(t *testing.T) {
	s := build(t, simOpt{seed: 8}, spec{1, 1, 100, 1}, spec{2, 1, 300, 1}, spec{3, 1, 200, 1})
	s.site(2).startAt = -1 // passive until it hears a VOTE1
	s.site(3).startAt = -1
	s.settle(time.Minute)
	s.checkSafety()
	if w := s.winners(); !slices.Equal(w, []uint16{2}) || s.wins[0].egen != 1 {
		t.Fatalf("wins %+v, want s2 in egen 1", s.wins)
	}
}

func TestSimTwoSite(t *testing.T) {
	for _, strict := range []bool{false, true} {
		s := build(t, simOpt{seed: 9, strict: strict}, spec{1, 1, 100, 1}, spec{2, 1, 200, 1})
		s.site(2).down = true
		s.run(2*time.Minute, nil)
		if got := len(s.wins) > 0; got == strict {
			t.Fatalf("strict=%v: survivor of a pair won=%v", strict, got)
		}
	}
}
