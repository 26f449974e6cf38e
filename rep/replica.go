package rep

import (
	"time"
)

// syncState is where a replica stands with its master.
type syncState uint8

const (
	syncNone       syncState = iota // no master known
	syncVerify                      // VERIFY_REQ sent: finding the last common commit
	syncRollback                    // rollback handed to the driver
	syncInit                        // internal init
	syncLog                         // catching up to the master's end
	syncLive                        // caught up (STARTUP_DONE sent)
	syncJoinFailed                  // needed internal init but NoAutoInit
)

// seg is a buffered out-of-order run of records.
type seg struct {
	lsn, end uint64
	data     []byte
}

type initState struct {
	begun bool
	ckpt  uint64
	count uint32
	got   []uint64 // bitset by page index
	done  int
	base  uint32 // every page below it arrived
	asked uint32 // every page below it was asked for at least once
	ask   uint32 // pages per PAGE_REQ: InitWindowPages, less after losses
	// reqs are the PAGE_REQs sent and not yet answered, oldest first. The
	// master answers in order and the backplane delivers in order, so an
	// answer to one of them settles every request before it: what those
	// did not bring was lost.
	reqs []pageRange
	// stale are the requests a retry gave up on: their answers may still
	// arrive, before any to the requests asked since (see requestMissing).
	stale     []pageRange
	finishing bool // Finish handed to the driver
	// below: every page of the snapshot numbered below it has arrived
	// (the page list ascends), what a resumed copy keeps (resumeFrom).
	below uint64
	// keepLSN, keepBelow: this copy resumes one of the snapshot at
	// checkpoint keepLSN, whose pages below keepBelow it holds; its
	// PAGE_REQs say so, and the master marks the pages it need not send.
	keepLSN, keepBelow uint64
}

// resumeFrom is a copy the master's moving checkpoint cut short: the next
// one, of the same master in the same generation, keeps its pages below
// below (see servePages).
type resumeFrom struct {
	master      uint16
	gen         uint32
	ckpt, below uint64
}

// pageRange is the page indexes [lo, hi) of one PAGE_REQ.
type pageRange struct{ lo, hi uint32 }

// lsnRange is the log [from, to) of one LOG_REQ.
type lsnRange struct{ from, to uint64 }

func (s *initState) has(i uint32) bool { return s.got[i/64]&(1<<(i%64)) != 0 }
func (s *initState) set(i uint32)      { s.got[i/64] |= 1 << (i % 64) }

// replicaState is the replica's view of its master and its log stream.
type replicaState struct {
	sync         syncState
	lastMaster   uint16 // the master before an election started
	lookingSince time.Duration
	masterHeard  time.Duration
	// idleVote: the elector holds a VOTE1 received while this replica
	// still heard its master (an election it did not join).
	idleVote   bool
	masterEnd  uint64
	masterPerm uint64
	// paced: the master's newest HEARTBEAT or LOG did not name this site
	// among those it waits for (Node.Paced).
	paced        bool
	ckptPermSeen uint64        // masterPerm when checkpointOK was last derived from it
	targetEnd    uint64        // STARTUP_DONE once the local end reaches it
	echo         time.Duration // newest master send time seen (lease grants echo it)

	// stream holds records from streamLSN (== local end) on, in order.
	stream    []byte
	streamLSN uint64
	scanOff   int // stream[:scanOff] framed
	commitOff int // stream[:commitOff] is whole transactions
	applyLen  int // stream[:applyLen] handed to the driver
	// ckptEnds are the offsets just past the checkpoint records in
	// stream[:scanOff], in order: an apply ends at the first one (see
	// takeApply).
	ckptEnds []int
	segs     []seg
	segBytes int
	want     uint64 // highest LSN known to exist at the master

	gapActive   bool
	gapNextAt   time.Duration
	gapInterval time.Duration
	// logReqs are the LOG_REQs sent and not yet answered, oldest first.
	// The master answers in order and the backplane delivers in order, so
	// an answer to one settles every request before it: what those did not
	// bring was lost (see onServed).
	logReqs []lsnRange
	// logMsg is the message size the replica asks answers in (0: the
	// master's default); halved after a loss, grown as answers arrive.
	logMsg int
	// liveEnd is the end of the newest live (multicast) LOG received.
	liveEnd uint64

	reqNextAt   time.Duration // verify/update/page retry
	reqInterval time.Duration
	// initBackoff is the wait before a copy the driver could not store
	// is begun again (InitFailed); it doubles while that repeats, since
	// the cause (no memory for the import) may last, and each attempt
	// may make the kernel reserve and release that memory.
	initBackoff time.Duration
	// initWaiting: a copy failed (InitFailed) and its back-off has not
	// run out. An UPDATE or PAGE_FAIL answering a request made before the
	// failure must not begin the next copy early.
	initWaiting bool

	points         []CommitInfo // the VERIFY_REQ points in flight, newest first
	low            CommitInfo   // newest point the master holds identically
	haveLow        bool
	highBad        uint64 // oldest point known to differ (search below it)
	rollbackTarget uint64
	init           initState
	// resume: the copy a PAGE_FAIL cut short, for the next UPDATE.
	resume    resumeFrom
	ackedSent uint64

	// Applies that failed in a row at stallEnd, the local end (log full,
	// corrupt record, no memory): see maxApplyStalls.
	stallEnd uint64
	stalls   int
}

// maxApplyStalls is how many applies in a row may fail at the same local
// end before the replica falls back to internal init. A replica whose log is
// full cannot make room on its own: its checkpoints are promoted only once
// the master's ack policy made them durable, and under ALL or ALL_PEERS that
// waits for this very replica to apply, so re-requesting the records would
// retry forever. Internal init replaces the environment with the master's
// checkpoint and restarts the log there, which the master's own log of the
// same size shows fits.
const maxApplyStalls = 3

func (rs *replicaState) reset(n *Node) {
	segs := rs.segs[:0]
	for i := range segs {
		segs[i] = seg{}
	}
	*rs = replicaState{
		lastMaster: n.master,
		stream:     rs.stream[:0],
		streamLSN:  n.st.EndLSN(),
		segs:       segs,
		logReqs:    rs.logReqs[:0],
		points:     rs.points[:0],
		ckptEnds:   rs.ckptEnds[:0],
	}
	if n.inApply() {
		// The driver may still be reading the old stream bytes.
		rs.stream = nil
	}
}

// Paced reports whether this replica may read at its own pace: its
// master runs with Config.Pace and its newest multicast did not name this
// site among those whose acks it waits for, and the replica is caught up
// with nothing missing. The driver may then leave received messages unread
// for up to its Pace and take them in one batch; everything still works if
// it does not. A replica catching up, electing or without a master is never
// paced.
func (n *Node) Paced() bool {
	rs := &n.rs
	return n.role == RoleReplica && n.master != NoMaster && rs.paced && rs.sync == syncLive && len(rs.segs) == 0 && !rs.gapActive
}

func (n *Node) inApply() bool { return n.rs.applyLen > 0 }

func (rs *replicaState) next() uint64 { return rs.streamLSN + uint64(len(rs.stream)) }

// clearStream drops buffered records and restarts the stream at end.
func (n *Node) clearStream(end uint64) {
	rs := &n.rs
	if rs.applyLen > 0 {
		rs.stream = nil
	} else {
		rs.stream = rs.stream[:0]
	}
	rs.streamLSN, rs.scanOff, rs.commitOff, rs.applyLen = end, 0, 0, 0
	rs.ckptEnds = rs.ckptEnds[:0]
	for i := range rs.segs {
		rs.segs[i] = seg{}
	}
	rs.segs, rs.segBytes = rs.segs[:0], 0
	rs.logReqs = rs.logReqs[:0]
}

// stepReplica handles a message while this site is a replica.
func stepReplica(n *Node, d *Decoded) {
	h := &d.Header
	if h.Flags&FlagMaster != 0 && !n.fromMaster(d) {
		return
	}
	switch d.Type {
	case MsgHeartbeat, MsgLog, MsgLogMore, MsgVerify, MsgVerifyFail, MsgUpdate, MsgPage, MsgPageFail:
		// Only our master's word counts for these.
		if d.From != n.master || h.Flags&FlagMaster == 0 {
			n.drop(DropUnexpected)
			return
		}
	}
	switch d.Type {
	case MsgNewMaster:
		// A re-announcement by our master changes nothing (after a join
		// failure only a new master, adopted in fromMaster, retries).
		if n.rs.sync == syncNone {
			n.beginSync()
		}
	case MsgHeartbeat:
		n.rs.masterPerm = max(n.rs.masterPerm, d.LSN)
		n.rs.paced = !d.Waits(n.cfg.Site)
		n.noteWant(h.End)
		if n.cfg.Leases {
			n.sendAck(MsgLeaseGrant, true)
		}
	case MsgLog, MsgLogMore:
		n.rs.masterPerm = max(n.rs.masterPerm, d.LSN)
		if d.To == AllSites {
			n.rs.paced = !d.Waits(n.cfg.Site)
		}
		if n.rs.sync != syncLog && n.rs.sync != syncLive {
			n.drop(DropSyncing)
			return
		}
		if !n.onLog(d) {
			// An answer that found the buffer full settles nothing: its
			// records are still missing (the gap timer asks again).
			return
		}
		if d.To != AllSites {
			n.onServed(d)
		}
	case MsgVerify:
		n.onVerify(d)
	case MsgVerifyFail:
		n.onVerifyFail(d)
	case MsgUpdate:
		n.onUpdate(d)
	case MsgPage:
		n.onPage(d)
	case MsgPageFail:
		n.onPageFail(d)
	case MsgVote1:
		if n.voteIgnored(d) {
			return
		}
		n.el.StepVote1(n.now, d.Vote)
		if n.rs.sync == syncNone || n.now-n.rs.masterHeard >= n.cfg.HeartbeatMonitor {
			// HOLDELECTION: the master is gone for us too; join.
			n.startElection()
		} else {
			n.rs.idleVote = true
		}
	case MsgVote2:
		if !n.voteIgnored(d) {
			n.el.StepVote2Vote(n.now, d.Vote)
		}
	case MsgNewClient:
		n.sendAlive(d.From)
	case MsgDupMaster:
		n.drop(DropUnexpected)
	default:
		n.drop(DropNotMaster)
	}
}

// fromMaster screens a message from a site claiming to be master. It
// adopts a newer master, tells a stale one, and reports whether the message
// should be processed further.
func (n *Node) fromMaster(d *Decoded) bool {
	h := &d.Header
	switch {
	case h.Gen < n.promised:
		// We voted in a later election: its winner, not this master.
		n.refusePromised(d.From)
		if d.From == n.master {
			n.rs.masterHeard = -n.cfg.HeartbeatMonitor // elect at the next tick
		}
		return false
	case d.From == n.master && h.Gen == n.gen:
		if n.rs.idleVote {
			// Our master is alive after that VOTE1: for us its election
			// was a false alarm, and its sender got the master's
			// re-announcement. Forget it, or an election we hold later
			// would join it and count that stale VOTE1 toward a majority:
			// we would vote (VOTE2) for a site no longer electing, and the
			// promise of that vote, above our master's gen, would make us
			// refuse and depose a healthy master (see
			// TestStaleVoteDoesNotDeposeMaster).
			n.el.Cancel()
			n.rs.idleVote = false
		}
		if n.now-n.rs.masterHeard > n.cfg.HeartbeatMonitor/2 {
			// Halfway to an election: the master's host starved it, or
			// the link lost a burst. Counted as the warning it is.
			n.counters.MasterSilences++
		}
		n.rs.masterHeard = n.now
		n.rs.masterEnd = h.End
		if h.SendTime > n.rs.echo {
			n.rs.echo = h.SendTime
		}
		return true
	case h.Gen > n.gen || (h.Gen == n.gen && n.master == NoMaster):
		n.adopt(d.From, h)
		return d.Type == MsgHeartbeat // its End is worth noting; LOG waits for sync
	case h.Gen < n.gen:
		// A stale master: tell it so it steps down and re-syncs (our
		// newer gen in the header is what makes it step down).
		n.sendRefusal(d.From)
		return false
	default:
		// Same gen, another master: the masters settle it between them.
		n.drop(DropStaleGen)
		return false
	}
}

// adopt follows a (new) master and starts synchronizing with it.
func (n *Node) adopt(from uint16, h *Header) {
	if n.role == RoleElecting {
		n.becomeRole(RoleReplica)
	}
	// Cancel also forgets votes of elections heard while idle: their egen
	// may not be above the gen adopted now.
	n.el.Cancel()
	n.master, n.gen = from, h.Gen
	n.el.ObserveEgen(h.Gen)
	n.rs.masterHeard = n.now
	n.rs.masterEnd, n.rs.targetEnd = h.End, h.End
	n.rs.echo = h.SendTime
	n.rs.masterPerm = 0
	n.rs.ckptPermSeen = 0
	n.checkpointOK = 0
	n.event(Event{Kind: EventNewMaster, Site: from, Gen: h.Gen})
	n.beginSync()
}

// beginSync verifies the local log against the master.
func (n *Node) beginSync() {
	rs := &n.rs
	n.clearStream(n.st.EndLSN())
	rs.want, rs.gapActive = 0, false
	rs.init = initState{}
	rs.haveLow, rs.highBad = false, ^uint64(0)
	pts, err := n.st.VerifyPoints(rs.highBad, maxVerifyPoints, rs.points[:0])
	if err == nil && len(pts) == 0 {
		if lc := n.st.LastCommit(); lc.LSN > 0 && n.st.EndLSN() > rs.masterEnd {
			// No commit left in the log (the state came from an
			// internal init, or a checkpoint reclaimed the log before
			// it), and the log ends past the master's: it cannot be a
			// prefix of the master's, so the newest commit must be
			// verified, or a replica inited from one master that adopts
			// another whose end is below its own keeps the first one's
			// history and never asks for anything (rep/sim seed 91086).
			// At or below the master's end, catching up from it is
			// checked by the master (it serves only from a record
			// boundary), and verifying a commit the master's log may no
			// longer hold re-inits a board inited a moment ago whenever
			// the master changes (the bench's failover rounds, other
			// settings equal: the group replaced its new master again
			// while the restarted board caught up in 18 of 24 rounds
			// with that verify, 11 and 7 without; one run each, before
			// the catch-up loop fixed in 616194d).
			pts = append(pts, lc)
		}
	}
	if err != nil || len(pts) == 0 {
		// Nothing committed locally: nothing to verify, just catch up.
		rs.points = pts[:0]
		n.startCatchUp()
		return
	}
	rs.points = pts
	rs.sync = syncVerify
	n.sendVerifyReq()
	n.armRetry(true)
}

func (n *Node) sendVerifyReq() {
	start := n.begin()
	o := &n.cur
	o.arena = append(o.arena, byte(len(n.rs.points)))
	for _, p := range n.rs.points {
		o.arena = appendPoint(o.arena, CommitPoint{LSN: p.LSN, Gen: p.Gen, Chain: p.Chain})
	}
	n.finish(n.master, MsgVerifyReq, start)
}

// armRetry schedules the next sync request retry with back-off (reset to
// the minimum after progress).
func (n *Node) armRetry(progress bool) {
	rs := &n.rs
	if progress || rs.reqInterval == 0 {
		rs.reqInterval = n.cfg.ReRequestMin
	} else {
		rs.reqInterval = min(2*rs.reqInterval, n.cfg.ReRequestMax)
	}
	rs.reqNextAt = n.now + rs.reqInterval
}

// onVerify narrows the search for the last common commit: every point newer
// than the one the master matched differs. While local commits remain
// between the match and the oldest known difference, ask about those; then
// roll back to the match.
func (n *Node) onVerify(d *Decoded) {
	rs := &n.rs
	if rs.sync != syncVerify {
		n.drop(DropUnexpected)
		return
	}
	idx := -1
	for i, p := range rs.points {
		if p.LSN == d.LSN && p.Gen == d.Gen && p.Chain == d.Chain {
			idx = i
			break
		}
	}
	if idx < 0 {
		n.drop(DropUnexpected) // an answer to an earlier round
		return
	}
	if idx > 0 {
		rs.highBad = rs.points[idx-1].LSN
	}
	rs.low, rs.haveLow = rs.points[idx], true
	n.refineVerify()
}

// refineVerify asks about the local commits strictly between the best match
// and the oldest known difference, or finishes when there are none.
func (n *Node) refineVerify() {
	rs := &n.rs
	pts, err := n.st.VerifyPoints(rs.highBad, maxVerifyPoints, rs.points[:0])
	k := 0
	for _, p := range pts {
		if p.LSN > rs.low.LSN {
			pts[k] = p
			k++
		}
	}
	rs.points = pts[:k]
	if err != nil || k == 0 {
		n.finishVerify(rs.low)
		return
	}
	n.sendVerifyReq()
	n.armRetry(true)
}

// finishVerify acts on the last common commit p: catch up from it, roll
// back to it, or init if that would go below the checkpoint.
func (n *Node) finishVerify(p CommitInfo) {
	rs := &n.rs
	end := n.st.EndLSN()
	switch {
	case p.End >= end:
		n.startCatchUp()
	case p.End < n.st.CheckpointLSN():
		n.startInit()
	default:
		rs.sync = syncRollback
		rs.rollbackTarget = p.End
		n.rollbackTo, n.hasRollback, n.rollbackOut = p.End, true, false
		n.counters.Rollbacks++
		n.event(Event{Kind: EventRollback, Site: n.master, Gen: n.gen, LSN: p.End})
	}
}

func (n *Node) onVerifyFail(d *Decoded) {
	rs := &n.rs
	switch rs.sync {
	case syncVerify:
		if len(rs.points) == 0 || d.LSN != rs.points[0].LSN {
			n.drop(DropUnexpected) // answers an earlier round
			return
		}
		if rs.haveLow {
			// Every point sent differs: search below the oldest of them.
			if len(rs.points) == 0 {
				n.finishVerify(rs.low)
				return
			}
			rs.highBad = rs.points[len(rs.points)-1].LSN
			n.refineVerify()
			return
		}
		if d.Header.Flags&FlagInitRequired != 0 || len(rs.points) == 0 {
			n.startInit()
			return
		}
		oldest := rs.points[len(rs.points)-1]
		rs.highBad = oldest.LSN
		pts, err := n.st.VerifyPoints(oldest.LSN, maxVerifyPoints, rs.points[:0])
		if err != nil || len(pts) == 0 {
			n.startInit()
			return
		}
		rs.points = pts
		n.sendVerifyReq()
		n.armRetry(true)
	case syncLog, syncLive:
		if d.LSN != 0 {
			n.drop(DropUnexpected) // a late answer to a VERIFY_REQ
			return
		}
		if d.Header.Flags&FlagInitRequired != 0 {
			n.startInit()
		} else {
			n.beginSync()
		}
	default:
		n.drop(DropUnexpected)
	}
}

// startCatchUp requests everything from the local end.
func (n *Node) startCatchUp() {
	rs := &n.rs
	rs.sync = syncLog
	n.clearStream(n.st.EndLSN())
	rs.want = max(rs.want, rs.masterEnd)
	if n.st.EndLSN() >= rs.targetEnd {
		n.goLive()
	}
	if rs.want <= rs.next() {
		return
	}
	// Losses in the answer are recovered as a gap.
	rs.gapActive = true
	rs.gapInterval = n.cfg.ReRequestMin
	rs.gapNextAt = n.now + rs.gapInterval
	n.askGaps()
}

func (n *Node) goLive() {
	if n.rs.sync == syncLive {
		return
	}
	n.rs.sync = syncLive
	n.event(Event{Kind: EventStartupDone, Site: n.master, Gen: n.gen, LSN: n.st.EndLSN()})
}

// requestLog asks for [from, to), answered in messages of rs.logMsg bytes,
// and keeps the request in rs.logReqs. While catching up, a range up to
// everything the master is known to hold is an ALL_REQ (the master serves
// up to its end then); a gap in the live stream is a LOG_REQ.
func (n *Node) requestLog(from, to uint64) {
	if n.master == NoMaster {
		return
	}
	rs := &n.rs
	n.counters.ReRequestsSent++
	rs.logReqs = append(rs.logReqs, lsnRange{from, to})
	t, wireTo := MsgLogReq, to
	if rs.sync == syncLog && to >= rs.want {
		t, wireTo = MsgAllReq, 0
	}
	start := n.begin()
	n.cur.arena = appendU64(n.cur.arena, from)
	n.cur.arena = appendU64(n.cur.arena, wireTo)
	n.cur.arena = appendU32(n.cur.arena, uint32(rs.logMsg))
	n.finish(n.master, t, start)
}

// noteWant records that the master holds records up to lsn and starts gap
// recovery if the local stream is behind.
func (n *Node) noteWant(lsn uint64) {
	rs := &n.rs
	if lsn > rs.want {
		rs.want = lsn
	}
	n.checkGap()
}

func (n *Node) checkGap() {
	rs := &n.rs
	if rs.sync != syncLog && rs.sync != syncLive {
		rs.gapActive = false
		return
	}
	next := rs.next()
	if rs.want <= next {
		rs.gapActive = false
		rs.logReqs = rs.logReqs[:0]
		return
	}
	if rs.gapActive {
		// Asked for already; answers ask for what remains (onServed),
		// the gap timer for what they do not bring.
		return
	}
	// A new gap: ask at once (reordering rarely fills it faster than a
	// round trip), then back off while no progress is made.
	rs.gapActive = true
	rs.gapInterval = n.cfg.ReRequestMin
	rs.gapNextAt = n.now + rs.gapInterval
	n.askGaps()
}

// gaps calls f for each missing range of the log below rs.want, in order:
// before the first buffered segment, between segments, and after the last
// unless that one is the newest live message: past it the records are on
// their way, and asking for them after every answer served them twice
// while the live stream kept moving the end (at 64 writers the group lost
// its master in the bench's commit section, twice in a row). Every range
// starts where records end (the stream's end or a segment's), so the
// master can serve from there.
func (n *Node) gaps(f func(from, to uint64) bool) {
	rs := &n.rs
	c := rs.next()
	for _, s := range rs.segs {
		if s.lsn > c && !f(c, s.lsn) {
			return
		}
		c = max(c, s.end)
	}
	if c < rs.want && (len(rs.segs) == 0 || c != rs.liveEnd) {
		f(c, rs.want)
	}
}

// askGaps asks for each missing range up to the first outstanding request
// within it. What lies past an outstanding request is asked for when its
// answer ends (where records end), or when the request turns out lost.
// While the buffer has no room for another message only the first range is
// asked for: answers to the others could only be dropped.
func (n *Node) askGaps() {
	rs := &n.rs
	room := n.bufferRoom()
	n.gaps(func(from, to uint64) bool {
		if !room && from != rs.next() {
			return false
		}
		end := to
		for _, r := range rs.logReqs {
			if r.to > from && r.from < end {
				if r.from <= from {
					return true
				}
				end = r.from
			}
		}
		n.requestLog(from, end)
		return true
	})
}

// missing reports whether any record in [from, to) below rs.want is still
// missing.
func (n *Node) missing(from, to uint64) bool {
	found := false
	n.gaps(func(a, b uint64) bool {
		found = a < to && b > from
		return !found && a < to
	})
	return found
}

// onServed follows a LOG or LOG_MORE sent to this replica alone: an answer
// to one of its LOG_REQs. The requests before the one it answers are
// settled: if they left records missing, their answers were lost (a
// message is lost if any of its frames is: at 1% frame loss 256 KiB, about
// 190 frames, arrive whole 15% of the time), so the replica asks for
// smaller messages, and asks again at once rather than after a retry
// interval. The answered request ends with its last message (LOG_MORE: the
// master's budget ended it). Then every missing range not asked for is
// asked for, so a catch-up goes on at once.
func (n *Node) onServed(d *Decoded) {
	rs := &n.rs
	if len(d.Data) == 0 {
		return
	}
	_, _, first := recAt(d.Data)
	end := first + uint64(len(d.Data))
	j := 0
	for j < len(rs.logReqs) && (first < rs.logReqs[j].from || first >= rs.logReqs[j].to) {
		j++
	}
	if j == len(rs.logReqs) {
		return // an answer to a request given up on
	}
	lost := false
	for _, r := range rs.logReqs[:j] {
		lost = lost || n.missing(r.from, r.to)
	}
	done := j
	if d.Type == MsgLogMore || end >= rs.logReqs[j].to {
		done++
	} else {
		rs.logReqs[j].from = end
	}
	rs.logReqs = rs.logReqs[:copy(rs.logReqs, rs.logReqs[done:])]
	full := n.serveChunk(0)
	switch {
	case lost:
		rs.logMsg = max(minServeMessage, n.logMsg()/2)
	case done > j && rs.logMsg > 0:
		// Messages grow back slower than they shrink: at a steady frame
		// loss they settle where about one in five is lost.
		if rs.logMsg += rs.logMsg / 8; rs.logMsg >= full {
			rs.logMsg = 0
		}
	}
	// An answer arrived: the next retry waits a whole interval from here.
	rs.gapInterval = n.cfg.ReRequestMin
	rs.gapNextAt = n.now + rs.gapInterval
	if rs.gapActive {
		n.askGaps()
	}
}

// logMsg is the message size the replica asks for.
func (n *Node) logMsg() int {
	if n.rs.logMsg > 0 {
		return n.rs.logMsg
	}
	return n.serveChunk(0)
}

// onLog takes records from a LOG message: in order they join the stream,
// ahead of a gap they are buffered (bounded), already applied ones are
// dropped. False if they were dropped because the buffer is full.
func (n *Node) onLog(d *Decoded) bool {
	rs := &n.rs
	recs := d.Data
	if len(recs) == 0 {
		return true
	}
	_, _, first := recAt(recs)
	end := first + uint64(len(recs))
	next := rs.next()
	if end > rs.want {
		rs.want = end
	}
	if d.To == AllSites {
		rs.liveEnd = max(rs.liveEnd, end)
	}
	switch {
	case end <= next:
		n.drop(DropDuplicate)
	case first <= next:
		if !n.appendStream(recs, first) {
			n.drop(DropMisaligned)
			return true
		}
		n.mergeSegs()
	default:
		if !n.bufferSeg(recs, first, end) {
			return false
		}
	}
	n.checkGap()
	return true
}

// appendStream appends the part of recs (starting at LSN first) at or after
// the stream end; false if no record starts exactly there.
func (n *Node) appendStream(recs []byte, first uint64) bool {
	rs := &n.rs
	next := rs.next()
	off := 0
	for first < next {
		if off >= len(recs) {
			return true
		}
		sz, _, _ := recAt(recs[off:])
		off += sz
		first += uint64(sz)
	}
	if first != next {
		return false
	}
	rs.stream = append(rs.stream, recs[off:]...)
	n.scanStream()
	return true
}

// scanStream frames newly appended stream bytes and finds the last commit.
func (n *Node) scanStream() {
	rs := &n.rs
	for rs.scanOff < len(rs.stream) {
		sz, typ, _ := recAt(rs.stream[rs.scanOff:])
		rs.scanOff += sz
		if endsUnit(typ) {
			rs.commitOff = rs.scanOff
		}
		if typ == recCheckpoint {
			rs.ckptEnds = append(rs.ckptEnds, rs.scanOff)
		}
	}
}

// bufferSeg keeps the records [first, end), which arrived past the
// stream's end, until the hole before them fills. False if the buffer had
// no room: the message is dropped (and counted).
func (n *Node) bufferSeg(recs []byte, first, end uint64) bool {
	rs := &n.rs
	i := 0
	for i < len(rs.segs) && rs.segs[i].lsn < first {
		i++
	}
	if (i < len(rs.segs) && rs.segs[i].lsn == first && end <= rs.segs[i].end) || (i > 0 && end <= rs.segs[i-1].end) {
		n.drop(DropDuplicate)
		return true
	}
	if i < len(rs.segs) && rs.segs[i].lsn == first {
		// A longer message from the same record on: it replaces the run
		// (dropping it as a duplicate lost the records past the run's end
		// until the gap was asked for).
		old := &rs.segs[i]
		if rs.segBytes-len(old.data)+len(recs) > n.bufferLimit() {
			n.drop(DropBufferFull)
			return false
		}
		rs.segBytes += len(recs) - len(old.data)
		old.data = append(old.data[:0], recs...)
		old.end = end
		return true
	}
	joins := i > 0 && rs.segs[i-1].end == first
	if rs.segBytes+len(recs) > n.bufferLimit() || (!joins && len(rs.segs) >= maxSegs) {
		n.drop(DropBufferFull)
		return false
	}
	rs.segBytes += len(recs)
	if joins {
		// Records that follow on from a buffered run join it: the live
		// stream behind a hole is one run however many messages brought
		// it. As a run each, a busy master's small live messages filled
		// the table of runs during a catch-up; every answer past the
		// first hole was then dropped and asked for again at once (the
		// bench's failover rounds: a restarted board asked two hundred
		// thousand times in a minute and never caught up).
		p := &rs.segs[i-1]
		p.data = append(p.data, recs...)
		p.end = end
		return true
	}
	data := make([]byte, len(recs))
	copy(data, recs)
	rs.segs = append(rs.segs, seg{})
	copy(rs.segs[i+1:], rs.segs[i:])
	rs.segs[i] = seg{lsn: first, end: end, data: data}
	return true
}

// bufferLimit bounds the bytes buffered ahead of the stream's end.
func (n *Node) bufferLimit() int { return bufferedMessages * n.cfg.MaxMessageBytes }

// bufferRoom reports whether an answer past the first hole could be
// buffered: a message more fits, in a run of its own if need be.
func (n *Node) bufferRoom() bool {
	rs := &n.rs
	return len(rs.segs) < maxSegs && rs.segBytes+n.logMsg() <= n.bufferLimit()
}

// mergeSegs moves buffered segments that now follow on into the stream.
func (n *Node) mergeSegs() {
	rs := &n.rs
	k := 0
	for k < len(rs.segs) && rs.segs[k].lsn <= rs.next() {
		s := rs.segs[k]
		if s.end > rs.next() {
			if !n.appendStream(s.data, s.lsn) {
				n.drop(DropMisaligned)
			}
		}
		rs.segBytes -= len(s.data)
		k++
	}
	if k > 0 {
		m := copy(rs.segs, rs.segs[k:])
		for j := m; j < len(rs.segs); j++ {
			rs.segs[j] = seg{}
		}
		rs.segs = rs.segs[:m]
	}
}

// takeApply hands out the whole transactions at the head of the stream, up
// to and including the first checkpoint record. A replica can promote a
// checkpoint only after applying its record (and learning it is durable);
// until then the previous checkpoint keeps its log from being reclaimed and
// its snapshot's pages allocated. An apply of a long catch-up (megabytes of
// small commits, many checkpoint records) kept only the last of them as a
// candidate, so nothing was promoted while such applies kept coming, and the
// replica's pool filled. Ending each apply at a checkpoint record lets the
// driver promote it before applying what follows, as the master did.
func (rs *replicaState) takeApply() []byte {
	if rs.applyLen > 0 || rs.commitOff == 0 {
		return nil
	}
	n := rs.commitOff
	if len(rs.ckptEnds) > 0 {
		n = min(n, rs.ckptEnds[0])
	}
	rs.applyLen = n
	return rs.stream[:n:n]
}

// readyReplica runs before a Ready is built.
func (n *Node) readyReplica() {
	rs := &n.rs
	if rs.applyLen == 0 && len(rs.stream) > 0 && rs.streamLSN != n.st.EndLSN() {
		// The local log moved without us (the driver rolled back or
		// applied something else): restart the stream where it is.
		n.clearStream(n.st.EndLSN())
		n.checkGap()
	}
}

// advanceReplica reconciles with what the driver did.
func (n *Node) advanceReplica(rd *Ready) {
	rs := &n.rs
	end := n.st.EndLSN()
	if rd.Init != nil && rd.Init.Finish && rs.sync == syncInit && rs.init.finishing {
		ckpt := rs.init.ckpt
		rs.init, rs.resume = initState{}, resumeFrom{}
		if n.st.CheckpointLSN() != ckpt {
			// The import failed (a page missing or corrupt, no memory):
			// start over after a back-off.
			n.counters.InitRestarts++
			n.armRetry(false)
			return
		}
		rs.initBackoff = 0
		n.event(Event{Kind: EventInitDone, Site: n.master, Gen: n.gen, LSN: end})
		n.startCatchUp()
		return
	}
	if rd.HasRollback && rs.sync == syncRollback {
		if end == rs.rollbackTarget {
			n.startCatchUp()
		} else {
			// The rollback could not be done (below the checkpoint).
			n.startInit()
		}
		return
	}
	progress := false
	if len(rd.Apply) > 0 && rs.applyLen > 0 {
		if end == rs.streamLSN+uint64(rs.applyLen) {
			k := rs.applyLen
			rs.stream = rs.stream[:copy(rs.stream, rs.stream[k:])]
			rs.streamLSN = end
			rs.scanOff -= k
			rs.commitOff -= k
			rs.applyLen = 0
			j := 0
			for _, off := range rs.ckptEnds {
				if off > k {
					rs.ckptEnds[j] = off - k
					j++
				}
			}
			rs.ckptEnds = rs.ckptEnds[:j]
			rs.stalls = 0
			progress = true
		} else {
			// Not applied (log full, corrupt record, ...): drop the stream;
			// the gap logic asks for the records again, unless this keeps
			// failing at the same place.
			n.counters.ApplyStalls++
			rs.applyLen = 0
			n.clearStream(end)
			rs.gapActive = false
			if end != rs.stallEnd {
				rs.stallEnd, rs.stalls = end, 0
			}
			rs.stalls++
			if rs.stalls >= maxApplyStalls && (rs.sync == syncLog || rs.sync == syncLive) {
				n.startInit()
				return
			}
		}
	}
	if rs.sync != syncLog && rs.sync != syncLive {
		return
	}
	if progress {
		rs.gapInterval = n.cfg.ReRequestMin
		rs.gapNextAt = n.now + rs.gapInterval
	}
	n.checkGap()
	lc := n.st.LastCommit()
	if lc.LSN > rs.ackedSent {
		n.sendAck(MsgAck, false)
	}
	switch {
	case rs.masterPerm >= lc.LSN:
		// Everything applied here is permanent at the master.
		n.checkpointOK = max(n.checkpointOK, lc.End)
	case rs.masterPerm > rs.ckptPermSeen:
		// Under a continuous stream the master's permanent LSN trails what
		// is applied here; checkpoints may still go up to the end of the
		// permanent commit, or the replica's pool fills while its
		// checkpoint waits for a quiet moment.
		rs.ckptPermSeen = rs.masterPerm
		if ci, err := n.st.CommitAt(rs.masterPerm); err == nil {
			n.checkpointOK = max(n.checkpointOK, ci.End)
		}
	}
	if rs.sync == syncLog && end >= rs.targetEnd {
		n.goLive()
	}
}

// sendAck acknowledges the last applied commit; with leases it also grants
// (or refreshes) a lease to the master, if this site may.
func (n *Node) sendAck(t MsgType, grantOnly bool) {
	rs := &n.rs
	if n.master == NoMaster || (rs.sync != syncLog && rs.sync != syncLive) {
		return
	}
	var echo time.Duration
	if n.cfg.Leases && rs.echo > 0 && (n.grantTo == n.master || n.now >= n.grantUntil) {
		echo = rs.echo
		n.grantTo = n.master
		n.grantUntil = max(n.grantUntil, n.now+n.cfg.LeaseTimeout)
	}
	if grantOnly && echo == 0 {
		return
	}
	lc := n.st.LastCommit()
	rs.ackedSent = max(rs.ackedSent, lc.LSN)
	start := n.begin()
	n.cur.arena = appendU64(n.cur.arena, lc.LSN)
	n.cur.arena = appendU64(n.cur.arena, uint64(echo))
	n.finish(n.master, t, start)
}

// --- internal init ---

func (n *Node) startInit() {
	rs := &n.rs
	n.clearStream(n.st.EndLSN())
	rs.init, rs.resume = initState{}, resumeFrom{}
	rs.stalls, rs.initWaiting = 0, false
	// The catch-up that led here asks for nothing more: its gap timer
	// would re-ask, throughout the copy, for records the master no longer
	// holds, and an answer saying so that arrived after the copy
	// finished would start a second init.
	rs.gapActive = false
	if n.cfg.NoAutoInit {
		if rs.sync != syncJoinFailed {
			rs.sync = syncJoinFailed
			n.event(Event{Kind: EventJoinFailure, Site: n.master, Gen: n.gen})
		}
		return
	}
	n.counters.Inits++
	rs.sync = syncInit
	n.sendEmpty(n.master, MsgUpdateReq)
	n.armRetry(true)
}

// InitFailed tells the node that its driver could not begin the internal
// init the last Ready asked for, or store its pages: no memory for the
// import's region, a snapshot larger than the pool, a page to keep that is
// not there. The copy ends here, rather than have the master stream every
// page for nothing before Finish fails, and a fresh one (keeping nothing)
// starts after a back-off that doubles while failures repeat. Called
// between Ready and Advance, or after Advance; a node not copying ignores
// it.
func (n *Node) InitFailed() {
	rs := &n.rs
	if n.role != RoleReplica || rs.sync != syncInit || !rs.init.begun {
		return
	}
	n.counters.InitFailures++
	rs.init, rs.resume = initState{}, resumeFrom{}
	rs.initBackoff = min(max(2*rs.initBackoff, n.cfg.ReRequestMax), maxInitBackoff*n.cfg.ReRequestMax)
	rs.reqInterval = n.cfg.ReRequestMax
	rs.reqNextAt = n.now + rs.initBackoff
	rs.initWaiting = true
}

// maxInitBackoff bounds InitFailed's back-off, in ReRequestMax: 1.28 s with
// the board's defaults. It is reset only when an init finishes, so a board
// whose inits keep failing and restarting does not wait much longer than
// that once the cause is gone.
const maxInitBackoff = 16

func (n *Node) onUpdate(d *Decoded) {
	rs := &n.rs
	if rs.sync != syncInit || rs.initWaiting || (rs.init.begun && rs.init.ckpt == d.LSN) || rs.init.finishing {
		n.drop(DropUnexpected)
		return
	}
	rs.init = initState{begun: true, ckpt: d.LSN, count: d.Count, ask: uint32(n.cfg.InitWindowPages),
		got: make([]uint64, (int(d.Count)+63)/64)}
	// A copy the master's moving checkpoint cut short resumes: only from
	// the same master in the same generation, whose page numbers and
	// transaction ids are those of the snapshot the pages came from.
	r := rs.resume
	rs.resume = resumeFrom{}
	resume := r.below != 0 && r.master == n.master && r.gen == n.gen && r.ckpt != d.LSN
	if resume {
		rs.init.keepLSN, rs.init.keepBelow = r.ckpt, r.below
		n.counters.InitResumes++
	}
	o := &n.cur
	start := len(o.arena)
	o.arena = append(o.arena, d.Data...)
	o.init = InitAction{Begin: true, Resume: resume, Meta: o.arena[start:len(o.arena):len(o.arena)], CkptLSN: d.LSN,
		PageCount: int(d.Count), PagesTotal: int(d.Count)}
	o.pages = o.pages[:0]
	o.hasInit = true
	if d.Count == 0 {
		n.finishInit()
		return
	}
	n.requestAhead()
	n.armRetry(true)
}

// initWindowsAhead is how many windows of InitWindowPages a replica keeps
// outstanding during internal init: the master reads and sends one while
// the replica applies the one before, so neither waits for a round trip
// per window. The span stays when losses make the requests smaller, so a
// lost message is nearly always followed by answers to later requests that
// reveal it (see settle), instead of by a retry interval.
const initWindowsAhead = 2

// requestAhead asks for pages not yet asked for while fewer than
// initWindowsAhead windows are outstanding, in whole requests of in.ask
// pages (the last one excepted), so a replica whose pages arrive a few at
// a time does not send a PAGE_REQ for every few pages. The bound is on
// what is outstanding, not on the distance from the first missing page: a
// page asked for again is answered after everything asked before it, and
// the requests behind it keep the master busy meanwhile.
func (n *Node) requestAhead() {
	in := &n.rs.init
	span := uint32(initWindowsAhead * n.cfg.InitWindowPages)
	out := in.outstanding()
	for in.asked < in.count && (out+in.ask <= span || in.asked+in.ask >= in.count && out < span) {
		hi := min(in.count, in.asked+in.ask)
		out += uint32(n.askRange(in.asked, hi))
		in.asked = hi
	}
}

// lateAnswer reports whether the answer [first, end) may answer a request
// a retry gave up on: it starts where one of them (or the rest of one)
// starts. Answers arrive in order, so the first that does not means every
// late answer has arrived (or was lost), and the stale requests are
// forgotten.
func (s *initState) lateAnswer(first, end uint32) bool {
	for k, r := range s.stale {
		if r.lo == first {
			if end < r.hi {
				s.stale[k].lo = end
				k--
			}
			s.stale = s.stale[:copy(s.stale, s.stale[k+1:])]
			return true
		}
	}
	s.stale = s.stale[:0]
	return false
}

// outstanding is how many pages the outstanding requests still cover.
func (s *initState) outstanding() uint32 {
	var pages uint32
	for _, r := range s.reqs {
		pages += r.hi - r.lo
	}
	return pages
}

// askRange asks for the missing pages in [lo, hi), one PAGE_REQ per run of
// missing pages of at most in.ask pages, and returns how many it asked for.
func (n *Node) askRange(lo, hi uint32) (pages uint64) {
	in := &n.rs.init
	for lo < hi {
		for lo < hi && in.has(lo) {
			lo++
		}
		end := lo
		for end < hi && end-lo < in.ask && !in.has(end) {
			end++
		}
		if lo < end {
			in.reqs = append(in.reqs, pageRange{lo, end})
			n.sendPageReq(lo, end)
			pages += uint64(end - lo)
		}
		lo = end
	}
	return pages
}

// requestMissing is the retry when no page arrived for a retry interval:
// everything outstanding is taken as lost and the missing pages are asked
// for again, in requests half as large. A PAGE message is lost if any of
// its frames is: at 5% frame loss a 256 KiB window (about 190 frames)
// almost never arrives whole, a 4 KiB page (3 frames) does 86% of the
// time, so a lossy backplane still completes the init, in smaller pieces.
// Messages that arrive whole grow the requests again (onPage), so a master
// that merely stalled costs a few smaller requests, not the rest of the
// init.
func (n *Node) requestMissing() {
	in := &n.rs.init
	if in.keepBelow != 0 && in.done == 0 {
		// No page came back for the resuming requests: a master of an
		// older build drops them as malformed. Ask for every page.
		in.keepLSN, in.keepBelow = 0, 0
	}
	in.ask = max(1, in.ask/2)
	in.stale = append(in.stale[:0], in.reqs...)
	in.reqs = in.reqs[:0]
	// The master may only have been slow: answers to the requests given
	// up on may still arrive, matching the new requests out of order (a
	// request asked again after a loss comes late in the old order, early
	// in the new), and must not make the new requests before them look
	// lost (initState.stale). On a loaded chassis that asked for the same
	// pages again and again: in 4 of 11 soak inits of ~43,000 pages at 1%
	// frame loss, 41,379 to 138,150 pages asked again (84,705 duplicate
	// answers in one) and 3.9 to 8.1 s, against about 18,000 and 1.4-2.3 s
	// in 14 of 14 with the stale requests kept apart.
	n.counters.InitPagesReasked += n.askRange(in.base, in.asked)
	n.requestAhead()
}

// settle takes the answer [first, end) off the outstanding requests and
// settles every request sent before the one it answers: the pages those
// did not bring were lost (see initState.reqs) and are asked for again, in
// requests half as large. It reports whether any were lost. An answer no
// outstanding request holds (to a request a retry gave up on) settles
// nothing.
func (n *Node) settle(first, end uint32) (lost bool) {
	in := &n.rs.init
	j := 0
	for j < len(in.reqs) && (first < in.reqs[j].lo || first >= in.reqs[j].hi) {
		j++
	}
	if j == len(in.reqs) {
		return false
	}
	settled := j
	if in.lateAnswer(first, end) {
		settled = 0 // see initState.stale; the answered request still goes
	}
	for _, r := range in.reqs[:settled] {
		for i := r.lo; i < r.hi && !lost; i++ {
			lost = !in.has(i)
		}
	}
	if lost {
		in.ask = max(1, in.ask/2)
		// Appended at the tail: the settled requests keep their indexes.
		for k := 0; k < settled; k++ {
			n.counters.InitPagesReasked += n.askRange(in.reqs[k].lo, in.reqs[k].hi)
		}
	}
	// A request larger than a message is answered in several; it stays
	// outstanding for the rest.
	if end < in.reqs[j].hi {
		in.reqs[j].lo = end
	} else {
		in.reqs = append(in.reqs[:j], in.reqs[j+1:]...)
	}
	in.reqs = in.reqs[:copy(in.reqs, in.reqs[settled:])]
	return lost
}

func (n *Node) sendPageReq(lo, hi uint32) {
	in := &n.rs.init
	start := n.begin()
	n.cur.arena = appendU64(n.cur.arena, in.ckpt)
	n.cur.arena = appendU32(n.cur.arena, lo)
	n.cur.arena = appendU32(n.cur.arena, hi-lo)
	if in.keepBelow != 0 {
		n.cur.arena = appendU64(n.cur.arena, in.keepLSN)
		n.cur.arena = appendU64(n.cur.arena, in.keepBelow)
	}
	n.finish(n.master, MsgPageReq, start)
}

func (n *Node) onPage(d *Decoded) {
	rs := &n.rs
	in := &rs.init
	if rs.sync != syncInit || !in.begun || in.finishing || d.LSN != in.ckpt {
		n.drop(DropUnexpected)
		return
	}
	// The whole message is checked before any page of it counts as
	// arrived: a page marked arrived that the driver never got would be
	// taken, in a resumed import, for the one an earlier copy stored there.
	b := d.Data
	for i := uint32(0); i < d.Count; i++ {
		pgno, data, rest := nextPage(b)
		b = rest
		idx := d.First + i
		if idx < d.First || idx >= in.count || (len(data) == 0 && pgno >= in.keepBelow) {
			// Out of the snapshot, or a page to keep that this copy
			// does not hold: none in a copy that keeps none (an answer
			// to a resuming request given up on), none at or past the
			// mark it asked with.
			n.drop(DropMalformed)
			return
		}
	}
	o := &n.cur
	b = d.Data
	added := false
	for i := uint32(0); i < d.Count; i++ {
		pgno, data, rest := nextPage(b)
		b = rest
		idx := d.First + i
		if in.has(idx) {
			continue
		}
		in.set(idx)
		in.done++
		if len(data) == 0 {
			n.counters.InitPagesKept++
		}
		start := len(o.arena)
		o.arena = append(o.arena, data...)
		o.pages = append(o.pages, InitPage{Pgno: pgno, Data: o.arena[start:len(o.arena):len(o.arena)]})
		added = true
	}
	if !added {
		n.drop(DropDuplicate)
		return
	}
	if !o.hasInit {
		o.init = InitAction{CkptLSN: in.ckpt, PageCount: int(in.count)}
		o.hasInit = true
	}
	o.init.PagesDone, o.init.PagesTotal = in.done, int(in.count)
	for in.base < in.count && in.has(in.base) {
		in.base++
	}
	if in.base > d.First {
		// Every page up to this message's last below base arrived, and
		// the list ascends: the import holds the snapshot below the
		// page after it. (Pages that arrived earlier, out of order, may
		// let base run further; the mark stays where this message
		// proves it, which is safe.)
		last := min(in.base, d.First+d.Count) - 1
		b := d.Data
		for i := d.First; ; i++ {
			pgno, _, rest := nextPage(b)
			if i == last {
				in.below = max(in.below, pgno+1)
				break
			}
			b = rest
		}
	}
	if in.done == int(in.count) {
		n.finishInit()
		return
	}
	if !n.settle(d.First, d.First+d.Count) {
		// Requests grow back after losses shrank them, slower than
		// they shrink: at a steady frame loss they settle where about
		// one message in five is lost. Growing as fast as they shrink
		// settles at one in two and sent 1.8 times the pages asked
		// again (rep tests at 5% frame loss, 600 pages, 12 seeds: 1418
		// pages against 792) and took longer (207 against 140 ms).
		in.ask = min(uint32(n.cfg.InitWindowPages), in.ask+max(1, in.ask/8))
	}
	// Progress: the next retry waits a whole interval from here, so a
	// window that takes several messages is not asked for again while it
	// still arrives.
	n.requestAhead()
	n.armRetry(true)
}

func (n *Node) finishInit() {
	o := &n.cur
	in := &n.rs.init
	if !o.hasInit {
		o.init = InitAction{CkptLSN: in.ckpt, PageCount: int(in.count)}
		o.hasInit = true
	}
	o.init.Finish = true
	o.init.PagesDone, o.init.PagesTotal = in.done, int(in.count)
	in.finishing = true
}

func (n *Node) onPageFail(d *Decoded) {
	rs := &n.rs
	if rs.sync != syncInit || rs.initWaiting || rs.init.finishing {
		n.drop(DropUnexpected)
		return
	}
	if in := rs.init; in.begun {
		// A copy cut short (the answers to its other outstanding
		// requests say the same, and restart nothing more).
		n.counters.InitRestarts++
		if in.below != 0 {
			rs.resume = resumeFrom{master: n.master, gen: n.gen, ckpt: in.ckpt, below: in.below}
		}
	}
	rs.init = initState{}
	if d.LSN != 0 {
		// The checkpoint moved: start over at once from the new one.
		n.sendEmpty(n.master, MsgUpdateReq)
		n.armRetry(true)
		return
	}
	// No snapshot yet: ask again after a back-off.
	n.armRetry(false)
}

// --- timers ---

func (n *Node) tickReplica() {
	rs := &n.rs
	// Failure detection.
	if rs.sync == syncNone {
		if n.now-rs.lookingSince >= n.cfg.HeartbeatMonitor {
			n.startElection()
			return
		}
	} else if n.now-rs.masterHeard >= n.cfg.HeartbeatMonitor {
		n.startElection()
		return
	}
	// Sync request retries.
	if n.now >= rs.reqNextAt {
		switch rs.sync {
		case syncVerify:
			n.sendVerifyReq()
			n.armRetry(false)
		case syncInit:
			if !rs.init.begun {
				rs.initWaiting = false
				n.sendEmpty(n.master, MsgUpdateReq)
			} else if !rs.init.finishing {
				n.requestMissing()
			}
			n.armRetry(false)
		}
	}
	// Gap re-requests with back-off, only while the log is the way to
	// the master's state.
	if rs.gapActive && (rs.sync == syncLog || rs.sync == syncLive) && n.now >= rs.gapNextAt {
		next := rs.next()
		if rs.want > next {
			// No answer for a retry interval: every outstanding request
			// is taken as lost (or the master is slow) and asked for
			// again. Only a second interval in a row without an answer
			// asks for smaller messages: on a loaded chassis the first
			// mostly means a slow master, and halving at once shrank
			// the answers of a catch-up into messages whose overhead
			// kept the master busier (the bench's failover rounds
			// replaced the new master again while the restarted board
			// caught up in 21 of 24 rounds, 3 with this; one run each,
			// before the catch-up loop fixed in 616194d, which likely
			// made much of that cost).
			rs.logReqs = rs.logReqs[:0]
			if rs.gapInterval > n.cfg.ReRequestMin {
				rs.logMsg = max(minServeMessage, n.logMsg()/2)
			}
			n.askGaps()
			rs.gapInterval = min(2*rs.gapInterval, n.cfg.ReRequestMax)
			rs.gapNextAt = n.now + rs.gapInterval
		} else {
			rs.gapActive = false
			rs.logReqs = rs.logReqs[:0]
		}
	}
}
