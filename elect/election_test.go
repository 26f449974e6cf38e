package elect

import (
	"math"
	"reflect"
	"testing"
	"time"
)

const sec = time.Second

func newTest(self uint16, prio uint32) *Election {
	return New(Config{Self: self, Priority: prio, Timeout: sec, MaxBackoff: 8 * sec, Seed: uint64(self)})
}

// mustOut drains e and checks it produced exactly want (ignoring tiebreakers).
func mustOut(t *testing.T, e *Election, want ...Out) []Out {
	t.Helper()
	got := e.Outbox()
	if len(got) != len(want) {
		t.Fatalf("outbox = %+v, want %d messages %+v", got, len(want), want)
	}
	for i := range want {
		g := got[i]
		g.Vote.Tiebreaker = 0
		if g != want[i] {
			t.Fatalf("outbox[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	return got
}

func vote1(site uint16, egen, gen uint32, lsn uint64, prio uint32) Vote {
	return Vote{Site: site, Egen: egen, LastGen: gen, LSN: lsn, Priority: prio}
}

func TestSingleElectableSiteWinsAlone(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 1, 0)
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 1, 3, 500, 10)})
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("Won() = %d, %v; want 1, true", g, ok)
	}
	if e.InProgress() || e.Phase() != PhaseWon {
		t.Fatalf("after winning: InProgress=%v phase=%v", e.InProgress(), e.Phase())
	}
	if s := e.Stats(); s.Wins != 1 || s.Attempts != 1 || s.Vote2Sent != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestVoteForBestWhenAllVoted(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 0)
	if e.Phase() != PhaseVote1 || !e.InProgress() || e.Egen() != 1 {
		t.Fatalf("after Start: phase %v egen %d", e.Phase(), e.Egen())
	}
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 1, 3, 500, 10)})
	e.StepVote1(10*time.Millisecond, vote1(2, 1, 3, 600, 1)) // more current, low priority
	if e.Phase() != PhaseVote1 {
		t.Fatalf("voted before hearing all: phase %v", e.Phase())
	}
	if d, ok := e.Designee(); !ok || d != 2 {
		t.Fatalf("Designee = %d, %v; want 2", d, ok)
	}
	e.StepVote1(20*time.Millisecond, vote1(3, 1, 2, 9000, 100)) // older gen, longer log
	if e.Phase() != PhaseVote2 {
		t.Fatalf("all 3 voted, phase %v", e.Phase())
	}
	mustOut(t, e, Out{To: 2, Kind: KindVote2, Vote: vote1(1, 1, 3, 500, 10)})
	if _, ok := e.Won(); ok {
		t.Fatal("a voter won")
	}
}

func TestDesigneeWinsWithQuorumOfVote2(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 0)
	e.Outbox()
	e.StepVote1(1, vote1(2, 1, 3, 400, 10))
	e.StepVote1(2, vote1(3, 1, 3, 400, 10))
	mustOut(t, e) // voted for itself: nothing to send
	if _, ok := e.Won(); ok {
		t.Fatal("won on its own vote with quorum 2")
	}
	e.StepVote2(3, 2, 1)
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("Won() = %d, %v after 2 of 3 votes", g, ok)
	}
	e.StepVote2(4, 3, 1) // late vote: harmless
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("late VOTE2 changed the win: %d %v", g, ok)
	}
}

// Votes of priority-0 sites are heard but do not make a quorum; a VOTE2
// whose sender's priority is unknown counts once its VOTE1 shows up.
func TestPriorityZeroVotesDoNotCount(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 0) // electable: 1, 2, 3; site 4 has priority 0
	e.Outbox()
	e.StepVote1(1, vote1(4, 1, 3, 900, 0))
	if d, _ := e.Designee(); d != 1 {
		t.Fatalf("designee %d: a priority-0 site must never be designee", d)
	}
	e.Tick(2 * sec) // vote timeout: 1 electable VOTE1 of quorum 2
	if e.Phase() != PhaseVote2 || e.Stats().Vote2Short != 1 {
		t.Fatalf("phase %v stats %+v", e.Phase(), e.Stats())
	}
	mustOut(t, e) // self vote
	e.StepVote2Vote(2*sec+1, vote1(4, 1, 3, 900, 0))
	if _, ok := e.Won(); ok {
		t.Fatal("won with a priority-0 VOTE2")
	}
	e.StepVote2(2*sec+2, 2, 1) // VOTE1 of site 2 was lost: priority unknown
	if _, ok := e.Won(); ok {
		t.Fatal("counted a VOTE2 from a site of unknown priority")
	}
	e.StepVote1(2*sec+3, vote1(2, 1, 3, 100, 5))
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("held VOTE2 not counted once its VOTE1 arrived: %d %v", g, ok)
	}

	// A VOTE2 carrying the sender's vote counts even though its VOTE1 was lost.
	e = newTest(1, 10)
	e.Start(0, 3, 500, 3, 0)
	e.Tick(2 * sec)
	e.StepVote2Vote(2*sec+1, vote1(3, 1, 3, 100, 5))
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("VOTE2 with an electable vote not counted: %d %v", g, ok)
	}
}

func TestPriorityZeroSiteNeverWins(t *testing.T) {
	e := newTest(1, 0)
	e.Start(0, 9, 1<<30, 0, 0) // the most current site, and alone
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 1, 9, 1<<30, 0)})
	for now := time.Duration(0); now < 60*sec; now += 100 * time.Millisecond {
		e.Tick(now)
		for _, o := range e.Outbox() {
			if o.Kind == KindVote2 {
				t.Fatalf("voted with nobody electable heard: %+v", o)
			}
		}
		if _, ok := e.Won(); ok {
			t.Fatal("priority-0 site won")
		}
	}
	// Once an electable site shows up it gets this site's VOTE2.
	g := e.Egen()
	e.StepVote1(61*sec, vote1(2, g, 1, 1, 1))
	mustOut(t, e, Out{To: 2, Kind: KindVote2, Vote: vote1(1, g, 9, 1<<30, 0)})
}

func TestTwoSiteGroups(t *testing.T) {
	for _, strict := range []bool{false, true} {
		e := New(Config{Self: 1, Priority: 1, TwoSiteStrict: strict, Timeout: sec})
		e.Start(0, 1, 1, 2, 0)
		e.Outbox()
		e.Tick(2 * sec) // the peer is silent: vote timeout, vote for self
		if _, won := e.Won(); won == strict {
			t.Fatalf("strict=%v: alone in a two-site group, won=%v", strict, won)
		}
	}
}

func TestRetryWithBackoff(t *testing.T) {
	e := New(Config{Self: 1, Priority: 1, Timeout: sec, MaxBackoff: 4 * sec, Seed: 7})
	e.Start(0, 1, 1, 3, 0)
	var starts []time.Duration
	var egens []uint32
	now := time.Duration(0)
	for len(starts) < 7 && now < 10*time.Minute {
		for _, o := range e.Outbox() {
			if o.Kind == KindVote1 {
				starts = append(starts, now)
				egens = append(egens, o.Vote.Egen)
			}
		}
		d, ok := e.NextDeadline()
		if !ok {
			t.Fatalf("no deadline in phase %v", e.Phase())
		}
		now = d
		e.Tick(now)
	}
	for i := 1; i < len(egens); i++ {
		if egens[i] != egens[i-1]+1 {
			t.Fatalf("egens %v: want +1 per attempt", egens)
		}
	}
	// Each attempt waits its timeout twice (VOTE1s, then the winner).
	for i := 1; i < len(starts); i++ {
		base := min(sec<<(i-1), 4*sec)
		got := starts[i] - starts[i-1]
		if got < 2*base || got > 2*base+2*base/4 {
			t.Fatalf("attempt %d lasted %v, want [%v, %v] (starts %v)", i, got, 2*base, 2*base+2*base/4, starts)
		}
	}
	if s := e.Stats(); s.Retries != uint64(len(starts)-1) || s.Wins != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestJoinHigherEgen(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 0)
	e.Outbox()
	e.Tick(2 * sec) // vote timeout: voted for itself in egen 1
	e.StepVote1(2*sec+1, vote1(2, 5, 3, 100, 1))
	if e.Egen() != 5 || e.Phase() != PhaseVote1 || e.Stats().Joins != 1 {
		t.Fatalf("after VOTE1 egen 5: egen %d phase %v stats %+v", e.Egen(), e.Phase(), e.Stats())
	}
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 5, 3, 500, 10)})
	e.StepVote1(2*sec+2, vote1(3, 4, 9, 9999, 100)) // older egen: ignored
	if e.Stats().Stale != 1 {
		t.Fatalf("stale VOTE1 not ignored: %+v", e.Stats())
	}
	if d, _ := e.Designee(); d != 1 {
		t.Fatalf("stale vote changed designee to %d", d)
	}
	// A VOTE2 for us in a newer egen joins that egen too, and counts.
	e.StepVote2Vote(2*sec+3, vote1(3, 7, 3, 10, 10))
	if e.Egen() != 7 || e.Phase() != PhaseVote1 {
		t.Fatalf("after VOTE2 egen 7: egen %d phase %v", e.Egen(), e.Phase())
	}
	e.StepVote1(2*sec+4, vote1(3, 7, 3, 10, 10))
	e.StepVote1(2*sec+5, vote1(2, 7, 3, 100, 1))
	if g, ok := e.Won(); !ok || g != 7 {
		t.Fatalf("Won() = %d, %v; want egen 7 with its own and site 3's VOTE2", g, ok)
	}
}

func TestLeaseWait(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 5*sec)
	if e.Phase() != PhaseLeaseWait || !e.InProgress() {
		t.Fatalf("phase %v", e.Phase())
	}
	if d, ok := e.NextDeadline(); !ok || d != 5*sec {
		t.Fatalf("NextDeadline = %v, %v; want the lease end", d, ok)
	}
	mustOut(t, e)
	e.StepVote1(sec, vote1(2, 4, 3, 100, 10)) // newer election: adopt its egen, still no vote
	e.StepVote2(sec, 3, 4)
	e.Tick(5*sec - 1)
	mustOut(t, e)
	if e.Egen() != 4 || e.Phase() != PhaseLeaseWait {
		t.Fatalf("egen %d phase %v", e.Egen(), e.Phase())
	}
	e.Tick(5 * sec)
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 4, 3, 500, 10)})
	e.StepVote1(5*sec+1, vote1(3, 4, 3, 10, 10))
	if g, ok := e.Won(); !ok || g != 4 {
		t.Fatalf("Won = %d, %v", g, ok)
	}
}

func TestIdleVoteIsJoinedByStart(t *testing.T) {
	e := newTest(1, 10)
	e.StepVote1(0, vote1(2, 6, 1, 1, 1))
	if e.Phase() != PhaseIdle {
		t.Fatalf("a VOTE1 started an election by itself: %v", e.Phase())
	}
	e.Start(1, 1, 1, 2, 0)
	if e.Egen() != 6 {
		t.Fatalf("Start used egen %d, want to join 6", e.Egen())
	}
	// Both voted: vote for site 1 (priority ties broken by tiebreaker/site
	// cannot beat... the logs are equal, so priority 10 beats 1).
	if d, ok := e.Designee(); !ok || d != 1 {
		t.Fatalf("Designee %d %v", d, ok)
	}
}

func TestCancelAndObserveEgen(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 1, 1, 3, 0)
	e.Cancel()
	if e.InProgress() || e.Phase() != PhaseIdle || len(e.Outbox()) != 0 {
		t.Fatalf("after Cancel: phase %v", e.Phase())
	}
	e.ObserveEgen(10)
	e.Start(sec, 1, 1, 3, 0)
	if e.Egen() != 11 {
		t.Fatalf("egen %d after observing 10", e.Egen())
	}
	e.Start(sec, 1, 1, 3, 0)
	if e.Egen() != 11 || e.Stats().StartIgnored != 1 {
		t.Fatalf("second Start: egen %d stats %+v", e.Egen(), e.Stats())
	}
	e.Cancel()
	e.Start(2*sec, 1, 1, 3, 0)
	if e.Egen() != 12 {
		t.Fatalf("egen %d, want a fresh one after Cancel", e.Egen())
	}
}

func TestMalformedInputIsDropped(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 1, 1, 3, 0)
	e.Outbox()
	e.StepVote1(1, vote1(1, 1, 9, 9, 9))         // our own, echoed
	e.StepVote1(1, vote1(Broadcast, 1, 9, 9, 9)) // impossible site
	e.StepVote1(1, vote1(2, 0, 9, 9, 9))         // egen 0
	e.StepVote2(1, 1, 1)
	e.StepVote2(1, Broadcast, 1)
	e.StepVote2(1, 2, 0)
	if s := e.Stats(); s.Dropped != 6 {
		t.Fatalf("stats %+v, want 6 dropped", s)
	}
	if d, _ := e.Designee(); d != 1 || e.Phase() != PhaseVote1 {
		t.Fatalf("malformed input changed state: designee %d phase %v", d, e.Phase())
	}
}

func TestTallyBounded(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 1, 1, 3, 0)
	for s := 2; s < MaxTally+100; s++ {
		e.StepVote1(1, vote1(uint16(s), 1, 1, 1, 0))
	}
	if st := e.Stats(); st.TallyFull == 0 || len(e.tally) > MaxTally {
		t.Fatalf("tally %d entries, stats %+v", len(e.tally), st)
	}
}

func TestDeterministic(t *testing.T) {
	run := func() []Out {
		e := New(Config{Self: 3, Priority: 5, Timeout: sec, Seed: 99})
		e.Start(0, 1, 1, 5, 0)
		var all []Out
		for now := time.Duration(0); now < 100*sec; now += 50 * time.Millisecond {
			e.Tick(now)
			all = append(all, e.Outbox()...)
		}
		return all
	}
	a, b := run(), run()
	if len(a) < 5 || !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different output:\n%v\n%v", a, b)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{Self: Broadcast}).Validate(); err == nil {
		t.Error("broadcast self accepted")
	}
	if err := (Config{Timeout: -1}).Validate(); err == nil {
		t.Error("negative timeout accepted")
	}
	if err := (Config{Timeout: 2 * sec, MaxBackoff: sec}).Validate(); err == nil {
		t.Error("cap below timeout accepted")
	}
	if err := (Config{Self: 1, Timeout: sec}).Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
	c := New(Config{Self: 1}).Config()
	if c.Timeout != DefaultTimeout || c.MaxBackoff != DefaultBackoffFactor*DefaultTimeout {
		t.Errorf("defaults: %+v", c)
	}
}

// A site that voted for a better candidate does not take over even if a
// quorum of less informed sites picked it.
func TestNoWinWithoutSelfVote(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 5, 0)
	e.Outbox()
	e.StepVote1(1, vote1(2, 1, 3, 900, 10))
	e.StepVote1(2, vote1(3, 1, 3, 100, 10))
	e.Tick(2 * sec)
	mustOut(t, e, Out{To: 2, Kind: KindVote2, Vote: vote1(1, 1, 3, 500, 10)})
	for _, s := range []uint16{3, 4, 5} {
		e.StepVote2Vote(2*sec+time.Duration(s), vote1(s, 1, 3, 100, 10))
	}
	if _, ok := e.Won(); ok {
		t.Fatal("won without being its own designee")
	}
}

// At the last egen the counter saturates; the site must still never cast a
// second VOTE2 in that egen.
func TestSaturatedEgenNeverVotesTwice(t *testing.T) {
	e := newTest(1, 10)
	e.ObserveEgen(math.MaxUint32 - 1)
	e.Start(0, 1, 1, 3, 0)
	if e.Egen() != math.MaxUint32 {
		t.Fatalf("egen %d", e.Egen())
	}
	e.StepVote1(1, vote1(2, math.MaxUint32, 9, 9, 9))
	for now := 2 * sec; now < 5*time.Minute; now += 100 * time.Millisecond {
		e.Tick(now)
		if e.Phase() == PhaseVote1 {
			e.StepVote1(now, vote1(3, math.MaxUint32, 9, 9, 9))
		}
	}
	if s := e.Stats(); e.Egen() != math.MaxUint32 || s.Vote2Sent != 1 || s.Retries == 0 {
		t.Fatalf("egen %d, stats %+v; want retries but exactly one VOTE2", e.Egen(), s)
	}
}

// The master whose silence started the election is absent: the vote phase
// ends as soon as the other electable sites voted, but never below a quorum,
// and the quorum of VOTE2s still counts every electable site.
func TestAbsentMasterIsNotWaitedFor(t *testing.T) {
	e := newTest(1, 10)
	e.Start(0, 3, 500, 3, 0)
	e.SetAbsent(0, 3)
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 1, 3, 500, 10)})
	if e.Phase() != PhaseVote1 {
		t.Fatalf("voted alone, below a quorum: phase %v", e.Phase())
	}
	e.StepVote1(time.Millisecond, vote1(2, 1, 3, 400, 10))
	if e.Phase() != PhaseVote2 {
		t.Fatalf("both live sites voted, still waiting: phase %v", e.Phase())
	}
	if _, ok := e.Won(); ok {
		t.Fatal("won on its own VOTE2: the quorum of 3 electable sites is 2")
	}
	e.StepVote2Vote(2*time.Millisecond, vote1(2, 1, 3, 400, 10))
	if g, ok := e.Won(); !ok || g != 1 {
		t.Fatalf("Won() = %d, %v after a quorum of VOTE2s", g, ok)
	}

	// Without SetAbsent the same votes wait for the third site.
	w := newTest(1, 10)
	w.Start(0, 3, 500, 3, 0)
	w.Outbox()
	w.StepVote1(time.Millisecond, vote1(2, 1, 3, 400, 10))
	if w.Phase() != PhaseVote1 {
		t.Fatalf("voted before hearing all: phase %v", w.Phase())
	}
	// The absent site votes after all (it came back): it is waited for like
	// any other, and so is every other electable site.
	b := newTest(1, 10)
	b.Start(0, 3, 500, 3, 0)
	b.SetAbsent(0, 3)
	b.Outbox()
	b.StepVote1(time.Millisecond, vote1(3, 1, 3, 400, 10))
	if b.Phase() != PhaseVote1 {
		t.Fatalf("the absent site voted, then site 2 was not waited for: phase %v", b.Phase())
	}
	b.StepVote1(2*time.Millisecond, vote1(2, 1, 3, 400, 10))
	if b.Phase() != PhaseVote2 {
		t.Fatalf("every electable site voted, still waiting: phase %v", b.Phase())
	}
	// A later Start forgets the absence.
	e.Cancel()
	e.Start(sec, 3, 500, 3, 0)
	e.StepVote1(sec+time.Millisecond, vote1(2, e.Egen(), 3, 400, 10))
	if e.Phase() != PhaseVote1 {
		t.Fatalf("absence outlived its election: phase %v", e.Phase())
	}
}

// TestFloorHoldsVoteForLessCurrentLogs: a site with a floor (one that lost
// its memory) votes for nobody less current than the floor, itself
// included, and still votes once a site at least as current votes in the
// same egen; lifting the floor restores the plain rule.
func TestFloorHoldsVoteForLessCurrentLogs(t *testing.T) {
	// Site 1, empty (no log of its own), with the floor (gen 2, end 700).
	floored := func(sites int) *Election {
		e := newTest(1, 10)
		e.SetFloor(2, 700)
		e.Start(0, 0, 0, sites, 0)
		return e
	}
	e := floored(3)
	mustOut(t, e, Out{To: Broadcast, Kind: KindVote1, Vote: vote1(1, 1, 0, 0, 10)})
	e.StepVote1(1, vote1(2, 1, 2, 650, 10)) // same gen, shorter than the floor
	e.Tick(2 * sec)                         // vote timeout: phase 4 without site 3
	if e.Phase() != PhaseVote2 {
		t.Fatalf("phase %v after the vote timeout", e.Phase())
	}
	mustOut(t, e) // no VOTE2 for site 2, nor for itself
	if s := e.Stats(); s.Floored != 1 || s.Vote2Sent != 0 {
		t.Fatalf("stats %+v; want one floored vote and none sent", s)
	}
	e.StepVote1(2*sec+1, vote1(3, 1, 2, 700, 5)) // exactly at the floor
	mustOut(t, e, Out{To: 3, Kind: KindVote2, Vote: vote1(1, 1, 0, 0, 10)})

	// A newer gen beats a longer log of an older one, as in Beats.
	f := floored(2)
	f.Outbox()
	f.StepVote1(1, vote1(2, 1, 3, 10, 10))
	mustOut(t, f, Out{To: 2, Kind: KindVote2, Vote: vote1(1, 1, 0, 0, 10)})

	// Every electable site voted below the floor: whoever held the floor's
	// log is among them or gone, and the best of them gets the vote.
	h := floored(3)
	h.Outbox()
	h.StepVote1(1, vote1(2, 1, 2, 650, 10))
	h.StepVote1(2, vote1(3, 1, 1, 9000, 10))
	mustOut(t, h, Out{To: 2, Kind: KindVote2, Vote: vote1(1, 1, 0, 0, 10)})
	if s := h.Stats(); s.FloorIgnored != 1 || s.Floored != 0 {
		t.Fatalf("stats %+v; want the floor ignored once", s)
	}

	// Lifted: the best heard gets the vote whatever its log.
	g := newTest(1, 10)
	g.SetFloor(2, 700)
	g.SetFloor(0, 0)
	g.Start(0, 0, 0, 2, 0)
	g.Outbox()
	g.StepVote1(1, vote1(2, 1, 1, 10, 10))
	mustOut(t, g, Out{To: 2, Kind: KindVote2, Vote: vote1(1, 1, 0, 0, 10)})
}
