package rep

import (
	"errors"
	"slices"
	"time"
)

// maxPending bounds the commits awaiting acknowledgement; beyond it the
// oldest are reported PermFailed early rather than growing without limit.
const maxPending = 1 << 16

// serveBudgetBytes bounds the log bytes one LOG_REQ/ALL_REQ is answered
// with (at least one record), in messages of at most that much. The driver
// sends a Ready's messages back to back, and meanwhile the master sends
// nothing else: on a loaded two-core chassis 1 MiB took 6-15 ms, so eight
// messages of the board's 1 MiB MaxMessageBytes silenced the master for
// several of its 10 ms heartbeat-monitor periods and the other replicas
// elected a new one while it served a restarted board. The replica asks
// again on LOG_MORE at once (before it applies what it got), so a smaller
// answer costs a round trip per request, not throughput.
const serveBudgetBytes = 256 << 10

// defaultServeMessage is the log bytes a served message carries when the
// request names no size: the whole budget in one message. Answers in
// several smaller messages let a replica see the loss of one when a later
// one arrives (Node.onServed), but on a loaded chassis they kept the master
// busier while it served a restarted board: in the bench's failover rounds
// the group replaced its new master again while the restarted board caught
// up in 7-18 of 24 rounds with 64 KiB messages and 16 with 128 KiB,
// against 1-3 with 256 KiB (one run each, 2026-12-06 02:30-02:45 UTC).
// Those runs had the catch-up loop fixed in 616194d (a full buffer of runs,
// answers asked for again and again), which likely made most of that cost:
// after the fix, no round moved the master with either size (64 KiB and
// 256 KiB, two failover sections each, 05:25 UTC, a quiet machine). The default stays until a
// busy machine says otherwise. Replicas ask for smaller messages after
// losses, down to minServeMessage.
const (
	defaultServeMessage = 256 << 10
	minServeMessage     = 4 << 10
)

// maxServeMessages bounds the messages one request is answered with: the
// last one is LOG_MORE, so the replica asks again.
const maxServeMessages = 64

// serveChunk is the most log bytes one served message carries, for a
// request that asked for messages of `asked` bytes (0: the default).
func (n *Node) serveChunk(asked uint32) int {
	c := defaultServeMessage
	if asked > 0 {
		c = max(minServeMessage, int(min(asked, serveBudgetBytes)))
	}
	return min(c, n.cfg.MaxMessageBytes-HeaderSize-8, serveBudgetBytes)
}

// serveMessages is how many messages of chunk bytes one LOG_REQ/ALL_REQ is
// answered with.
func serveMessages(chunk int) int {
	return min(maxServeMessages, max(1, serveBudgetBytes/chunk))
}

// paceSwapAfter is how many releases in a row by acks from sites the
// master does not wait for make it wait for the acker instead: one can be a
// paced site's ack overtaking a waited one's in flight, several in a row
// mean the waited site is not answering.
const paceSwapAfter = 3

// maxPagesPerRequest bounds the pages one PAGE_REQ is answered with.
const maxPagesPerRequest = 4096

// errNoRecords: the log returned nothing usable at the requested LSN (not a
// record boundary, or an empty read).
var errNoRecords = errors.New("rep: no log records at the requested LSN")

type pendingCommit struct {
	lsn, end uint64
	at       time.Duration
}

// masterState is the master's per-tenure state.
type masterState struct {
	since      time.Duration // tenure start: lease grants echoing earlier sends do not count
	shipped    uint64        // records below this LSN were multicast
	lastSend   time.Duration // last multicast: heartbeats fill the silence
	lastCommit CommitInfo
	pending    []pendingCommit
	perm       uint64 // newest permanent commit (LSN of its commit record)
	permEnd    uint64 // the log up to here is permanent: CheckpointOK
	ackBuf     []AckSite
	// lateReleases counts the releases of commits in a row that an ack
	// from a site not waited for made (repace).
	lateReleases int

	snapLSN   uint64
	snapPages []uint64 // page list of the snapshot being exported
	// listing: the driver was asked at listAskedAt for the page list of
	// the snapshot at listLSN (Ready.ListPages), for listWaiters, the
	// sites whose UPDATE_REQ waits for it.
	listing     bool
	listLSN     uint64
	listAskedAt time.Duration
	listWaiters []uint16
	// exportUntil: a replica asked for the snapshot's pages (or its
	// UPDATE) recently enough that it is likely still copying it.
	exportUntil time.Duration
	pageBuf     []byte
	// exported: the snapshots this tenure sent an UPDATE for (newest
	// at exportAt), by checkpoint LSN with their Txid, for a replica
	// that resumes a copy of one of them (see servePages).
	exported [4]exportedSnap
	exportAt int
}

type exportedSnap struct{ lsn, txid uint64 }

// exportedTxid is the Txid of the snapshot at checkpoint lsn this tenure
// exported, 0 if none is remembered.
func (ms *masterState) exportedTxid(lsn uint64) uint64 {
	for _, x := range ms.exported {
		if x.lsn == lsn && lsn != 0 {
			return x.txid
		}
	}
	return 0
}

func (ms *masterState) reset(n *Node, now time.Duration) {
	*ms = masterState{
		since:      now,
		shipped:    n.st.EndLSN(),
		lastSend:   now,
		lastCommit: n.st.LastCommit(),
		pending:    ms.pending[:0],
		ackBuf:     ms.ackBuf[:0],
		pageBuf:    ms.pageBuf,
	}
	for _, s := range n.sites {
		s.acked, s.hasLease, s.leaseEcho, s.waited = 0, false, 0, false
		s.caughtUp = !s.learned
		s.joinLSN = ms.lastCommit.LSN
	}
	if n.cfg.AckPolicy == AckNone {
		ms.perm, ms.permEnd = ms.lastCommit.LSN, ms.lastCommit.End
	}
	n.checkpointOK = ms.permEnd
	n.repace(nil, false)
}

// repace keeps the set of sites the master waits for (site.waited,
// Config.Pace): as many of the sites the ack policy counts as it needs.
// When acks from outside the set released the commits paceSwapAfter times
// in a row, a site in the set is slow or gone, so the acker, which answered
// although it reads at its own pace, takes the place of the slowest of
// them. Otherwise the set changes only as sites stop or start counting, and
// is filled with the sites that acked furthest, so that sites reading at
// their own pace do not move in and out of it with every ack (a paced site
// learns it is waited for only when it next reads).
func (n *Node) repace(acker *site, released bool) {
	if n.cfg.Pace <= 0 {
		return
	}
	ms := &n.ms
	peers, all := 0, 0
	for _, s := range n.sites {
		if s.caughtUp {
			all++
			if s.electable() {
				peers++
			}
		}
	}
	k, peersOnly := policyNeed(n.cfg.AckPolicy, n.cfg.Priority > 0, peers, all)
	counts := func(s *site) bool { return s.caughtUp && (!peersOnly || s.electable()) }
	if acker != nil && released {
		if acker.waited {
			ms.lateReleases = 0
		} else if ms.lateReleases++; ms.lateReleases >= paceSwapAfter && counts(acker) {
			acker.waited = true
			ms.lateReleases = 0
			n.counters.PaceSwaps++
		}
	}
	c := 0
	for _, s := range n.sites {
		if s.waited && !counts(s) {
			s.waited = false
		}
		if s.waited {
			c++
		}
	}
	for ; c > k; c-- {
		var slow *site
		for _, s := range n.sites {
			if s.waited && s != acker && (slow == nil || s.acked < slow.acked) {
				slow = s
			}
		}
		if slow == nil {
			break
		}
		slow.waited = false
	}
	for ; c < k; c++ {
		var best *site
		for _, s := range n.sites {
			if !s.waited && counts(s) && (best == nil || s.acked > best.acked) {
				best = s
			}
		}
		if best == nil {
			break
		}
		best.waited = true
	}
}

// beginPaced starts a message to `to`, flagged as paced if it is a
// multicast the pace goes with (appendPace).
func (n *Node) beginPaced(to uint16) int {
	if n.cfg.Pace > 0 && to == AllSites {
		return n.beginFlags(FlagPaced)
	}
	return n.begin()
}

// appendPace appends the pace of a message begun with beginPaced: the sites
// the master waits for.
func (n *Node) appendPace(to uint16) {
	if n.cfg.Pace <= 0 || to != AllSites {
		return
	}
	o := &n.cur
	at := len(o.arena)
	o.arena = append(o.arena, 0)
	c := 0
	for _, s := range n.sites {
		if s.waited {
			o.arena = appendU16(o.arena, s.id)
			c++
		}
	}
	o.arena[at] = uint8(c)
}

// stepMaster handles a message while this site is master.
func stepMaster(n *Node, d *Decoded) {
	h := &d.Header
	if h.Gen > n.gen {
		// Someone has moved on to a newer generation: this master is stale.
		n.stepDownDup(d)
		return
	}
	if h.Flags&FlagMaster != 0 || d.Type == MsgDupMaster {
		if n.resolveDup(d) {
			return
		}
	}
	s := n.siteByID(d.From)
	switch d.Type {
	case MsgNewClient, MsgMasterReq:
		n.announceMaster(d.From)
	case MsgVote1:
		// Phase 0: a site lost us; re-announce instead of electing.
		n.announceMaster(AllSites)
	case MsgLogReq, MsgAllReq:
		n.serveLog(d)
	case MsgAck, MsgLeaseGrant:
		n.onAck(d, s)
	case MsgVerifyReq:
		n.serveVerify(d)
	case MsgUpdateReq:
		n.serveUpdate(d)
	case MsgPageReq:
		n.servePages(d)
	case MsgNewMaster, MsgHeartbeat, MsgLog, MsgLogMore, MsgDupMaster:
		// Handled by resolveDup (we won): nothing more to do.
	default:
		n.drop(DropUnexpected)
	}
}

// resolveDup handles a message from another site claiming to be master (or
// telling us to step down). The lower (gen, end LSN, site) steps down; the
// winner tells the loser. It reports whether the message was consumed.
func (n *Node) resolveDup(d *Decoded) bool {
	h := &d.Header
	theirs := [3]uint64{uint64(h.Gen), h.End, uint64(d.From)}
	mine := [3]uint64{uint64(n.gen), n.st.EndLSN(), uint64(n.cfg.Site)}
	if d.Type == MsgDupMaster && h.Flags&FlagMaster == 0 {
		// A replica that voted in an election newer than our gen refuses
		// to follow us (its promise, which a refusal carries as Egen):
		// step down and hold an election, so the next master's gen covers
		// every promise. Otherwise the replica saw a newer gen, which
		// stepMaster already handled, or it refused us for a reason that
		// binds no one else: stay master.
		if h.Egen > n.gen {
			n.stepDownDup(d)
			n.startElection()
		}
		return true
	}
	if greater(theirs, mine) {
		n.stepDownDup(d)
		return true
	}
	start := n.begin()
	n.finish(d.From, MsgDupMaster, start)
	return true
}

func greater(a, b [3]uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return false
}

// stepDownDup turns a duplicate master into a replica that re-syncs with the
// winner if the message came from a master.
func (n *Node) stepDownDup(d *Decoded) {
	n.counters.DupMasters++
	n.event(Event{Kind: EventDupMaster, Site: d.From, Gen: d.Header.Gen})
	n.becomeReplica(n.now, true)
	if d.Header.Flags&FlagMaster != 0 && d.Header.Gen >= n.gen {
		n.adopt(d.From, &d.Header)
	} else {
		n.broadcast(MsgMasterReq)
	}
}

func (n *Node) announceMaster(to uint16) { n.sendEmpty(to, MsgNewMaster) }

// noteCommit records a local commit for shipping and ack tracking.
func (n *Node) noteCommit(c CommitInfo) {
	ms := &n.ms
	if c.LSN < ms.lastCommit.LSN || (c.LSN == ms.lastCommit.LSN && c.End == ms.lastCommit.End) {
		return
	}
	ms.lastCommit = c
	if n.cfg.AckPolicy == AckNone {
		ms.perm, ms.permEnd = c.LSN, c.End
		n.checkpointOK = c.End
		return
	}
	if len(ms.pending) >= maxPending {
		n.permFail(ms.pending[0].lsn)
		ms.pending = ms.pending[1:]
	}
	ms.pending = append(ms.pending, pendingCommit{lsn: c.LSN, end: c.End, at: n.now})
	n.updatePerm(nil)
}

func (n *Node) permFail(lsn uint64) {
	n.counters.PermFailed++
	n.cur.permFailed = append(n.cur.permFailed, lsn)
	n.event(Event{Kind: EventPermFailed, Site: n.cfg.Site, Gen: n.gen, LSN: lsn})
}

// updatePerm recomputes the permanent LSN and releases pending commits;
// acker is the site whose ack prompted it (nil: none).
func (n *Node) updatePerm(acker *site) {
	ms := &n.ms
	ms.ackBuf = ms.ackBuf[:0]
	for _, s := range n.sites {
		if s.caughtUp {
			ms.ackBuf = append(ms.ackBuf, AckSite{Acked: s.acked, Electable: s.electable()})
		}
	}
	p := PolicyLSN(n.cfg.AckPolicy, n.cfg.Priority > 0, ms.ackBuf, ms.lastCommit.LSN)
	if p > ms.perm {
		ms.perm = p
	}
	i := 0
	for i < len(ms.pending) && ms.pending[i].lsn <= ms.perm {
		ms.permEnd = max(ms.permEnd, ms.pending[i].end)
		i++
	}
	if i > 0 {
		ms.pending = append(ms.pending[:0], ms.pending[i:]...)
	}
	n.repace(acker, i > 0)
	if ms.perm == ms.lastCommit.LSN {
		ms.permEnd = max(ms.permEnd, ms.lastCommit.End)
	}
	n.checkpointOK = ms.permEnd
}

// tickMaster sends heartbeats and times out acknowledgements.
func (n *Node) tickMaster() {
	ms := &n.ms
	if n.now-ms.lastSend >= n.cfg.HeartbeatSend {
		n.shipLog()
		if n.now-ms.lastSend >= n.cfg.HeartbeatSend {
			start := n.beginPaced(AllSites)
			n.cur.arena = appendU64(n.cur.arena, ms.perm)
			n.appendPace(AllSites)
			n.finish(AllSites, MsgHeartbeat, start)
		}
	}
	i := 0
	for i < len(ms.pending) && n.now-ms.pending[i].at >= n.cfg.AckTimeout {
		n.permFail(ms.pending[i].lsn)
		i++
	}
	if i > 0 {
		ms.pending = append(ms.pending[:0], ms.pending[i:]...)
	}
}

// shipLog multicasts every record written since the last call: all commits
// since the last Ready travel in one LOG (group commit) unless they exceed
// MaxMessageBytes.
func (n *Node) shipLog() {
	ms := &n.ms
	end := n.st.EndLSN()
	for ms.shipped < end {
		next, err := n.appendLogMessage(AllSites, MsgLog, ms.shipped, end)
		if err != nil {
			// The log no longer holds what we meant to ship (or cannot be
			// read): replicas will find the gap and ask, or init.
			ms.shipped = end
			return
		}
		ms.shipped = next
	}
}

// appendLogMessage queues one LOG message to `to` with records from `from`
// (whole transactions unless one alone exceeds the message). It returns the
// LSN after the records sent, or why nothing could be read.
func (n *Node) appendLogMessage(to uint16, t MsgType, from, limit uint64) (uint64, error) {
	start := n.beginPaced(to)
	o := &n.cur
	o.arena = appendU64(o.arena, n.ms.perm)
	n.appendPace(to)
	body := len(o.arena)
	budget := n.cfg.MaxMessageBytes - (body - start)
	if limit > from && limit-from < uint64(budget) {
		budget = int(limit - from)
	}
	a, _, err := n.st.ReadLog(from, budget, o.arena)
	if err == nil && len(a) <= body {
		err = errNoRecords
	}
	if err == nil {
		err = checkRecords(a[body:])
	}
	if err != nil {
		o.arena = o.arena[:start]
		return 0, err
	}
	recs := a[body:]
	if _, _, l0 := recAt(recs); l0 != from {
		o.arena = a[:start]
		return 0, errNoRecords
	}
	if cut := lastCommitEnd(recs); cut > 0 {
		recs = recs[:cut]
	}
	o.arena = a[:body+len(recs)]
	n.finish(to, t, start)
	return from + uint64(len(recs)), nil
}

// lastCommitEnd returns the offset just past the last record in recs that
// ends a unit (commit or checkpoint record; 0 if none).
func lastCommitEnd(recs []byte) int {
	cut := 0
	for off := 0; off < len(recs); {
		sz, typ, _ := recAt(recs[off:])
		off += sz
		if endsUnit(typ) {
			cut = off
		}
	}
	return cut
}

// serveLog answers LOG_REQ [from, to) and ALL_REQ [from, end).
func (n *Node) serveLog(d *Decoded) {
	n.counters.ReRequestsServed++
	from, to := d.LSN, d.LSN2
	end := n.st.EndLSN()
	if to == 0 || to > end || d.Type == MsgAllReq {
		to = end
	}
	switch {
	case from > end:
		// The replica claims records we never wrote: it must re-verify.
		n.verifyFail(d.From, 0, 0)
		return
	case from == end:
		return
	}
	c := n.serveChunk(d.Count)
	budget, chunk := serveMessages(c), uint64(c)
	for sent := 0; from < to; sent++ {
		t := MsgLog
		if sent == budget-1 {
			t = MsgLogMore
		}
		next, err := n.appendLogMessage(d.From, t, from, min(to, from+chunk))
		if err != nil {
			flags := uint16(0)
			if errors.Is(err, ErrLogGone) {
				flags = FlagInitRequired
			}
			n.verifyFail(d.From, flags, 0)
			return
		}
		from = next
		if t == MsgLogMore {
			return
		}
	}
}

// onAck records a replica's acknowledgement (and lease grant).
func (n *Node) onAck(d *Decoded, s *site) {
	if d.Header.Gen != n.gen || d.Header.Master != n.cfg.Site || s == nil {
		n.drop(DropStaleGen)
		return
	}
	lsn := min(d.LSN, n.ms.lastCommit.LSN)
	if lsn > s.acked {
		s.acked = lsn
	}
	if !s.caughtUp && s.acked >= s.joinLSN {
		s.caughtUp = true
	}
	if n.cfg.Leases && d.Echo > 0 && d.Echo >= n.ms.since && d.Echo <= n.now && d.Echo >= s.leaseEcho {
		s.leaseEcho, s.hasLease = d.Echo, true
	}
	n.updatePerm(s)
}

// leaseEnd is when a grant answering a message sent at echo runs out, on
// this master's clock, allowing for the other clock running faster.
func (n *Node) leaseEnd(echo time.Duration) time.Duration {
	return echo + time.Duration(float64(n.cfg.LeaseTimeout)/n.cfg.ClockSkew)
}

// leaseExpiry returns until when this master holds grants from enough
// electable sites that, with itself, they form a majority of the electable
// sites. ok is false if it does not hold them at all, or if this site's own
// earlier grant to another master is still outstanding.
func (n *Node) leaseExpiry() (time.Duration, bool) {
	if n.role != RoleMaster {
		return 0, false
	}
	e := n.electableSites()
	need := e/2 + 1
	if n.cfg.Priority > 0 {
		need--
	}
	var buf [maxSites]uint64
	ends := buf[:0]
	for _, s := range n.sites {
		if s.electable() && s.hasLease {
			ends = append(ends, uint64(n.leaseEnd(s.leaseEcho)))
		}
	}
	var until time.Duration
	switch {
	case need <= 0:
		until = time.Duration(1<<63 - 1)
	case len(ends) < need:
		return 0, false
	default:
		until = time.Duration(kthLargest(ends, need))
	}
	if n.now < n.grantUntil {
		return 0, false
	}
	return until, true
}

// serveVerify answers VERIFY_REQ with the newest point held identically.
func (n *Node) serveVerify(d *Decoded) {
	gone := false
	for i := 0; i < d.NPoints; i++ {
		p := d.Points[i]
		ci, err := n.st.CommitAt(p.LSN)
		if err == nil && ci.Gen == p.Gen && ci.Chain == p.Chain {
			start := n.begin()
			n.cur.arena = appendPoint(n.cur.arena, p)
			n.finish(d.From, MsgVerify, start)
			return
		}
		if errors.Is(err, ErrLogGone) {
			gone = true
			break
		}
	}
	flags := uint16(0)
	if gone {
		flags = FlagInitRequired
	}
	var newest uint64
	if d.NPoints > 0 {
		newest = d.Points[0].LSN
	}
	n.verifyFail(d.From, flags, newest)
}

// verifyFail sends VERIFY_FAIL answering the VERIFY_REQ whose newest point is
// newest (0: answering a LOG_REQ/ALL_REQ).
func (n *Node) verifyFail(to uint16, flags uint16, newest uint64) {
	start := n.beginFlags(flags)
	n.cur.arena = appendU64(n.cur.arena, newest)
	n.finish(to, MsgVerifyFail, start)
}

// serveUpdate answers UPDATE_REQ from the pinned checkpoint snapshot.
func (n *Node) serveUpdate(d *Decoded) {
	n.holdExport()
	snap, err := n.st.Snapshot()
	if err != nil {
		start := n.begin()
		n.cur.arena = appendU64(n.cur.arena, 0)
		n.finish(d.From, MsgPageFail, start)
		return
	}
	if n.ms.snapPages != nil && n.ms.snapLSN == snap.LSN() {
		n.sendUpdate(d.From, snap)
		return
	}
	// The list is a walk of every tree: the driver makes it, off the
	// node (Ready.ListPages), and the answer waits for PagesListed.
	if !slices.Contains(n.ms.listWaiters, d.From) {
		n.ms.listWaiters = append(n.ms.listWaiters, d.From)
	}
	// Asked again if the driver has not answered for a while (it always
	// should; a lost report must not leave the replicas waiting for ever).
	if !n.ms.listing || n.ms.listLSN != snap.LSN() || n.now-n.ms.listAskedAt > 2*n.cfg.ReRequestMax {
		n.ms.listing, n.ms.listLSN, n.ms.listAskedAt = true, snap.LSN(), n.now
		n.cur.listPages = snap
	}
}

// sendUpdate sends UPDATE for snap, whose page list is known.
func (n *Node) sendUpdate(to uint16, snap Snapshot) {
	if n.ms.exportedTxid(snap.LSN()) == 0 {
		n.ms.exportAt = (n.ms.exportAt + 1) % len(n.ms.exported)
		n.ms.exported[n.ms.exportAt] = exportedSnap{snap.LSN(), snap.Txid()}
	}
	meta := snap.Meta()
	start := n.begin()
	o := &n.cur
	o.arena = appendU64(o.arena, snap.LSN())
	o.arena = appendU32(o.arena, uint32(len(n.ms.snapPages)))
	o.arena = appendU32(o.arena, uint32(len(meta)))
	o.arena = append(o.arena, meta...)
	n.finish(to, MsgUpdate, start)
}

// PagesListed gives the master the page list of the snapshot at lsn that
// Ready.ListPages asked for (nil: listing failed); the UPDATE_REQs that
// waited for it are answered. A list of a snapshot no longer current is
// not used: the waiters are told the checkpoint moved, and ask again.
func (n *Node) PagesListed(lsn uint64, pages []uint64) {
	if n.role != RoleMaster || !n.ms.listing || n.ms.listLSN != lsn {
		return
	}
	waiters := n.ms.listWaiters
	n.ms.listing, n.ms.listWaiters = false, waiters[:0]
	snap, err := n.st.Snapshot()
	if err == nil && pages != nil && snap.LSN() == lsn {
		n.ms.snapLSN, n.ms.snapPages = lsn, pages
		for _, w := range waiters {
			n.sendUpdate(w, snap)
		}
		return
	}
	var cur uint64
	if err == nil && pages != nil {
		cur = snap.LSN() // moved: start over from it at once
	}
	for _, w := range waiters {
		start := n.begin()
		n.cur.arena = appendU64(n.cur.arena, cur)
		n.finish(w, MsgPageFail, start)
	}
}

// holdExport keeps the checkpoint a replica is copying (Ready.HoldCheckpoint)
// for as long as it could take that replica to ask again: its retries back
// off up to ReRequestMax, and a heartbeat monitor more covers a short stall.
func (n *Node) holdExport() {
	n.ms.exportUntil = n.now + 2*n.cfg.ReRequestMax + n.cfg.HeartbeatMonitor
}

// servePages answers PAGE_REQ with as many PAGE messages as the window needs.
func (n *Node) servePages(d *Decoded) {
	n.holdExport()
	snap, err := n.st.Snapshot()
	if err != nil || snap.LSN() != d.LSN {
		var cur uint64
		if err == nil {
			cur = snap.LSN()
		}
		start := n.begin()
		n.cur.arena = appendU64(n.cur.arena, cur)
		n.finish(d.From, MsgPageFail, start)
		return
	}
	if n.ms.snapPages == nil || n.ms.snapLSN != snap.LSN() {
		// Its UPDATE came from an earlier tenure of this site, or another
		// master: start over (UPDATE_REQ) from this checkpoint.
		start := n.begin()
		n.cur.arena = appendU64(n.cur.arena, snap.LSN())
		n.finish(d.From, MsgPageFail, start)
		return
	}
	pages := n.ms.snapPages
	first := int(d.First)
	last := min(len(pages), first+int(min(d.Count, maxPagesPerRequest)))
	// A replica resuming the copy of an earlier snapshot of this tenure
	// holds every page of it below KeepBelow: the pages of this one
	// there that were written no later than that snapshot are those very
	// pages, and go as their number alone.
	var keepTxid uint64
	if d.KeepBelow != 0 && d.KeepLSN != snap.LSN() {
		keepTxid = n.ms.exportedTxid(d.KeepLSN)
	}
	o := &n.cur
	start, countAt, count := -1, 0, uint32(0)
	flush := func() {
		if start >= 0 {
			le.PutUint32(o.arena[countAt:], count)
			n.finish(d.From, MsgPage, start)
			start = -1
		}
	}
	for i := first; i < last; i++ {
		var data []byte
		kept := false
		if keepTxid != 0 && pages[i] < d.KeepBelow {
			born, err := snap.PageTxid(pages[i])
			kept = err == nil && born <= keepTxid
		}
		if !kept {
			var err error
			data, err = snap.ReadPage(pages[i], n.ms.pageBuf[:0])
			if err != nil {
				// The snapshot changed under us: the replica restarts init.
				flush()
				st := n.begin()
				n.cur.arena = appendU64(n.cur.arena, 0)
				n.finish(d.From, MsgPageFail, st)
				return
			}
			if cap(data) > cap(n.ms.pageBuf) {
				n.ms.pageBuf = data[:0]
			}
		}
		if start >= 0 && len(o.arena)-start+12+len(data) > n.cfg.MaxMessageBytes {
			flush()
		}
		if start < 0 {
			start = n.begin()
			o.arena = appendU64(o.arena, d.LSN)
			o.arena = appendU32(o.arena, uint32(i))
			countAt = len(o.arena)
			o.arena = appendU32(o.arena, 0)
			count = 0
		}
		o.arena = appendU64(o.arena, pages[i])
		o.arena = appendU32(o.arena, uint32(len(data)))
		o.arena = append(o.arena, data...)
		count++
	}
	flush()
}

// KeepAliveMonitors is how many heartbeat monitors a driver should keep
// sending KeepAlive for a node that does not run: enough to cover a thread
// descheduled on a loaded card (tens of ms at the board's 10 ms monitor),
// short enough that a wedged runtime is still replaced quickly.
const KeepAliveMonitors = 5

// KeepAlive appends to dst a HEARTBEAT the driver may send for this master
// while the node itself cannot speak: its runtime held by a thread the OS
// descheduled, or busy with a long apply. Replicas take any word from the
// master as proof that it lives, and a master that does not run for a
// heartbeat monitor is, to them, a dead one; on a loaded board the thread
// holding the node can lose its CPU for longer than that while the rest of
// the process still runs. The message proves the process runs, nothing
// more, so the driver should stop sending it once the node itself has not
// run for KeepAliveMonitors heartbeat monitors (a wedged runtime is a dead
// master).
//
// It carries this tenure's gen and flags; its end and permanent LSNs are
// those of now, which later messages only overtake (replicas keep the
// highest), and its send time is zero, so it moves no replica's lease echo:
// a lease still counts only from a heartbeat the node sent. It stays valid
// while the node is master in this gen; ok is false when it is not master.
func (n *Node) KeepAlive(dst []byte) (_ []byte, ok bool) {
	if n.role != RoleMaster {
		return dst, false
	}
	h := n.header()
	h.SendTime = 0
	dst = appendHeader(dst, &h)
	return appendU64(dst, n.ms.perm), true
}
