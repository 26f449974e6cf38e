package elect

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// A deterministic mini network for Election instances under virtual time.
// It plays the part of rep just enough to close the loop: it carries VOTE1
// and VOTE2 between sites, and when a site wins it announces itself
// (NEWMASTER) so the others cancel, as rep does. Every random choice comes
// from one seed, so a failing seed replays exactly.

type simKind uint8

const (
	simVote1 simKind = iota + 1
	simVote2
	simNewMaster
)

type simMsg struct {
	at       time.Duration
	seq      uint64
	from, to uint16
	kind     simKind
	vote     Vote
}

type simSite struct {
	id       uint16
	e        *Election
	lastGen  uint32
	lsn      uint64
	prio     uint32
	startAt  time.Duration // < 0: starts only when it hears an election (HOLDELECTION)
	leaseEnd time.Duration // passed to Start as leaseWaitUntil
	started  bool
	master   uint16 // learnt from NEWMASTER; 0 = none
	down     bool   // crashed: receives and sends nothing
	maxEgen  uint32 // highest egen observed, to check it never decreases
	floor    Vote   // passed to SetFloor (zero: none)
}

type winRecord struct {
	site uint16
	egen uint32
	at   time.Duration
	vote Vote
}

// simT is the part of testing.TB the sim uses, so a failing run can be
// replayed with tracing under a recorder instead of a live test.
type simT interface {
	Helper()
	Fatalf(format string, args ...any)
}

type sim struct {
	t       simT
	rng     *rand.Rand
	now     time.Duration
	seq     uint64
	sites   []*simSite
	queue   []simMsg
	timeout time.Duration
	strict  bool

	// fault knobs
	dropRate           float64
	minDelay, maxDelay time.Duration
	cut                func(from, to uint16) bool // true: messages from->to are lost

	// observations
	wins    []winRecord
	sent1   []simMsg                     // every VOTE1 handed to the network
	sent2   []simMsg                     // every VOTE2 handed to the network (incl. self votes, see drain)
	vote2s  map[uint32]map[uint16][]Vote // egen -> designee -> votes of senders whose VOTE2 was delivered
	trace   []string
	tracing bool
}

type simOpt struct {
	seed     uint64
	timeout  time.Duration
	strict   bool
	dropRate float64
	minDelay time.Duration
	maxDelay time.Duration
}

func newSim(t simT, o simOpt) *sim {
	if o.timeout == 0 {
		o.timeout = time.Second
	}
	if o.maxDelay == 0 {
		o.minDelay, o.maxDelay = time.Millisecond, 5*time.Millisecond
	}
	return &sim{
		t:        t,
		rng:      rand.New(rand.NewPCG(o.seed, o.seed^0x5eed)),
		timeout:  o.timeout,
		strict:   o.strict,
		dropRate: o.dropRate,
		minDelay: o.minDelay,
		maxDelay: o.maxDelay,
		vote2s:   map[uint32]map[uint16][]Vote{},
	}
}

// add creates site id (ids start at 1) with the given log and priority.
func (s *sim) add(id uint16, lastGen uint32, lsn uint64, prio uint32) *simSite {
	st := &simSite{
		id: id, lastGen: lastGen, lsn: lsn, prio: prio,
		e: New(Config{
			Self: id, Priority: prio, TwoSiteStrict: s.strict,
			Timeout: s.timeout, MaxBackoff: 8 * s.timeout,
			Seed: s.rng.Uint64(),
		}),
	}
	s.sites = append(s.sites, st)
	return st
}

func (s *sim) site(id uint16) *simSite {
	for _, st := range s.sites {
		if st.id == id {
			return st
		}
	}
	s.t.Fatalf("sim: no site %d", id)
	return nil
}

func (s *sim) electable() int {
	n := 0
	for _, st := range s.sites {
		if st.prio > 0 {
			n++
		}
	}
	return n
}

func (s *sim) logf(format string, args ...any) {
	if s.tracing {
		s.trace = append(s.trace, fmt.Sprintf("%6.3fs ", s.now.Seconds())+fmt.Sprintf(format, args...))
	}
}

// start starts site id's election now.
func (s *sim) start(st *simSite) {
	st.started = true
	st.e.Start(s.now, st.lastGen, st.lsn, s.electable(), st.leaseEnd)
	s.logf("s%d start egen=%d phase=%v", st.id, st.e.Egen(), st.e.Phase())
	s.drain(st)
}

func (s *sim) send(from, to uint16, kind simKind, v Vote) {
	if s.cut != nil && s.cut(from, to) {
		return
	}
	if s.dropRate > 0 && s.rng.Float64() < s.dropRate {
		return
	}
	d := s.minDelay
	if s.maxDelay > s.minDelay {
		d += time.Duration(s.rng.Int64N(int64(s.maxDelay - s.minDelay)))
	}
	s.seq++
	s.queue = append(s.queue, simMsg{at: s.now + d, seq: s.seq, from: from, to: to, kind: kind, vote: v})
}

// drain moves st's outbox onto the network and checks for a win.
func (s *sim) drain(st *simSite) {
	if g := st.e.Egen(); g < st.maxEgen {
		s.t.Fatalf("s%d: egen went back from %d to %d", st.id, st.maxEgen, g)
	} else {
		st.maxEgen = g
	}
	for _, o := range st.e.Outbox() {
		switch o.Kind {
		case KindVote1:
			if o.To != Broadcast || o.Vote.Site != st.id {
				s.t.Fatalf("s%d: VOTE1 out %+v: want broadcast of own vote", st.id, o)
			}
			s.sent1 = append(s.sent1, simMsg{at: s.now, from: st.id, to: o.To, kind: simVote1, vote: o.Vote})
			s.logf("s%d -> all VOTE1 egen=%d gen=%d lsn=%d prio=%d", st.id, o.Vote.Egen, o.Vote.LastGen, o.Vote.LSN, o.Vote.Priority)
			for _, p := range s.sites {
				if p.id != st.id {
					s.send(st.id, p.id, simVote1, o.Vote)
				}
			}
		case KindVote2:
			if o.To == Broadcast || o.To == st.id {
				s.t.Fatalf("s%d: VOTE2 out to %#x", st.id, o.To)
			}
			s.sent2 = append(s.sent2, simMsg{at: s.now, from: st.id, to: o.To, kind: simVote2, vote: o.Vote})
			s.logf("s%d -> s%d VOTE2 egen=%d", st.id, o.To, o.Vote.Egen)
			s.send(st.id, o.To, simVote2, o.Vote)
		default:
			s.t.Fatalf("s%d: unknown out kind %v", st.id, o.Kind)
		}
	}
	if egen, ok := st.e.Won(); ok && st.master != st.id {
		st.master = st.id
		s.wins = append(s.wins, winRecord{site: st.id, egen: egen, at: s.now, vote: st.e.Vote()})
		s.logf("s%d WON egen=%d", st.id, egen)
		s.recordSelfVote(st, egen)
		for _, p := range s.sites {
			if p.id != st.id {
				s.send(st.id, p.id, simNewMaster, Vote{Site: st.id, Egen: egen})
			}
		}
	}
}

// recordSelfVote adds the winner's own VOTE2 to the per-egen record.
func (s *sim) recordSelfVote(st *simSite, egen uint32) {
	m := s.vote2s[egen]
	if m == nil {
		m = map[uint16][]Vote{}
		s.vote2s[egen] = m
	}
	m[st.id] = append(m[st.id], st.e.Vote())
}

func (s *sim) deliver(m simMsg) {
	st := s.site(m.to)
	if st.down {
		return
	}
	switch m.kind {
	case simVote1:
		if st.master == st.id {
			// Phase 0: a master hearing an election re-announces itself.
			s.send(st.id, m.from, simNewMaster, Vote{Site: st.id, Egen: st.e.Egen()})
			return
		}
		if !st.e.InProgress() && st.master == 0 && !st.started {
			// HOLDELECTION: rep starts an election when it hears one.
			st.e.StepVote1(s.now, m.vote)
			s.start(st)
			return
		}
		st.e.StepVote1(s.now, m.vote)
	case simVote2:
		m2 := s.vote2s[m.vote.Egen]
		if m2 == nil {
			m2 = map[uint16][]Vote{}
			s.vote2s[m.vote.Egen] = m2
		}
		m2[m.to] = append(m2[m.to], m.vote)
		st.e.StepVote2Vote(s.now, m.vote)
	case simNewMaster:
		if st.master == st.id {
			return // a duplicate master; rep's DUPMASTER handling is not modelled
		}
		st.master = m.from
		st.e.ObserveEgen(m.vote.Egen)
		st.e.Cancel()
		s.logf("s%d accepts master s%d egen=%d", st.id, m.from, m.vote.Egen)
	}
	s.drain(st)
}

// step runs the next event; false when nothing is left before limit.
func (s *sim) step(limit time.Duration) bool {
	next := limit + 1
	kind := 0 // 1 message, 2 timer, 3 start
	var who *simSite
	qi := -1
	for i, m := range s.queue {
		if m.at < next || (m.at == next && qi >= 0 && m.seq < s.queue[qi].seq) {
			next, kind, qi = m.at, 1, i
		}
	}
	for _, st := range s.sites {
		if st.down {
			continue
		}
		if !st.started && st.startAt >= 0 && st.master == 0 && st.startAt < next {
			next, kind, who = st.startAt, 3, st
		}
		if d, ok := st.e.NextDeadline(); ok && d < next {
			next, kind, who = d, 2, st
		}
	}
	if next > limit {
		return false
	}
	if next > s.now {
		s.now = next
	}
	switch kind {
	case 1:
		m := s.queue[qi]
		s.queue = slices.Delete(s.queue, qi, qi+1)
		s.deliver(m)
	case 2:
		who.e.Tick(s.now)
		s.drain(who)
	case 3:
		s.start(who)
	}
	return true
}

// run steps until limit or until stop returns true (checked after each event).
func (s *sim) run(limit time.Duration, stop func() bool) {
	for n := 0; s.step(limit); n++ {
		if n > 5_000_000 {
			s.t.Fatalf("sim: runaway after %d events at %v", n, s.now)
		}
		if stop != nil && stop() {
			return
		}
	}
	s.now = max(s.now, limit)
}

// checkSafety asserts what must hold whatever the faults.
func (s *sim) checkSafety() {
	s.t.Helper()
	// The oracle is written out here rather than calling Quorum, so a bug
	// there cannot hide itself: a strict majority of the electable sites,
	// except that a non-strict two-site group deliberately accepts one vote
	// (and two masters when the pair is partitioned).
	need := s.electable()/2 + 1
	dualOK := s.electable() == 2 && !s.strict
	if dualOK {
		need = 1
	}
	byEgen := map[uint32]uint16{}
	for _, w := range s.wins {
		if prev, dup := byEgen[w.egen]; dup && !dualOK {
			s.t.Fatalf("two winners in egen %d: s%d and s%d\n%s", w.egen, prev, w.site, s.dump())
		}
		byEgen[w.egen] = w.site
		if s.site(w.site).prio == 0 {
			s.t.Fatalf("priority-0 site s%d won egen %d", w.site, w.egen)
		}
		// The winner's quorum: electable sites whose VOTE2 for it arrived in
		// that egen. Each chose it as the best it heard, itself included, so
		// the winner's log is at least as current as theirs.
		electable := 0
		for _, v := range s.vote2s[w.egen][w.site] {
			if v.Priority == 0 {
				continue
			}
			electable++
			if !w.vote.AtLeastAsCurrent(v) {
				s.t.Fatalf("winner s%d (%v) of egen %d got a VOTE2 from the more current %v\n%s", w.site, w.vote, w.egen, v, s.dump())
			}
		}
		if q := need; electable < q {
			s.t.Fatalf("winner s%d of egen %d had %d electable votes, quorum %d\n%s", w.site, w.egen, electable, q, s.dump())
		}
	}
	// Each site votes at most once per egen.
	type key struct {
		site uint16
		egen uint32
	}
	seen := map[key]uint16{}
	for _, m := range s.sent2 {
		k := key{m.from, m.vote.Egen}
		if prev, dup := seen[k]; dup {
			s.t.Fatalf("s%d cast two VOTE2s in egen %d (to s%d and s%d)", m.from, m.vote.Egen, prev, m.to)
		}
		seen[k] = m.to
	}
	// A site votes below its floor only in an egen every electable site
	// voted in (it cannot have heard a VOTE1 that was never sent).
	voted1 := map[key]bool{}
	for _, m := range s.sent1 {
		voted1[key{m.from, m.vote.Egen}] = true
	}
	for _, m := range s.sent2 {
		f := s.site(m.from).floor
		to := s.site(m.to)
		if (Vote{LastGen: to.lastGen, LSN: to.lsn}).AtLeastAsCurrent(f) {
			continue
		}
		for _, st := range s.sites {
			if st.prio > 0 && !voted1[key{st.id, m.vote.Egen}] {
				s.t.Fatalf("s%d (floor gen %d lsn %d) voted for s%d (gen %d lsn %d) in egen %d, in which electable s%d sent no VOTE1\n%s",
					m.from, f.LastGen, f.LSN, m.to, to.lastGen, to.lsn, m.vote.Egen, st.id, s.dump())
			}
		}
	}
}

func (s *sim) dump() string {
	var b strings.Builder
	for _, st := range s.sites {
		fmt.Fprintf(&b, "s%d prio=%d gen=%d lsn=%d phase=%v egen=%d stats=%+v\n",
			st.id, st.prio, st.lastGen, st.lsn, st.e.Phase(), st.e.Egen(), st.e.Stats())
	}
	for _, w := range s.wins {
		fmt.Fprintf(&b, "win s%d egen=%d at %v\n", w.site, w.egen, w.at)
	}
	if len(s.trace) > 0 {
		b.WriteString(strings.Join(s.trace, "\n"))
	}
	return b.String()
}

func (s *sim) winners() []uint16 {
	var w []uint16
	for _, r := range s.wins {
		w = append(w, r.site)
	}
	return w
}
