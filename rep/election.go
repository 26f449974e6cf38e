package rep

import (
	"github.com/seed61e250c8/boardha/elect"
)

// elector is the part of *elect.Election the node uses.
type elector interface {
	Start(now Duration, lastGen uint32, lsn uint64, electable int, leaseWaitUntil Duration)
	SetAbsent(now Duration, site uint16)
	SetFloor(lastGen uint32, lsn uint64)
	StepVote1(now Duration, v elect.Vote)
	StepVote2Vote(now Duration, v elect.Vote)
	Tick(now Duration)
	Outbox() []elect.Out
	Won() (egen uint32, ok bool)
	Cancel()
	InProgress() bool
	Egen() uint32
	ObserveEgen(egen uint32)
	Phase() elect.Phase
}

func newElector(cfg Config) elector {
	return elect.New(elect.Config{
		Self:          cfg.Site,
		Priority:      cfg.Priority,
		TwoSiteStrict: cfg.TwoSiteStrict,
		Timeout:       cfg.ElectionTimeout,
		MaxBackoff:    cfg.ElectionBackoffMax,
		Seed:          cfg.Seed,
	})
}

// startElection holds an election (or keeps the running one going). A master
// never calls it: it re-announces itself instead (phase 0).
func (n *Node) startElection() {
	if n.role == RoleMaster {
		return
	}
	if n.role != RoleElecting {
		n.counters.Elections++
		n.electAbsent = elect.Broadcast
		if n.master != NoMaster {
			n.rs.lastMaster = n.master
			if s := n.siteByID(n.master); s != nil && s.electable() && n.master != n.cfg.Site &&
				n.now-n.rs.masterHeard >= n.cfg.HeartbeatMonitor {
				// Lost by silence: its VOTE1 will not come.
				n.electAbsent = n.master
			}
		}
		n.master = NoMaster
		n.becomeRole(RoleElecting)
	}
	if n.el.InProgress() {
		return
	}
	var wait Duration
	if n.cfg.Leases {
		// Phase 2: a lease granted must run out before voting.
		wait = n.leaseWait()
	}
	n.startElector(wait)
	n.drainElection()
}

// startElector starts an election attempt with this site's log, the
// electable sites known absent and, for a site that lost its memory, the
// floor that stands in for its lost log.
func (n *Node) startElector(leaseWait Duration) {
	f := n.electionFloor()
	n.el.SetFloor(f.gen, f.end)
	n.el.Start(n.now, n.st.LastCommit().Gen, n.st.EndLSN(), n.electableSites(), leaseWait)
	n.el.SetAbsent(n.now, n.electAbsent)
}

// drainElection sends what the election produced.
func (n *Node) drainElection() {
	for _, o := range n.el.Outbox() {
		start := n.begin()
		n.cur.arena = appendVote(n.cur.arena, o.Vote)
		switch o.Kind {
		case elect.KindVote1:
			n.finish(AllSites, MsgVote1, start)
		case elect.KindVote2:
			if o.To != n.cfg.Site {
				n.promised = max(n.promised, o.Vote.Egen)
			}
			n.finish(o.To, MsgVote2, start)
		default:
			n.cur.arena = n.cur.arena[:start]
		}
	}
}

// stepElecting handles a message during an election: votes go to the
// election, log records are ignored, a master ends it.
func stepElecting(n *Node, d *Decoded) {
	h := &d.Header
	if h.Flags&FlagMaster != 0 {
		switch {
		case h.Gen < n.promised:
			// Elected before the election we voted in: not ours to follow.
			n.refusePromised(d.From)
		case d.From == n.rs.lastMaster && h.Gen == n.gen && n.rs.sync != syncNone:
			// A false alarm: our master is alive. Resume where we were;
			// records missed meanwhile are found as a gap.
			n.el.Cancel()
			n.becomeRole(RoleReplica)
			n.master = d.From
			n.rs.masterHeard = n.now
			if d.Type == MsgHeartbeat || d.Type == MsgLog || d.Type == MsgLogMore {
				stepReplica(n, d)
			}
		case h.Gen >= n.gen:
			// A newer master, another master at our gen (the masters
			// settle that between them), or our last master at our gen
			// before we had synchronized with it: follow it. Refusing the
			// last one would tell it to step down although no promise
			// forbids it, and start the churn of needless elections.
			n.adopt(d.From, h)
		default:
			n.sendRefusal(d.From)
		}
		return
	}
	switch d.Type {
	case MsgVote1:
		if !n.voteIgnored(d) {
			n.el.StepVote1(n.now, d.Vote)
		}
	case MsgVote2:
		if !n.voteIgnored(d) {
			n.el.StepVote2Vote(n.now, d.Vote)
		}
	case MsgNewClient:
		n.sendAlive(d.From)
	case MsgLog, MsgLogMore:
		n.drop(DropElecting)
	default:
		n.drop(DropNotMaster)
	}
}

// voteIgnored drops a VOTE1/VOTE2 of an election this site must not take
// part in: one whose egen is not above its gen (its winner would take a gen
// some master already had, or an older one) or not above its promise (it may
// already have voted in that egen, possibly before a restart). Every site
// applying this is what makes the winner's gen, its egen, unique.
func (n *Node) voteIgnored(d *Decoded) bool {
	if d.Vote.Egen <= n.gen || d.Vote.Egen <= n.promised || d.Vote.Egen <= n.voteFloor {
		n.drop(DropStaleGen)
		return true
	}
	return false
}

func (n *Node) tickElecting() {
	n.el.Tick(n.now)
	n.drainElection()
	if _, won := n.el.Won(); !won && !n.el.InProgress() {
		// The election machine gave up this round; go again.
		n.startElector(n.leaseWait())
		n.drainElection()
	}
}

func (n *Node) leaseWait() Duration {
	if n.cfg.Leases {
		return n.grantUntil
	}
	return 0
}

// refusePromised answers a master elected before an election this site voted
// in: DUPMASTER with our egen makes it step down and hold an election, which
// it normally wins again with a gen above every promise (see stepMaster).
func (n *Node) refusePromised(from uint16) { n.sendRefusal(from) }

// sendRefusal tells a master this site will not follow it: DUPMASTER whose
// Egen is this site's promise, not the egen of its last election. A master
// steps down for a promise above its gen (it must, see refusePromised), but
// an egen raised by elections this site only voted itself in (false alarms,
// attempts while alone) promises nothing; stepping down for it made masters
// re-elect over and over after a failover.
func (n *Node) sendRefusal(from uint16) {
	n.drop(DropStaleGen)
	start := len(n.cur.arena)
	h := n.header()
	h.Egen = n.promised
	n.cur.arena = appendHeader(n.cur.arena, &h)
	n.finish(from, MsgDupMaster, start)
}
