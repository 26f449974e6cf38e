package elect

import (
	"testing"
	"time"
)

// electionRound runs one full five-site election on e (site 1) as the
// designee: its own VOTE1, four VOTE1s, four VOTE2s, a win, then Cancel.
func electionRound(e *Election, now time.Duration, gen uint32) {
	e.Start(now, gen, 1000, 5, 0)
	egen := e.Egen()
	for s := uint16(2); s <= 5; s++ {
		e.StepVote1(now, Vote{Site: s, Egen: egen, LastGen: gen, LSN: 10, Priority: 1})
	}
	for s := uint16(2); s <= 5; s++ {
		e.StepVote2(now, s, egen)
	}
	_ = e.Outbox()
	e.Cancel()
}

// The state machine sits on the message path of every board: once warm it
// must not allocate per message or per election.
func TestNoAllocsPerElection(t *testing.T) {
	e := New(Config{Self: 1, Priority: 10, Timeout: time.Second, Seed: 1})
	electionRound(e, 0, 1)
	if _, ok := e.Won(); ok {
		t.Fatal("Cancel did not clear the win")
	}
	wins := e.Stats().Wins
	now := time.Duration(0)
	allocs := testing.AllocsPerRun(100, func() {
		now += time.Second
		electionRound(e, now, 1)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per election round, want 0", allocs)
	}
	if got := e.Stats().Wins - wins; got != 101 {
		t.Fatalf("%d wins in 101 rounds: the measured path is not a winning election", got)
	}
	buf := make([]byte, 0, VoteSize)
	v := Vote{Site: 3, Egen: 9, LastGen: 2, LSN: 77, Priority: 5}
	if a := testing.AllocsPerRun(100, func() {
		buf = AppendVote(buf[:0], v)
		if _, err := DecodeVote(buf); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("vote codec: %.1f allocations, want 0", a)
	}
}

func BenchmarkElectionRound(b *testing.B) {
	e := New(Config{Self: 1, Priority: 10, Timeout: time.Second, Seed: 1})
	b.ReportAllocs()
	now := time.Duration(0)
	for b.Loop() {
		now += time.Second
		electionRound(e, now, 1)
	}
}

func BenchmarkStepVote1(b *testing.B) {
	e := New(Config{Self: 1, Priority: 10, Timeout: time.Second, Seed: 1})
	e.Start(0, 1, 1, 16, 0)
	v := Vote{Site: 2, Egen: e.Egen(), LastGen: 1, LSN: 1, Priority: 1}
	b.ReportAllocs()
	for b.Loop() {
		e.StepVote1(0, v)
	}
}

func BenchmarkVoteCodec(b *testing.B) {
	buf := make([]byte, 0, VoteSize)
	v := Vote{Site: 3, Egen: 9, LastGen: 2, LSN: 77, Priority: 5}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendVote(buf[:0], v)
		if _, err := DecodeVote(buf); err != nil {
			b.Fatal(err)
		}
	}
}
