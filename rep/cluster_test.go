package rep

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// cluster is an in-test group: nodes with memStores over a stepped network
// with a fixed one-millisecond delay and optional loss, partitions and
// filters. Everything is deterministic.
type cluster struct {
	t     *testing.T
	now   time.Duration
	nodes []*tnode
	q     []packet
	cut   map[[2]uint16]bool
	// filter returns true to drop a packet.
	filter func(p *packet) bool
	sent   map[MsgType]int
	trace  bool
	// delay, if set, gives each packet's transit time instead of 1 ms
	// (packets are then delivered in arrival order, not send order); stall,
	// if set, skips a node's tick (a busy board ticking late).
	delay func(from uint16) time.Duration
	stall func(id uint16) bool
	// deaf nodes neither tick nor receive: what arrives for them is held
	// until wake (a board whose runtime is busy, or descheduled).
	deaf map[uint16][]packet
}

// link cuts (on) or restores the link between a and b in both directions.
func (c *cluster) link(a, b *tnode, cut bool) {
	c.cut[[2]uint16{a.id, b.id}], c.cut[[2]uint16{b.id, a.id}] = cut, cut
}

type tnode struct {
	id       uint16
	cfg      Config
	n        *Node
	st       *memStore
	down     bool
	events   []Event
	failed   []uint64
	perm     uint64
	ckptOK   uint64
	applyErr error
	inits    int
	apps     []Message
}

type packet struct {
	at       time.Duration
	from, to uint16
	// multicast: sent to AllSites (filter sees to as the receiver)
	multicast bool
	typ       MsgType
	payload   []byte
}

func newCluster(t *testing.T, ids []uint16, mod func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, cut: map[[2]uint16]bool{}, sent: map[MsgType]int{}, trace: os.Getenv("REP_TRACE") != ""}
	for _, id := range ids {
		cfg := Config{Site: id, Priority: 100, AckPolicy: AckQuorum, Seed: uint64(id) * 7919}
		for _, p := range ids {
			if p != id {
				cfg.Peers = append(cfg.Peers, p)
			}
		}
		if mod != nil {
			mod(&cfg)
		}
		tn := &tnode{id: id, cfg: cfg, st: newMemStore()}
		var err error
		tn.n, err = NewNode(cfg, tn.st)
		if err != nil {
			t.Fatalf("NewNode(%d): %v", id, err)
		}
		c.nodes = append(c.nodes, tn)
	}
	return c
}

func (c *cluster) node(id uint16) *tnode {
	for _, tn := range c.nodes {
		if tn.id == id {
			return tn
		}
	}
	c.t.Fatalf("no node %d", id)
	return nil
}

func (c *cluster) start(id uint16, mode StartMode) {
	tn := c.node(id)
	tn.down = false
	tn.n.Start(c.now, mode)
	c.flush(tn)
}

func (c *cluster) startAll() {
	for _, tn := range c.nodes {
		c.start(tn.id, StartClient)
	}
}

// crash stops a node; restart gives it a new Node over the same store
// (or an empty one if lose).
func (c *cluster) crash(id uint16) { c.node(id).down = true }

func (c *cluster) restart(id uint16, lose bool, mode StartMode) {
	tn := c.node(id)
	cfg := tn.cfg
	if lose {
		tn.st = newMemStore()
	} else {
		cfg.Promised = tn.n.Promised() // kept with the environment
	}
	var err error
	tn.n, err = NewNode(cfg, tn.st)
	if err != nil {
		c.t.Fatal(err)
	}
	c.start(id, mode)
}

// flush drives the Ready/Advance loop of one node until it is quiet.
func (c *cluster) flush(tn *tnode) {
	for i := 0; i < 100; i++ {
		rd := tn.n.Ready()
		if rd.Empty() {
			tn.perm, tn.ckptOK = rd.PermLSN, rd.CheckpointOK
			tn.n.Advance(rd)
			return
		}
		for _, m := range rd.Messages {
			c.sent[m.Type]++
			c.enqueue(packet{at: c.now + c.transit(tn.id), from: tn.id, to: m.To, typ: m.Type,
				payload: append([]byte(nil), m.Payload...)})
		}
		tn.events = append(tn.events, rd.Events...)
		if c.trace {
			for _, e := range rd.Events {
				c.t.Logf("%v site %d: %v", c.now, tn.id, e)
			}
			for _, m := range rd.Messages {
				if m.Type == MsgVote2 || m.Type == MsgNewMaster || m.Type == MsgDupMaster {
					var d Decoded
					_ = DecodeMessage(m, &d)
					c.t.Logf("%v site %d -> %d: %v gen %d vote %v", c.now, tn.id, m.To, m.Type, d.Header.Gen, d.Vote)
				}
			}
		}
		tn.failed = append(tn.failed, rd.PermFailed...)
		tn.perm, tn.ckptOK = rd.PermLSN, rd.CheckpointOK
		for _, a := range rd.App {
			a.Payload = append([]byte(nil), a.Payload...)
			tn.apps = append(tn.apps, a)
		}
		if rd.Init != nil && rd.Init.Finish {
			tn.inits++
		}
		if err := tn.st.apply(&rd); err != nil {
			tn.applyErr = err
		}
		tn.n.Advance(rd)
		if rd.ListPages != nil {
			tn.n.PagesListed(rd.ListPages.LSN(), rd.ListPages.PageList())
		}
	}
	c.t.Fatalf("node %d: Ready never empties", tn.id)
}

func (c *cluster) transit(from uint16) time.Duration {
	if c.delay != nil {
		return c.delay(from)
	}
	return time.Millisecond
}

// enqueue keeps the queue ordered by arrival time (stable for equal times).
func (c *cluster) enqueue(p packet) {
	i := len(c.q)
	for i > 0 && c.q[i-1].at > p.at {
		i--
	}
	c.q = append(c.q, packet{})
	copy(c.q[i+1:], c.q[i:])
	c.q[i] = p
}

// deliver hands one packet to its destination(s).
func (c *cluster) deliver(p *packet) {
	for _, tn := range c.nodes {
		if tn.down || tn.id == p.from || (p.to != AllSites && p.to != tn.id) {
			continue
		}
		if c.cut[[2]uint16{p.from, tn.id}] {
			continue
		}
		pp := *p
		pp.to, pp.multicast = tn.id, p.to == AllSites
		if c.filter != nil && c.filter(&pp) {
			continue
		}
		if held, ok := c.deaf[tn.id]; ok {
			c.deaf[tn.id] = append(held, *p)
			continue
		}
		_ = tn.n.Step(c.now, Message{From: p.from, To: p.to, Type: p.typ, Payload: p.payload})
		c.flush(tn)
	}
}

// run advances time by d in 1 ms steps.
func (c *cluster) run(d time.Duration) {
	end := c.now + d
	for c.now < end {
		c.now += time.Millisecond
		c.stepOnce()
	}
}

func (c *cluster) stepOnce() {
	for len(c.q) > 0 && c.q[0].at <= c.now {
		p := c.q[0]
		c.q = c.q[1:]
		if c.nodeDown(p.from) {
			continue
		}
		c.deliver(&p)
	}
	for _, tn := range c.nodes {
		if _, deaf := c.deaf[tn.id]; tn.down || deaf || (c.stall != nil && c.stall(tn.id)) {
			continue
		}
		tn.n.Tick(c.now)
		c.flush(tn)
	}
}

// deafen makes a node stop ticking and receiving until wake.
func (c *cluster) deafen(id uint16) {
	if c.deaf == nil {
		c.deaf = map[uint16][]packet{}
	}
	c.deaf[id] = nil
}

// wake ends a node's deafness as a board's runtime does when it gets to
// run again: the timer first, then what arrived meanwhile, in order.
func (c *cluster) wake(id uint16) {
	held := c.deaf[id]
	delete(c.deaf, id)
	tn := c.node(id)
	tn.n.Tick(c.now)
	c.flush(tn)
	for _, p := range held {
		_ = tn.n.Step(c.now, Message{From: p.from, To: p.to, Type: p.typ, Payload: p.payload})
		c.flush(tn)
	}
}

func (c *cluster) nodeDown(id uint16) bool {
	for _, tn := range c.nodes {
		if tn.id == id {
			return tn.down
		}
	}
	return true
}

// runUntil steps until cond holds, failing the test after limit.
func (c *cluster) runUntil(what string, limit time.Duration, cond func() bool) {
	c.t.Helper()
	end := c.now + limit
	for !cond() {
		if c.now >= end {
			c.t.Fatalf("after %v: %s never happened\n%s", limit, what, c.dump())
		}
		c.now += time.Millisecond
		c.stepOnce()
	}
}

func (c *cluster) masters() []*tnode {
	var ms []*tnode
	for _, tn := range c.nodes {
		if !tn.down && tn.n.role == RoleMaster {
			ms = append(ms, tn)
		}
	}
	return ms
}

func (c *cluster) oneMaster() *tnode {
	c.runUntil("a single master", 20*time.Second, func() bool { return len(c.masters()) == 1 })
	return c.masters()[0]
}

// write commits a transaction on the master and tells its node.
func (c *cluster) write(m *tnode, puts ...string) CommitInfo {
	c.t.Helper()
	if err := m.n.CanWrite(); err != nil {
		c.t.Fatalf("CanWrite on %d: %v", m.id, err)
	}
	ci := m.st.commitTxn(puts...)
	m.n.Committed(c.now, ci)
	c.flush(m)
	return ci
}

// converged reports whether every live node has the master's content and
// is live.
func (c *cluster) converged() bool {
	ms := c.masters()
	if len(ms) != 1 {
		return false
	}
	h := ms[0].st.hash()
	for _, tn := range c.nodes {
		if tn.down {
			continue
		}
		if tn.st.hash() != h || (tn != ms[0] && tn.n.rs.sync != syncLive) {
			return false
		}
	}
	return true
}

func (c *cluster) dump() string {
	s := fmt.Sprintf("now=%v queued=%d\n", c.now, len(c.q))
	for _, tn := range c.nodes {
		st := tn.n.Status()
		s += fmt.Sprintf("  site %d down=%v role=%v master=%d gen=%d sync=%d end=%d applied=%d perm=%d lockout=%v err=%v drops=%v\n",
			tn.id, tn.down, st.Role, st.Master, st.Gen, tn.n.rs.sync, st.EndLSN, st.AppliedLSN, st.PermLSN,
			st.Lockout, tn.applyErr, st.Counters.Dropped)
	}
	return s
}

func hasEvent(evs []Event, k EventKind) bool {
	for _, e := range evs {
		if e.Kind == k {
			return true
		}
	}
	return false
}
