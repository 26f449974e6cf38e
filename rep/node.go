package rep

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/seed61e250c8/boardha/elect"
)

// site is what this node knows about another member of the group.
type site struct {
	id        uint16
	priority  uint32
	prioKnown bool // configured peers are assumed electable until they say otherwise
	learned   bool // from an announcement rather than Config.Peers
	caughtUp  bool // master: counts toward ack quorums
	joinLSN   uint64
	acked     uint64 // master: highest commit applied there in this tenure
	waited    bool   // master: among the sites whose acks it waits for (Config.Pace)
	heard     bool
	lastHeard time.Duration
	leaseEcho time.Duration // master: send time of the message its last grant answered
	hasLease  bool
	// recovery (an empty site after start), from the site's last ALIVE:
	// answered since start; blank (see noteRecovery); the newest point that
	// may hold permanent writes (see recoveryPoint)
	recHeard, recBlank bool
	recPoint           logPoint
}

// logPoint is a position in the vote order: a log's last record's gen, then
// its end.
type logPoint struct {
	gen uint32
	end uint64
}

func (p logPoint) less(o logPoint) bool {
	if p.gen != o.gen {
		return p.gen < o.gen
	}
	return p.end < o.end
}

func (s *site) electable() bool { return !s.prioKnown || s.priority > 0 }

// outBufs are the buffers one Ready hands out. Two sets alternate so that
// steady-state operation allocates nothing: the driver owns one set between
// Ready and Advance while the node fills the other.
type outBufs struct {
	msgs       []Message
	arena      []byte
	events     []Event
	app        []Message
	permFailed []uint64
	pages      []InitPage
	init       InitAction
	hasInit    bool
	listPages  Snapshot
}

func (o *outBufs) reset() {
	o.msgs = o.msgs[:0]
	o.arena = o.arena[:0]
	o.events = o.events[:0]
	o.app = o.app[:0]
	o.permFailed = o.permFailed[:0]
	o.pages = o.pages[:0]
	o.init = InitAction{}
	o.hasInit = false
	o.listPages = nil
}

// Node is one site's replication state machine. It does no I/O, reads no
// clock and starts no goroutines: the driver feeds it messages (Step), time
// (Tick) and local commits (Committed), performs what Ready returns, and
// confirms with Advance. It is not safe for concurrent use.
type Node struct {
	cfg     Config
	st      Storage
	started bool
	now     time.Duration

	role   Role
	step   func(n *Node, d *Decoded)
	gen    uint32
	master uint16
	el     elector
	// electAbsent is the electable site the running election need not
	// wait for unless it votes (elect.Broadcast: none): the master whose
	// silence started it (see elect.Election.SetAbsent).
	electAbsent uint16
	sites       []*site // sorted by id

	cur, flight, spare outBufs
	rollbackTo         uint64
	hasRollback        bool
	rollbackOut        bool // the pending rollback was handed out in a Ready
	newGen             uint32
	newGenOut          bool
	checkpointOK       uint64
	lastPerm           uint64 // PermLSN and CheckpointOK of the last Ready
	lastCkptOK         uint64

	ms masterState
	rs replicaState

	// Lease state shared by both roles: the promise this site made as a
	// replica outlives a role change and must be waited out before voting,
	// granting elsewhere, or claiming leases as a new master.
	grantTo    uint16
	grantUntil time.Duration

	// promised is the highest egen this site cast a VOTE2 in. Like a Paxos
	// acceptor's promise: it then follows no master of a lower gen, or a
	// master elected earlier could make commits permanent with acks from
	// sites whose votes already elected its successor.
	promised uint32

	// recovering: this site started with an empty environment (it may
	// have lost its memory, and with it the promise and log it acked). Until
	// it has heard from enough electable sites to know the group's newest
	// gen and egen (recoveryDone) it neither follows a master, nor acks,
	// nor votes: otherwise its acks could make a stale master's writes
	// Perm although a newer master, elected with its own lost vote, exists.
	recovering bool
	recoverGen uint32 // highest gen heard while recovering
	// recoverPromise is the highest promise (the egen of a VOTE2 cast)
	// heard while recovering. A site that voted for a master elected by a
	// majority this site's lost vote was part of may not have heard from
	// it yet and still show the old gen; its promise shows the election.
	// Unlike the egens heard, which failed elections raise too, every
	// site holding that promise refuses a master below it already.
	recoverPromise uint32
	// voteFloor: this site votes in no election at or below it (the
	// highest egen heard while recovering: it may have voted there before
	// it lost its memory).
	voteFloor    uint32
	recoverTop   uint32 // highest egen heard while recovering
	recoverAskAt time.Duration
	// logFloor stands in for the log this site lost: the most current
	// recoveryPoint of the electable sites it heard as it recovered. Until
	// its own log reaches it, the site votes for no site less current
	// (elect's SetFloor). An ack quorum and the sites heard share a site, so
	// every write made permanent with this site's lost ack is at or below
	// the floor; voting as if it still had that log is what keeps such a
	// write from losing an election to sites that never had it.
	logFloor logPoint

	counters  Counters
	dec       Decoded
	verifyBuf []CommitInfo
}

// NewNode validates cfg, fills defaults and returns a node that does nothing
// until Start.
func NewNode(cfg Config, st Storage) (*Node, error) {
	if st == nil {
		return nil, fmt.Errorf("nil Storage: %w", ErrBadConfig)
	}
	if err := fillConfig(&cfg); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, st: st, master: NoMaster, grantTo: NoMaster, electAbsent: elect.Broadcast}
	for _, p := range cfg.Peers {
		if p == cfg.Site {
			continue
		}
		if n.siteByID(p) == nil {
			n.addSite(p, false)
		}
	}
	n.el = newElector(cfg)
	n.promised = cfg.Promised
	n.el.ObserveEgen(cfg.Promised)
	n.gen = max(st.Gen(), st.LastCommit().Gen)
	n.el.ObserveEgen(n.gen)
	n.becomeRole(RoleReplica)
	return n, nil
}

func fillConfig(c *Config) error {
	d := defaultConfig
	if c.Site == AllSites {
		return fmt.Errorf("Site %#x is the multicast address: %w", c.Site, ErrBadConfig)
	}
	for _, p := range c.Peers {
		if p == AllSites {
			return fmt.Errorf("Peers holds %#x, the multicast address: %w", p, ErrBadConfig)
		}
	}
	if len(c.Peers) >= maxSites {
		return fmt.Errorf("%d Peers, at most %d: %w", len(c.Peers), maxSites-1, ErrBadConfig)
	}
	if c.AckPolicy > AckAll {
		return fmt.Errorf("AckPolicy %d unknown: %w", c.AckPolicy, ErrBadConfig)
	}
	if c.Pace < 0 {
		return fmt.Errorf("Pace %v is negative (0 turns pacing off): %w", c.Pace, ErrBadConfig)
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"AckTimeout", &c.AckTimeout, d.AckTimeout},
		{"HeartbeatSend", &c.HeartbeatSend, d.HeartbeatSend},
		{"HeartbeatMonitor", &c.HeartbeatMonitor, d.HeartbeatMonitor},
		{"ElectionTimeout", &c.ElectionTimeout, d.ElectionTimeout},
		{"ElectionBackoffMax", &c.ElectionBackoffMax, d.ElectionBackoffMax},
		{"LeaseTimeout", &c.LeaseTimeout, d.LeaseTimeout},
		{"ReRequestMin", &c.ReRequestMin, d.ReRequestMin},
		{"ReRequestMax", &c.ReRequestMax, d.ReRequestMax},
	} {
		if *f.v < 0 {
			return fmt.Errorf("%s %v is negative: %w", f.name, *f.v, ErrBadConfig)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 1
	}
	if !(c.ClockSkew >= 1 && c.ClockSkew <= 2) {
		return fmt.Errorf("ClockSkew %v outside [1, 2]: %w", c.ClockSkew, ErrBadConfig)
	}
	if c.HeartbeatMonitor <= c.HeartbeatSend {
		return fmt.Errorf("HeartbeatMonitor %v must exceed HeartbeatSend %v, or every idle gap starts an election: %w",
			c.HeartbeatMonitor, c.HeartbeatSend, ErrBadConfig)
	}
	if c.Leases && c.LeaseTimeout <= c.HeartbeatSend {
		return fmt.Errorf("LeaseTimeout %v must exceed HeartbeatSend %v, or leases lapse between refreshes: %w",
			c.LeaseTimeout, c.HeartbeatSend, ErrBadConfig)
	}
	if c.ReRequestMax < c.ReRequestMin {
		return fmt.Errorf("ReRequestMax %v below ReRequestMin %v: %w", c.ReRequestMax, c.ReRequestMin, ErrBadConfig)
	}
	if c.ElectionBackoffMax < c.ElectionTimeout {
		return fmt.Errorf("ElectionBackoffMax %v below ElectionTimeout %v: %w", c.ElectionBackoffMax, c.ElectionTimeout, ErrBadConfig)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		return fmt.Errorf("MaxMessageBytes %d outside [%d, %d]: %w", c.MaxMessageBytes, minMessageBytes, maxMessageBytes, ErrBadConfig)
	}
	if c.InitWindowPages == 0 {
		c.InitWindowPages = d.InitWindowPages
	}
	if c.InitWindowPages < 1 || c.InitWindowPages > 1<<16 {
		return fmt.Errorf("InitWindowPages %d outside [1, 65536]: %w", c.InitWindowPages, ErrBadConfig)
	}
	return nil
}

// Config returns the configuration in effect (defaults filled in).
func (n *Node) Config() Config { return n.cfg }

// Start enters the group. StartMaster designates this site master at once
// (gen+1); StartClient looks for a master and elects one if none answers.
func (n *Node) Start(now time.Duration, mode StartMode) {
	n.tick(now)
	if n.started {
		return
	}
	n.started = true
	if n.cfg.Leases {
		// A restarted site does not remember the grants it made before: wait
		// a whole lease period before granting or voting (the seeds' rule
		// for a lease never granted).
		n.grantUntil = now + n.cfg.LeaseTimeout
	}
	if mode == StartMaster {
		n.becomeMaster(now, false)
		return
	}
	n.becomeReplica(now, true)
	n.broadcast(MsgNewClient)
	if n.gen == 0 && n.st.LastCommit().LSN == 0 && n.recoveryNeed() > 0 {
		n.recovering = true
		n.recoverAskAt = now + n.cfg.HeartbeatMonitor
		n.broadcast(MsgAliveReq)
		return
	}
	n.broadcast(MsgMasterReq)
}

// recoveryNeed is how many other electable sites that are not blank
// (witnesses, see noteRecovery) an empty site must hear before it acts:
// enough that, whichever majority acked a Perm write or elected the newest
// master, one of them is among those heard. Such a majority of E electable
// sites may include this one, which remembers nothing, so it holds E/2
// (rounded down) of the others, and hearing all but that many of the E-1
// others, plus one, is ceil(E/2). Zero without majority elections (a
// non-strict two-site group, or no other electable site), where there is no
// such guarantee to keep.
func (n *Node) recoveryNeed() int {
	e := n.electableSites()
	if n.cfg.Priority > 0 {
		e-- // others only
	}
	if e == 0 || (n.electableSites() == 2 && !n.cfg.TwoSiteStrict) {
		return 0
	}
	all := n.electableSites()
	return min(all-all/2, e)
}

// noteRecovery records what a message tells a recovering site and ends the
// recovery once enough witnesses were heard. A majority of electable sites
// that are blank (this one and others) means the group lost its memory as a
// whole: nothing is left to protect, carry on.
func (n *Node) noteRecovery(s *site, d *Decoded) {
	h := &d.Header
	n.recoverGen = max(n.recoverGen, h.Gen)
	n.recoverTop = max(n.recoverTop, h.Gen, h.Egen)
	if d.Type != MsgAlive {
		// Only an ALIVE says how far the sender's log reaches.
		return
	}
	// Blank: as fresh as a site just started (or emptied and still
	// recovering): no gen, no election held, nothing at or below its
	// recovery point. Every other site is a witness: since it last started
	// (or, if it lost its memory, as far as its own witnesses told it) it
	// remembers every election it voted in and every write it acked, so one
	// that shows no gen, log or promise took part in no quorum that did
	// anything. A site merely without a log is not blank: one cut off since
	// the group formed has none either, and counting it as emptied made a
	// recovering site take the total-loss path before it heard the site
	// holding the Perm writes (sim seed 5721).
	s.recHeard = true
	s.recBlank = h.Gen == 0 && h.Egen == 0 && d.LSN == 0
	s.recPoint = logPoint{gen: d.Gen, end: d.LSN}
	n.recoverPromise = max(n.recoverPromise, d.Promised)
	heard, empty := n.recoveryHeard()
	need := n.recoveryNeed()
	majority := n.electableSites()/2 + 1
	selfEmpty := 0
	if n.cfg.Priority > 0 {
		selfEmpty = 1
	}
	if heard < need && empty+selfEmpty < majority {
		return
	}
	// Follow no master older than the newest gen or promise heard, vote in
	// no election at or below the newest egen heard (this site may have
	// voted there before it lost its memory), and for no site less current
	// than the most current log heard.
	n.recovering = false
	n.promised = max(n.promised, n.recoverGen, n.recoverPromise)
	n.voteFloor = max(n.voteFloor, n.recoverTop)
	n.el.ObserveEgen(n.recoverTop)
	for _, x := range n.sites {
		if x.recHeard && x.electable() && n.logFloor.less(x.recPoint) {
			n.logFloor = x.recPoint
		}
	}
	n.rs.lookingSince = n.now
	n.broadcast(MsgMasterReq)
}

// recoveryHeard counts the electable sites heard while recovering: the
// witnesses, and the blank ones. Only witnesses count toward need: an
// emptied site knows nothing of the elections it voted in, and two emptied
// voters of the newest master could otherwise make up the half that tells
// the first of them nothing about it.
func (n *Node) recoveryHeard() (witnesses, blank int) {
	for _, x := range n.sites {
		if x.recHeard && x.electable() {
			if x.recBlank {
				blank++
			} else {
				witnesses++
			}
		}
	}
	return witnesses, blank
}

// logEnd is where this site's own log stands: its end and the gen of its
// last commit.
func (n *Node) logEnd() logPoint {
	return logPoint{gen: n.st.LastCommit().Gen, end: n.st.EndLSN()}
}

// recoveryPoint is what this site tells a recovering one in ALIVE: a point
// at or above every permanent write it holds or, having lost its memory
// itself, stands in for. A master gives its newest permanent commit only:
// the rest of its log is not permanent yet, and a floor above what the
// replicas hold would keep them from electing a successor if it died. A
// replica gives its log's end, or its own floor if that is higher, so that
// a second site losing its memory still learns of writes the first one
// stands in for.
func (n *Node) recoveryPoint() logPoint {
	if n.role == RoleMaster && n.ms.perm != 0 {
		if ci, err := n.st.CommitAt(n.ms.perm); err == nil {
			return logPoint{gen: ci.Gen, end: ci.End}
		}
	}
	own := n.logEnd()
	if own.less(n.logFloor) {
		return n.logFloor
	}
	return own
}

// sendAlive answers ALIVE_REQ (and announces this site) with its recovery
// point and its promise.
func (n *Node) sendAlive(to uint16) {
	p := n.recoveryPoint()
	start := n.begin()
	n.cur.arena = appendU64(n.cur.arena, p.end)
	n.cur.arena = appendU32(n.cur.arena, p.gen)
	n.cur.arena = appendU32(n.cur.arena, n.promised)
	n.finish(to, MsgAlive, start)
}

// electionFloor is the floor for this site's votes now: none once its own
// log reached logFloor (it votes for no site less current than itself
// anyway), and then never again.
func (n *Node) electionFloor() logPoint {
	n.logFloor = n.activeFloor()
	return n.logFloor
}

// activeFloor is logFloor while this site's own log is below it.
func (n *Node) activeFloor() logPoint {
	own := n.logEnd()
	if !own.less(n.logFloor) {
		return logPoint{}
	}
	return n.logFloor
}

// stepRecovering handles a message while recovering: answer liveness
// questions (other empty sites count on them), ignore the rest.
func (n *Node) stepRecovering(d *Decoded) {
	switch d.Type {
	case MsgAliveReq, MsgNewClient:
		n.sendAlive(d.From)
	case MsgAlive:
	default:
		n.drop(DropRecovering)
	}
}

// Step processes one received message. Malformed input is dropped, counted
// and returned as an error for logging; it never panics.
func (n *Node) Step(now time.Duration, m Message) error {
	n.tick(now)
	if !n.started {
		return ErrNotStarted
	}
	n.counters.MessagesIn++
	d := &n.dec
	if err := DecodeMessage(m, d); err != nil {
		if errors.Is(err, ErrUnknownType) {
			n.drop(DropUnknownType)
		} else {
			n.drop(DropMalformed)
		}
		return fmt.Errorf("from site %d: %w", m.From, err)
	}
	if m.From == n.cfg.Site || m.From == AllSites || (m.To != n.cfg.Site && m.To != AllSites) {
		n.drop(DropBadSite)
		return fmt.Errorf("%s from site %d to %d at site %d: %w", m.Type, m.From, m.To, n.cfg.Site, ErrBadSite)
	}
	s := n.learn(m.From, d.Header.Priority, m.Type)
	if s == nil {
		n.drop(DropBadSite)
		return fmt.Errorf("%s from site %d: already %d sites known: %w", m.Type, m.From, maxSites, ErrBadSite)
	}
	s.heard, s.lastHeard = true, now
	n.el.ObserveEgen(d.Header.Egen)
	if n.recovering {
		n.noteRecovery(s, d)
		if n.recovering {
			n.stepRecovering(d)
			n.afterStep()
			return nil
		}
	}
	if n.stepCommon(d) {
		return nil
	}
	n.step(n, d)
	n.afterStep()
	return nil
}

// stepCommon handles what every role does alike; it reports whether the
// message was fully handled.
func (n *Node) stepCommon(d *Decoded) bool {
	switch d.Type {
	case MsgAliveReq:
		n.sendAlive(d.From)
		return true
	case MsgAlive:
		return true
	case MsgNewSite:
		if d.Site != n.cfg.Site {
			if s := n.learn(d.Site, d.Priority, MsgNewSite); s != nil && !s.prioKnown {
				s.priority, s.prioKnown = d.Priority, true
			}
		}
		return true
	case MsgApp, MsgAppReply:
		o := &n.cur
		start := len(o.arena)
		o.arena = append(o.arena, d.Data...)
		o.app = append(o.app, Message{From: d.From, To: d.To, Type: d.Type, Payload: o.arena[start:len(o.arena):len(o.arena)]})
		return true
	}
	return false
}

// Tick advances time: heartbeats, ack timeouts, failure detection,
// re-requests and elections. Call it at least every HeartbeatSend (the
// board ticks every HeartbeatSend/2): a longer pause between inputs (and at
// least a quarter of HeartbeatMonitor) is taken as time the node could not
// listen, and does not count toward its master's silence beyond that.
func (n *Node) Tick(now time.Duration) {
	n.tick(now)
	if !n.started {
		return
	}
	switch {
	case n.recovering:
		if n.now >= n.recoverAskAt {
			n.recoverAskAt = n.now + n.cfg.HeartbeatMonitor
			n.broadcast(MsgAliveReq)
		}
	case n.role == RoleMaster:
		n.tickMaster()
	case n.role == RoleReplica:
		n.tickReplica()
	case n.role == RoleElecting:
		n.tickElecting()
	}
	n.afterStep()
}

// tick records the time; time never runs backwards inside the node even if
// the driver's clock does.
//
// A gap between two inputs longer than the driver's tick (at most
// HeartbeatSend, or a master's heartbeats would be late) means the node was
// not running: its driver busy applying a long catch-up, or descheduled on a
// loaded machine. Whatever the master sent meanwhile is waiting in the
// receive queue, so that time is not the master's silence: the part of the
// gap beyond deafAllowance does not count toward it. Otherwise a replica
// elects as soon as it runs again, before it reads the messages that show
// its master alive, and such a false alarm can depose a healthy master (see
// TestDeafReplicaDoesNotElect). A master that really died is still detected
// once the node has listened for HeartbeatMonitor, and a driver that ticks
// too seldom only slows detection down (each input still counts
// deafAllowance).
func (n *Node) tick(now time.Duration) {
	if now <= n.now {
		return
	}
	if gap, allow := now-n.now, n.deafAllowance(); n.started && gap > allow {
		n.rs.masterHeard += gap - allow
		n.rs.lookingSince += gap - allow
	}
	n.now = now
}

// deafAllowance is the longest gap between inputs taken as listening time:
// HeartbeatSend, but at least a quarter of the heartbeat monitor.
func (n *Node) deafAllowance() time.Duration {
	return max(n.cfg.HeartbeatSend, n.cfg.HeartbeatMonitor/4)
}

// afterStep runs the checks every input may have made due: an election won.
func (n *Node) afterStep() {
	n.drainElection()
	if _, ok := n.el.Won(); ok && n.role == RoleElecting {
		n.counters.ElectionsWon++
		n.becomeMaster(n.now, true)
	}
}

// Committed tells the master about a local commit to ship and track. On a
// non-master it is ignored.
func (n *Node) Committed(now time.Duration, c CommitInfo) {
	n.tick(now)
	if n.role != RoleMaster {
		return
	}
	n.noteCommit(c)
}

// Elect asks for an election. A master re-announces itself (phase 0).
func (n *Node) Elect(now time.Duration) {
	n.tick(now)
	if !n.started {
		return
	}
	if n.role == RoleMaster {
		n.announceMaster(AllSites)
		return
	}
	if n.recovering {
		return // it may not vote yet; it elects once it has recovered
	}
	n.startElection()
	n.afterStep()
}

// StepDown turns a master into a replica (it then looks for a master).
func (n *Node) StepDown(now time.Duration) {
	n.tick(now)
	if n.role != RoleMaster {
		return
	}
	n.becomeReplica(now, true)
	n.broadcast(MsgMasterReq)
}

// SendApp queues an application message (APP, or APP_REPLY if reply).
func (n *Node) SendApp(to uint16, reply bool, payload []byte) {
	t := MsgApp
	if reply {
		t = MsgAppReply
	}
	start := n.begin()
	n.cur.arena = append(n.cur.arena, payload...)
	n.finish(to, t, start)
}

// Ready returns the work accumulated since the last Ready. The driver sends
// the messages and performs Init, RollbackTo, Apply and NewGen in that order,
// then calls Advance(rd).
func (n *Node) Ready() Ready {
	if n.role == RoleMaster {
		n.shipLog()
	} else {
		n.readyReplica()
	}
	o := &n.cur
	rd := Ready{
		Messages:     o.msgs,
		Events:       o.events,
		App:          o.app,
		PermFailed:   o.permFailed,
		CheckpointOK: n.checkpointOK,
	}
	if n.role == RoleMaster {
		rd.PermLSN = n.ms.perm
		rd.HoldCheckpoint = n.now < n.ms.exportUntil
	} else {
		rd.PermLSN = min(n.rs.masterPerm, n.st.LastCommit().LSN)
	}
	if rd.PermLSN != n.lastPerm || rd.CheckpointOK != n.lastCkptOK {
		rd.progressed = true
		n.lastPerm, n.lastCkptOK = rd.PermLSN, rd.CheckpointOK
	}
	rd.ListPages = o.listPages
	if o.hasInit {
		o.init.Pages = o.pages
		ia := o.init
		rd.Init = &ia
	}
	if n.hasRollback && !n.rollbackOut {
		rd.RollbackTo, rd.HasRollback = n.rollbackTo, true
		n.rollbackOut = true
	}
	if n.role != RoleMaster && !rd.HasRollback && rd.Init == nil {
		rd.Apply = n.rs.takeApply()
	}
	if n.newGen != 0 && !n.newGenOut {
		rd.NewGen = n.newGen
		n.newGenOut = true
	}
	n.counters.MessagesOut += uint64(len(o.msgs))
	// Hand this set out; fill the spare one meanwhile.
	n.flight, n.cur, n.spare = n.cur, n.spare, outBufs{}
	n.cur.reset()
	return rd
}

// Advance confirms the driver performed rd. The node re-reads Storage to see
// what was really done.
func (n *Node) Advance(rd Ready) {
	if rd.HasRollback {
		n.hasRollback, n.rollbackOut = false, false
	}
	if rd.NewGen != 0 && rd.NewGen == n.newGen {
		n.newGen, n.newGenOut = 0, false
		if n.role == RoleMaster {
			// The driver appended the RecNewGen commit: ship and track it.
			n.noteCommit(n.st.LastCommit())
		}
	}
	if n.role == RoleMaster {
		n.updatePerm(nil)
	} else {
		n.advanceReplica(&rd)
	}
	// Recycle the handed-out buffers.
	n.flight.reset()
	n.spare, n.flight = n.flight, outBufs{}
	n.afterStep()
}

// CanWrite reports whether a local write may start now.
func (n *Node) CanWrite() error {
	switch {
	case n.role == RoleMaster:
		return nil
	case n.lockedOut():
		return ErrLockout
	}
	return ErrNotMaster
}

// LeaseValid reports whether this master may serve authoritative reads at now.
func (n *Node) LeaseValid(now time.Duration) bool {
	if n.role != RoleMaster {
		return false
	}
	if !n.cfg.Leases {
		return true
	}
	until, ok := n.leaseExpiry()
	return ok && now < until
}

// Status returns a snapshot of the node's state (allocates; not for hot paths).
func (n *Node) Status() Status {
	lc := n.st.LastCommit()
	s := Status{
		Site:            n.cfg.Site,
		Role:            n.role,
		Master:          n.master,
		Gen:             n.gen,
		Egen:            n.el.Egen(),
		ElectionRunning: n.el.InProgress(),
		StartupDone:     n.role == RoleMaster || n.rs.sync == syncLive,
		Lockout:         n.lockedOut(),
		JoinFailed:      n.rs.sync == syncJoinFailed,
		EndLSN:          n.st.EndLSN(),
		AppliedLSN:      lc.LSN,
		MasterEndLSN:    n.rs.masterEnd,
		InitPagesDone:   n.rs.init.done,
		InitPagesTotal:  int(n.rs.init.count),
		Recovering:      n.recovering,
		Counters:        n.counters,
	}
	f := n.activeFloor()
	s.VoteFloorGen, s.VoteFloorEnd = f.gen, f.end
	if n.recovering {
		s.Witnesses, _ = n.recoveryHeard()
		s.WitnessesNeeded = n.recoveryNeed()
	}
	if n.role == RoleMaster {
		s.PermLSN = n.ms.perm
		s.LeaseValid = n.LeaseValid(n.now)
		s.LeaseExpires, _ = n.leaseExpiry()
	} else {
		s.PermLSN = n.rs.masterPerm
		s.Paced = n.Paced()
	}
	for _, x := range n.sites {
		ss := SiteStatus{Site: x.id, Priority: x.priority, Learned: x.learned, CaughtUp: x.caughtUp, Waited: x.waited,
			LastHeard: x.lastHeard}
		if n.role == RoleMaster {
			ss.AckedLSN = x.acked
			if last := n.ms.lastCommit.LSN; last > x.acked {
				ss.LagBytes = last - x.acked
			}
			if x.hasLease {
				ss.LeaseTo = n.leaseEnd(x.leaseEcho)
			}
		}
		s.Sites = append(s.Sites, ss)
	}
	return s
}

func (n *Node) lockedOut() bool {
	switch n.rs.sync {
	case syncVerify, syncRollback, syncInit, syncJoinFailed:
		return n.role != RoleMaster
	}
	return false
}

// --- roles ---

func (n *Node) becomeRole(r Role) {
	n.role = r
	switch r {
	case RoleMaster:
		n.step = stepMaster
	case RoleReplica:
		n.step = stepReplica
	case RoleElecting:
		n.step = stepElecting
	}
}

// becomeMaster takes over at gen+1 (elected, or designated by Start/after a
// won phase 0).
func (n *Node) becomeMaster(now time.Duration, elected bool) {
	n.becomeRole(RoleMaster)
	n.gen = max(n.gen, n.st.Gen(), n.st.LastCommit().Gen) + 1
	if egen, ok := n.el.Won(); ok && elected && egen >= n.gen {
		// An elected master's gen is the egen it won. Every site starts
		// or joins only elections with an egen above its own gen (see
		// voteIgnored), so this is above the winner's gen, and an egen
		// has at most one winner: two elected masters never share a gen,
		// and voters, who promised this egen, follow it.
		n.gen = egen
	}
	n.el.Cancel()
	n.el.ObserveEgen(n.gen)
	n.master = n.cfg.Site
	n.rs.reset(n)
	n.ms.reset(n, now)
	n.hasRollback, n.rollbackOut = false, false
	n.newGen, n.newGenOut = n.gen, false
	if elected {
		n.event(Event{Kind: EventElected, Site: n.cfg.Site, Gen: n.gen})
	}
	n.event(Event{Kind: EventMaster, Site: n.cfg.Site, Gen: n.gen})
	n.announceMaster(AllSites)
}

// becomeReplica turns this site into a replica with no master known yet.
func (n *Node) becomeReplica(now time.Duration, announce bool) {
	n.el.Cancel()
	n.becomeRole(RoleReplica)
	n.master = NoMaster
	n.rs.reset(n)
	n.rs.lookingSince = now
	n.ms = masterState{}
	if announce {
		n.event(Event{Kind: EventClient, Site: n.cfg.Site, Gen: n.gen})
	}
}

// --- membership ---

func (n *Node) siteByID(id uint16) *site {
	i, ok := slices.BinarySearchFunc(n.sites, id, func(s *site, id uint16) int { return int(s.id) - int(id) })
	if !ok {
		return nil
	}
	return n.sites[i]
}

func (n *Node) addSite(id uint16, learned bool) *site {
	if len(n.sites) >= maxSites-1 {
		return nil
	}
	s := &site{id: id, learned: learned}
	i, _ := slices.BinarySearchFunc(n.sites, id, func(s *site, id uint16) int { return int(s.id) - int(id) })
	n.sites = slices.Insert(n.sites, i, s)
	return s
}

// learn returns the site, adding it (event NEWSITE) if new. A master relays
// new sites to the group and counts them toward ack quorums once caught up.
func (n *Node) learn(id uint16, priority uint32, via MsgType) *site {
	if s := n.siteByID(id); s != nil {
		if via != MsgNewSite {
			s.priority, s.prioKnown = priority, true
		}
		return s
	}
	if id == AllSites || id == n.cfg.Site {
		return nil
	}
	s := n.addSite(id, true)
	if s == nil {
		return nil
	}
	s.priority, s.prioKnown = priority, true
	n.event(Event{Kind: EventNewSite, Site: id, Gen: n.gen})
	if n.role == RoleMaster {
		s.joinLSN = n.ms.lastCommit.LSN
		s.caughtUp = s.joinLSN == 0
		start := n.begin()
		n.cur.arena = appendU16(n.cur.arena, id)
		n.cur.arena = appendU32(n.cur.arena, priority)
		n.finish(AllSites, MsgNewSite, start)
	}
	return s
}

// electableSites counts the electable members, this site included.
func (n *Node) electableSites() int {
	c := 0
	if n.cfg.Priority > 0 {
		c++
	}
	for _, s := range n.sites {
		if s.electable() {
			c++
		}
	}
	return c
}

// --- output helpers ---

func (n *Node) event(e Event) { n.cur.events = append(n.cur.events, e) }

func (n *Node) drop(r DropReason) { n.counters.Dropped[r]++ }

func (n *Node) header() Header {
	h := Header{Gen: n.gen, Egen: max(n.el.Egen(), n.promised), End: n.st.EndLSN(), SendTime: n.now,
		Priority: n.cfg.Priority, Master: n.master}
	if n.role == RoleMaster {
		h.Flags |= FlagMaster
	}
	if n.cfg.Leases {
		h.Flags |= FlagLeases
	}
	return h
}

// begin starts a message in the arena; finish records it.
func (n *Node) begin() int {
	start := len(n.cur.arena)
	h := n.header()
	n.cur.arena = appendHeader(n.cur.arena, &h)
	return start
}

func (n *Node) beginFlags(flags uint16) int {
	start := len(n.cur.arena)
	h := n.header()
	h.Flags |= flags
	n.cur.arena = appendHeader(n.cur.arena, &h)
	return start
}

func (n *Node) finish(to uint16, t MsgType, start int) {
	a := n.cur.arena
	n.cur.msgs = append(n.cur.msgs, Message{From: n.cfg.Site, To: to, Type: t, Payload: a[start:len(a):len(a)]})
	if n.role == RoleMaster && to == AllSites {
		n.ms.lastSend = n.now
	}
}

func (n *Node) sendEmpty(to uint16, t MsgType) { n.finish(to, t, n.begin()) }

func (n *Node) broadcast(t MsgType) { n.sendEmpty(AllSites, t) }

// Counters returns the cumulative counters (no allocation, unlike Status).
func (n *Node) Counters() Counters { return n.counters }

// Elections is Counters().Elections without copying every counter: the
// driver may look at it after each input.
func (n *Node) Elections() uint64 { return n.counters.Elections }

// Promised is the highest egen this site cast a VOTE2 in. The driver should
// persist it with the environment and pass it back in Config.Promised after a
// restart (it changes only during elections).
func (n *Node) Promised() uint32 { return n.promised }
