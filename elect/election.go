package elect

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults applied by New to zero or nonsensical Config durations.
const (
	DefaultTimeout = 2 * time.Second // BDB's default election timeout
	// DefaultBackoffFactor: MaxBackoff defaults to this many Timeouts.
	DefaultBackoffFactor = 8
	// MaxTally bounds the per-election vote table; votes from more distinct
	// sites than this are dropped (counted in Stats.TallyFull). A chassis
	// has tens of boards, so this is never reached by a sane group.
	MaxTally = 1024
)

// ErrBadConfig is wrapped by Config.Validate.
var ErrBadConfig = errors.New("elect: invalid configuration; fix the election settings")

// Config configures one site's election state machine.
type Config struct {
	Self          uint16
	Priority      uint32 // 0: this site votes but never becomes master
	TwoSiteStrict bool   // two electable sites need both votes (see Quorum)
	// Timeout is the first attempt's wait for VOTE1s, and again for the
	// winner after VOTE2. Each failed attempt doubles it up to MaxBackoff.
	Timeout, MaxBackoff time.Duration
	Seed                uint64 // tiebreakers and jitter; give every site its own
}

// Validate reports settings New would have to repair.
func (c Config) Validate() error {
	if c.Self == Broadcast {
		return fmt.Errorf("site id %#x is the broadcast address: %w", c.Self, ErrBadConfig)
	}
	if c.Timeout < 0 || c.MaxBackoff < 0 {
		return fmt.Errorf("negative election timeout %v or back-off %v: %w", c.Timeout, c.MaxBackoff, ErrBadConfig)
	}
	if c.MaxBackoff != 0 && c.MaxBackoff < c.Timeout {
		return fmt.Errorf("election back-off cap %v below the timeout %v: %w", c.MaxBackoff, c.Timeout, ErrBadConfig)
	}
	return nil
}

// Kind is the type of an outgoing election message.
type Kind uint8

const (
	KindVote1 Kind = 1 // broadcast ballot
	KindVote2 Kind = 2 // vote for the designee
)

func (k Kind) String() string {
	switch k {
	case KindVote1:
		return "VOTE1"
	case KindVote2:
		return "VOTE2"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Out is a message for the caller to send. Vote is always this site's own
// vote; for VOTE2 the receiver uses its Site, Egen and Priority.
type Out struct {
	To   uint16 // Broadcast for VOTE1, the designee for VOTE2
	Kind Kind
	Vote Vote
}

// Phase is where the election stands, numbered after the seeds' phases where
// one applies (phase 0, short circuit, is the caller's: a master told to
// elect re-announces itself and never calls Start; phase 1, init, happens
// inside Start).
type Phase uint8

const (
	PhaseIdle      Phase = iota // no election
	PhaseLeaseWait              // phase 2: waiting out a lease this site granted
	PhaseVote1                  // phase 3: VOTE1 sent, collecting VOTE1s
	PhaseVote2                  // phase 4: VOTE2 sent (or nobody to vote for), waiting for a winner
	PhaseWon                    // this site collected a quorum of VOTE2s
)

func (p Phase) String() string {
	switch p {
	case PhaseIdle:
		return "idle"
	case PhaseLeaseWait:
		return "lease-wait"
	case PhaseVote1:
		return "vote1"
	case PhaseVote2:
		return "vote2"
	case PhaseWon:
		return "won"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Stats are cumulative counters since New.
type Stats struct {
	Elections    uint64 // Start calls that began an election
	Attempts     uint64 // voting rounds (first round, retries and joins)
	Retries      uint64 // attempts that timed out without a winner
	Joins        uint64 // switched to a higher egen seen in a VOTE1/VOTE2
	Wins         uint64
	Cancels      uint64
	Vote1Sent    uint64
	Vote2Sent    uint64 // including the vote a designee casts for itself
	Vote1Recv    uint64
	Vote2Recv    uint64
	Vote2Short   uint64 // VOTE2 cast at the vote timeout without a quorum of VOTE1s
	Stale        uint64 // messages for an older egen, ignored
	Dropped      uint64 // malformed (own/broadcast site id, egen 0) or irrelevant now
	TallyFull    uint64 // votes dropped because MaxTally sites already voted
	StartIgnored uint64 // Start while an election was already running
	// Floored counts the times the best site heard was less current than
	// the floor (SetFloor), so no VOTE2 went out; FloorIgnored the votes
	// cast below it because every electable site had voted.
	Floored, FloorIgnored uint64
}

// tallyEntry is what one site said in the egen being tallied.
type tallyEntry struct {
	vote      Vote // valid if has1
	has1      bool // its VOTE1 arrived
	has2      bool // it cast its VOTE2 for this site
	prioKnown bool // its priority is known (from VOTE1 or a VOTE2 carrying the vote)
	prio      uint32
}

func (t *tallyEntry) electable() bool { return t.prioKnown && t.prio > 0 }

// Election is one site's election state machine. It performs no I/O, reads
// no clock and starts no goroutines: the caller feeds it the current time
// with every input, sends whatever Outbox returns, and calls Tick at
// NextDeadline (or periodically). It is not safe for concurrent use.
//
// Choices that differ from or pin down BDB's behaviour:
//   - Priority-0 sites take part: they send VOTE1 (so others know they are
//     alive) and a VOTE2 for the best electable site they heard, but only
//     electable sites count toward the "all VOTE1s arrived" test and toward
//     the winner's quorum. Counting them would let two designees each reach
//     a "majority" of a set larger than the electable group.
//   - A VOTE2 counts only if the sender's priority is known to be > 0, from
//     its VOTE1 in this egen or from StepVote2Vote. A VOTE2 whose VOTE1 was
//     lost (StepVote2 only) is held and counts once that VOTE1 arrives.
//   - A site wins only if it voted for itself (it was its own designee when
//     it cast VOTE2), like BDB's I_HAVE_WON: a site that knows of a better
//     candidate does not take over even if others, less informed, chose it.
//   - A site casts at most one VOTE2 per egen, ever; egen never decreases.
//     With the electable-only count this gives at most one winner per egen.
//   - The electable count given to Start is raised if more distinct
//     electable sites vote, which only makes the quorum stricter.
type Election struct {
	cfg Config
	rng uint64

	phase Phase
	egen  uint32 // egen of the running or last election
	seen  uint32 // highest egen observed outside our own elections
	// lastVote2 is the highest egen we cast a VOTE2 in: never vote twice.
	lastVote2 uint32

	lastGen    uint32
	lsn        uint64
	electable  int
	absent     uint16 // an electable site known not to vote, or Broadcast (see SetAbsent)
	leaseUntil time.Duration
	attempt    int // failed attempts so far in this election: back-off exponent
	deadline   time.Duration

	// floor is the least current log this site may vote for (SetFloor).
	floor Vote

	my        Vote
	voted     bool // VOTE2 cast in this egen
	votedFor  uint16
	votedSelf bool

	// tally holds votes for tallyEgen. While idle it holds votes of an
	// election we have not joined yet, so a following Start joins it.
	tallyEgen uint32
	tally     []tallyEntry

	out, spare []Out
	stats      Stats
}

// New returns an idle election for cfg. Zero or inconsistent durations are
// replaced by defaults (Timeout DefaultTimeout, MaxBackoff
// DefaultBackoffFactor*Timeout and never below Timeout); call
// Config.Validate first to reject them instead.
func New(cfg Config) *Election {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultBackoffFactor * cfg.Timeout
	}
	if cfg.MaxBackoff < cfg.Timeout {
		cfg.MaxBackoff = cfg.Timeout
	}
	return &Election{
		cfg: cfg,
		// Mix the site id in so equal seeds on different sites still
		// produce different tiebreakers.
		rng:    cfg.Seed ^ uint64(cfg.Self)<<48 ^ 0x9e3779b97f4a7c15,
		tally:  make([]tallyEntry, 0, 16),
		out:    make([]Out, 0, 4),
		spare:  make([]Out, 0, 4),
		absent: Broadcast,
	}
}

// Config returns the configuration in effect (after defaults).
func (e *Election) Config() Config { return e.cfg }

// Start begins an election (phase 1): electable is the number of sites with
// priority > 0 in the group, this one included if it is electable. If
// leaseWaitUntil is after now the site first waits until then (phase 2)
// without voting: it granted a master lease that must run out first (on a
// first start with leases configured the caller passes now+leaseTimeout).
// If a VOTE1 of a newer election arrived while idle, Start joins that
// election; otherwise it uses an egen above every egen seen so far.
// Start while an election is running is ignored (counted).
func (e *Election) Start(now time.Duration, lastGen uint32, lsn uint64, electable int, leaseWaitUntil time.Duration) {
	if e.InProgress() {
		e.stats.StartIgnored++
		return
	}
	e.stats.Elections++
	e.lastGen, e.lsn = lastGen, lsn
	if electable < 0 {
		electable = 0
	}
	if e.cfg.Priority > 0 && electable < 1 {
		electable = 1
	}
	e.electable = electable
	e.absent = Broadcast
	e.attempt = 0

	base := max(e.egen, e.seen)
	if len(e.tally) > 0 && e.tallyEgen > e.egen && e.tallyEgen >= base {
		e.egen = e.tallyEgen // join the election we heard of
	} else {
		e.egen = incEgen(base)
		e.resetTally(e.egen)
	}
	if leaseWaitUntil > now {
		e.phase = PhaseLeaseWait
		e.leaseUntil = leaseWaitUntil
		return
	}
	e.beginVoting(now)
}

// SetAbsent names an electable site the running election need not wait
// for (Broadcast: none): the master whose silence started it. The vote
// phase then stops waiting once every other electable site (and at least a
// quorum) voted, instead of waiting out the timeout for a VOTE1 that will
// not come, which would add the whole election timeout to every failover.
// Once that site's VOTE1 is in the tally it is waited for like any other:
// it came back (restarted, or a freeze ended), and voting before a slow
// site's VOTE1 arrived while others waited for it split the votes at every
// attempt (rep's simulator, seed 110122: sixteen seconds without a
// master). Quorums still count every electable site, so this changes when
// a site votes, never who can win: each voter still votes for the best
// site it heard, at least as current as itself. Start forgets it.
func (e *Election) SetAbsent(now time.Duration, site uint16) {
	e.absent = site
	e.advance(now)
	if e.phase == PhaseVote1 {
		e.checkAllVotes(now)
	}
}

// StepVote1 processes a VOTE1 from another site.
func (e *Election) StepVote1(now time.Duration, v Vote) {
	e.advance(now)
	if v.Site == e.cfg.Self || v.Site == Broadcast || v.Egen == 0 {
		e.stats.Dropped++
		return
	}
	e.stats.Vote1Recv++
	if !e.takeEgen(now, v.Egen) {
		return
	}
	if !e.record1(v) {
		return
	}
	switch e.phase {
	case PhaseVote1:
		e.checkAllVotes(now)
	case PhaseVote2:
		if !e.voted {
			// Nobody electable was heard by the vote timeout: the first
			// one that shows up still gets our vote.
			e.vote()
			return
		}
		// A held VOTE2 from this site may count now that its priority is known.
		e.checkWin()
	}
}

// StepVote2 processes a VOTE2 that site from cast for this site in egen.
// Prefer StepVote2Vote when the message carries the sender's vote: it tells
// whether the sender is electable even if its VOTE1 was lost.
func (e *Election) StepVote2(now time.Duration, from uint16, egen uint32) {
	e.step2(now, from, egen, 0, false)
}

// StepVote2Vote is StepVote2 with the sender's own vote (the Vote of the
// VOTE2 Out it sent).
func (e *Election) StepVote2Vote(now time.Duration, v Vote) {
	e.step2(now, v.Site, v.Egen, v.Priority, true)
}

func (e *Election) step2(now time.Duration, from uint16, egen uint32, prio uint32, prioKnown bool) {
	e.advance(now)
	if from == e.cfg.Self || from == Broadcast || egen == 0 {
		e.stats.Dropped++
		return
	}
	e.stats.Vote2Recv++
	if !e.takeEgen(now, egen) {
		return
	}
	t := e.entry(from)
	if t == nil {
		return
	}
	t.has2 = true
	if prioKnown && !t.prioKnown {
		t.prioKnown, t.prio = true, prio
	}
	e.checkWin()
}

// takeEgen decides whether a message for egen is tallied, joining a newer
// election when one shows up (this is how HOLDELECTION spreads). It returns
// false if the message must be ignored.
func (e *Election) takeEgen(now time.Duration, egen uint32) bool {
	switch e.phase {
	case PhaseIdle:
		// Remember votes of a newer election so that Start joins it.
		switch {
		case egen <= e.egen || egen < e.tallyEgen:
			e.stats.Stale++
			return false
		case egen > e.tallyEgen:
			e.resetTally(egen)
		}
		return true
	case PhaseWon:
		// Late votes for the election we won change nothing. We are
		// master-elect; the caller answers newer elections by
		// re-announcing itself (phase 0), so only remember the egen.
		if egen > e.seen {
			e.seen = egen
		}
		e.stats.Dropped++
		return false
	}
	if egen < e.egen {
		e.stats.Stale++
		return false
	}
	if egen > e.egen {
		e.stats.Joins++
		e.egen = egen
		e.resetTally(egen)
		if e.phase != PhaseLeaseWait {
			// Restart phase 3 in the newer egen; the caller's vote is
			// tallied right after, on top of our own.
			e.beginVoting(now)
		}
	}
	return true
}

// Tick lets timers fire: the end of a lease wait, the vote timeout, the
// attempt timeout (which starts a new attempt with a higher egen).
func (e *Election) Tick(now time.Duration) { e.advance(now) }

// NextDeadline is when Tick next has something to do, if anything.
func (e *Election) NextDeadline() (time.Duration, bool) {
	switch e.phase {
	case PhaseLeaseWait:
		return e.leaseUntil, true
	case PhaseVote1, PhaseVote2:
		return e.deadline, true
	}
	return 0, false
}

// Outbox returns the messages produced since the last call and empties it.
// The slice stays valid until the next Outbox call.
func (e *Election) Outbox() []Out {
	o := e.out
	e.out = e.spare[:0]
	e.spare = o
	return o
}

// SetFloor makes this site vote only for a designee whose log is at least
// as current as (lastGen, lsn), until changed; (0, 0) lifts it. A site
// votes for the best log heard, its own included, so every winner is at
// least as current as each of its voters: that is what puts every
// permanent write in the winner's log. A site that lost its memory has no
// log to bring, and the floor stands in for the log it lost (rep sets it
// from what the group told it as it recovered). An egen in which every
// electable site voted elects the best of them even below the floor: the
// sites holding what the floor protected are among them, or gone.
func (e *Election) SetFloor(lastGen uint32, lsn uint64) {
	e.floor = Vote{LastGen: lastGen, LSN: lsn}
}

// Won reports the egen this site won, while it stands (until Start or Cancel).
func (e *Election) Won() (egen uint32, ok bool) {
	if e.phase != PhaseWon {
		return 0, false
	}
	return e.egen, true
}

// Cancel ends the election because a master was found (or this site became
// master). Unsent messages are discarded. The egen is kept so the next
// election uses a higher one.
func (e *Election) Cancel() {
	if e.phase != PhaseIdle {
		e.stats.Cancels++
	}
	e.phase = PhaseIdle
	e.out = e.out[:0]
	e.resetTally(e.egen)
}

// InProgress reports whether an election is running (lease wait, voting or
// waiting for a winner). A won election is no longer in progress.
func (e *Election) InProgress() bool {
	return e.phase == PhaseLeaseWait || e.phase == PhaseVote1 || e.phase == PhaseVote2
}

// Egen is the egen of the running or last election.
func (e *Election) Egen() uint32 { return e.egen }

// Phase is the current phase.
func (e *Election) Phase() Phase { return e.phase }

// ObserveEgen records an egen the caller saw elsewhere (e.g. in a NEWMASTER):
// the next election this site starts uses a higher one. It does not join a
// running election; feed its VOTE1 to StepVote1 for that.
func (e *Election) ObserveEgen(egen uint32) {
	if egen > e.seen {
		e.seen = egen
	}
}

// Designee is the site this site votes for: the one its VOTE2 went to, or
// before that the best electable site heard so far in this egen.
func (e *Election) Designee() (uint16, bool) {
	if e.phase == PhaseIdle {
		return 0, false
	}
	if e.voted {
		return e.votedFor, true
	}
	d, ok := e.best()
	return d.Site, ok
}

// Vote returns this site's VOTE1 in the current egen (zero before voting).
func (e *Election) Vote() Vote { return e.my }

// Stats returns the counters.
func (e *Election) Stats() Stats { return e.stats }

// advance fires at most one timer: each transition sets its next deadline
// relative to now, so a late Tick never skips a phase's wait.
func (e *Election) advance(now time.Duration) {
	switch e.phase {
	case PhaseLeaseWait:
		if now >= e.leaseUntil {
			e.beginVoting(now)
		}
	case PhaseVote1:
		if now >= e.deadline {
			e.castVote2(now)
		}
	case PhaseVote2:
		if now >= e.deadline {
			e.stats.Retries++
			e.attempt++
			e.egen = incEgen(max(e.egen, e.seen))
			e.resetTally(e.egen)
			e.beginVoting(now)
		}
	}
}

// beginVoting is phase 3 in e.egen: broadcast our VOTE1 and tally it.
// Votes already tallied for e.egen are kept.
func (e *Election) beginVoting(now time.Duration) {
	if e.tallyEgen != e.egen {
		e.resetTally(e.egen)
	}
	e.stats.Attempts++
	e.phase = PhaseVote1
	e.voted, e.votedSelf, e.votedFor = false, false, 0
	e.my = Vote{
		Site:       e.cfg.Self,
		Egen:       e.egen,
		LastGen:    e.lastGen,
		LSN:        e.lsn,
		Priority:   e.cfg.Priority,
		Tiebreaker: uint32(e.rand() >> 32),
	}
	e.record1(e.my)
	e.out = append(e.out, Out{To: Broadcast, Kind: KindVote1, Vote: e.my})
	e.stats.Vote1Sent++
	e.deadline = now + e.attemptTimeout()
	e.checkAllVotes(now)
}

// checkAllVotes moves to phase 4 early once every expected electable site
// voted (all electable sites but an absent one that has not voted, and at
// least a quorum).
func (e *Election) checkAllVotes(now time.Duration) {
	absent := 0
	if e.absent != Broadcast && !e.hasVote1(e.absent) {
		absent = 1
	}
	if n := e.electableVotes1(); n >= 1 && n >= max(e.electable-absent, e.quorum()) {
		e.castVote2(now)
	}
}

// castVote2 is phase 4: vote for the designee, whether or not a quorum of
// VOTE1s arrived (the seeds send VOTE2 in both cases; without a quorum the
// designee simply will not collect enough VOTE2s unless others heard more).
func (e *Election) castVote2(now time.Duration) {
	e.phase = PhaseVote2
	e.deadline = now + e.attemptTimeout()
	if e.electableVotes1() < e.quorum() {
		e.stats.Vote2Short++
	}
	e.vote()
}

// vote casts this site's VOTE2 for the best electable site heard, once per
// egen, if its log is at least as current as the floor.
func (e *Election) vote() {
	d, ok := e.best()
	if !ok || e.egen <= e.lastVote2 {
		// Nobody electable heard (wait for a retry or another site's
		// election), or we already voted in this egen.
		return
	}
	if !d.AtLeastAsCurrent(e.floor) {
		if e.electableVotes1() < e.electable {
			// A later VOTE1 in this egen, or a retry, may bring a site
			// that is.
			e.stats.Floored++
			return
		}
		// Every electable site voted and none reaches the floor: the
		// best of them all is at least as current as any site holding a
		// permanent write, so the floor protects nothing left.
		e.stats.FloorIgnored++
	}
	e.lastVote2 = e.egen
	e.voted, e.votedFor = true, d.Site
	e.stats.Vote2Sent++
	if d.Site != e.cfg.Self {
		e.out = append(e.out, Out{To: d.Site, Kind: KindVote2, Vote: e.my})
		return
	}
	e.votedSelf = true
	if t := e.entry(e.cfg.Self); t != nil {
		t.has2 = true
	}
	e.checkWin()
}

func (e *Election) checkWin() {
	if e.phase != PhaseVote2 || !e.votedSelf || e.cfg.Priority == 0 {
		return
	}
	n := 0
	for i := range e.tally {
		if e.tally[i].has2 && e.tally[i].electable() {
			n++
		}
	}
	if n >= e.quorum() {
		e.phase = PhaseWon
		e.stats.Wins++
	}
}

// quorum uses the larger of the configured electable count and the number
// of distinct electable sites that actually voted.
func (e *Election) quorum() int {
	return Quorum(max(e.electable, e.electableVotes1()), e.cfg.TwoSiteStrict)
}

func (e *Election) electableVotes1() int {
	n := 0
	for i := range e.tally {
		if e.tally[i].has1 && e.tally[i].vote.Priority > 0 {
			n++
		}
	}
	return n
}

// hasVote1 reports whether site's VOTE1 is in the tally.
func (e *Election) hasVote1(site uint16) bool {
	for i := range e.tally {
		if e.tally[i].vote.Site == site {
			return e.tally[i].has1
		}
	}
	return false
}

// best is the best electable VOTE1 tallied.
func (e *Election) best() (Vote, bool) {
	var b Vote
	ok := false
	for i := range e.tally {
		t := &e.tally[i]
		if t.has1 && t.vote.Priority > 0 && (!ok || t.vote.Beats(b)) {
			b, ok = t.vote, true
		}
	}
	return b, ok
}

func (e *Election) record1(v Vote) bool {
	t := e.entry(v.Site)
	if t == nil {
		return false
	}
	// A repeated VOTE1 from a site in the same egen replaces the earlier
	// one; its log does not move during an election.
	t.vote, t.has1 = v, true
	t.prioKnown, t.prio = true, v.Priority
	return true
}

// entry finds or adds site's tally entry; nil (counted) when the table is full.
func (e *Election) entry(site uint16) *tallyEntry {
	for i := range e.tally {
		if e.tally[i].vote.Site == site {
			return &e.tally[i]
		}
	}
	if len(e.tally) >= MaxTally {
		e.stats.TallyFull++
		return nil
	}
	e.tally = append(e.tally, tallyEntry{vote: Vote{Site: site}})
	return &e.tally[len(e.tally)-1]
}

func (e *Election) resetTally(egen uint32) {
	e.tally = e.tally[:0]
	e.tallyEgen = egen
}

// attemptTimeout is Timeout doubled per failed attempt, capped at MaxBackoff,
// plus up to a quarter of that again as jitter so sites that timed out
// together do not keep colliding.
func (e *Election) attemptTimeout() time.Duration {
	d := e.cfg.Timeout
	for i := 0; i < e.attempt && d < e.cfg.MaxBackoff; i++ {
		d *= 2
	}
	if d > e.cfg.MaxBackoff {
		d = e.cfg.MaxBackoff
	}
	if j := uint64(d / 4); j > 0 {
		d += time.Duration(e.rand() % (j + 1))
	}
	return d
}

// rand is splitmix64: deterministic from Config.Seed, no shared state.
func (e *Election) rand() uint64 {
	e.rng += 0x9e3779b97f4a7c15
	z := e.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// incEgen saturates instead of wrapping: a wrapped egen would look older
// than every election and could let this site vote twice.
func incEgen(g uint32) uint32 {
	if g == math.MaxUint32 {
		return g
	}
	return g + 1
}
