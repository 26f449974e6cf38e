package rep

import (
	"errors"
	"testing"
	"time"
)

func TestClusterElectReplicate(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	m := c.oneMaster()
	if !hasEvent(m.events, EventElected) || !hasEvent(m.events, EventMaster) {
		t.Fatalf("master events %v", m.events)
	}
	var last CommitInfo
	for i := 0; i < 20; i++ {
		last = c.write(m, "k", "v")
		c.run(2 * time.Millisecond)
	}
	c.runUntil("convergence", 5*time.Second, c.converged)
	c.runUntil("perm", time.Second, func() bool { return m.perm >= last.LSN })
	for _, tn := range c.nodes {
		if tn != m && !hasEvent(tn.events, EventStartupDone) {
			t.Errorf("site %d: no STARTUP_DONE in %v", tn.id, tn.events)
		}
	}
	t.Logf("%s sent=%v", c.dump(), c.sent)
	if len(m.failed) != 0 {
		t.Errorf("perm failed: %v", m.failed)
	}
}

func TestClusterFailoverAndRejoin(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3, 4, 5}, nil)
	c.startAll()
	m := c.oneMaster()
	var perms []CommitInfo
	for i := 0; i < 10; i++ {
		perms = append(perms, c.write(m, "a"))
		c.run(3 * time.Millisecond)
	}
	c.runUntil("perm", time.Second, func() bool { return m.perm >= perms[len(perms)-1].LSN })
	c.crash(m.id)
	c.runUntil("a new master", 10*time.Second, func() bool { return len(c.masters()) == 1 })
	nm := c.masters()[0]
	if nm == m {
		t.Fatal("crashed master still master")
	}
	// Every permanent commit survived the failover (QUORUM + majority elections).
	for _, p := range perms {
		if ci, err := nm.st.CommitAt(p.LSN); err != nil || ci.Chain != p.Chain {
			t.Fatalf("perm commit %d lost on the new master: %v", p.LSN, err)
		}
	}
	if nm.n.Status().Gen <= 1 {
		t.Fatalf("new master gen %d", nm.n.Status().Gen)
	}
	c.write(nm, "b")
	c.restart(m.id, false, StartClient)
	c.runUntil("convergence after rejoin", 10*time.Second, c.converged)
	if m.n.Status().Master != nm.id {
		t.Fatalf("old master follows %d", m.n.Status().Master)
	}
	// A board that lost its memory rebuilds through internal init.
	nm.st.checkpoint(true)
	c.write(nm, "c")
	victim := c.node(2)
	if victim == nm {
		victim = c.node(3)
	}
	c.crash(victim.id)
	c.restart(victim.id, true, StartClient)
	c.runUntil("convergence after memory loss", 10*time.Second, c.converged)
	if victim.inits != 1 {
		t.Fatalf("site %d finished %d inits", victim.id, victim.inits)
	}
}

func TestPriorityZeroNeverMaster(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, func(cfg *Config) {
		if cfg.Site != 3 {
			cfg.Priority = 0
		}
	})
	c.startAll()
	if m := c.oneMaster(); m.id != 3 {
		t.Fatalf("site %d (priority 0) became master", m.id)
	}
	c.crash(3)
	c.run(3 * time.Second)
	if ms := c.masters(); len(ms) != 0 {
		t.Fatalf("priority-0 site %d became master", ms[0].id)
	}
}

func TestTwoSiteGroups(t *testing.T) {
	for _, strict := range []bool{false, true} {
		c := newCluster(t, []uint16{1, 2}, func(cfg *Config) { cfg.TwoSiteStrict = strict })
		c.startAll()
		m := c.oneMaster()
		c.write(m, "x")
		c.runUntil("convergence", 5*time.Second, c.converged)
		c.crash(m.id)
		c.run(5 * time.Second)
		got := len(c.masters())
		if strict && got != 0 {
			t.Fatal("TwoSiteStrict: the survivor elected itself alone")
		}
		if !strict && got != 1 {
			t.Fatal("two-site group: the survivor did not take over")
		}
	}
}

func TestMembershipLearnedSiteCountsOnceCaughtUp(t *testing.T) {
	s := startMaster(t, func(c *Config) { c.Peers = []uint16{2}; c.AckPolicy = AckAll })
	c1 := s.st.commitTxn("a")
	s.n.Committed(s.now, c1)
	s.ready()
	// Site 7 announces itself: NEWSITE event and relay, but it does not
	// count toward ALL until it has caught up to the commit at its join.
	o := s.recv(mk(7, MsgNewClient, Header{Priority: 50, Master: NoMaster}))
	if !hasEvent(o.events, EventNewSite) || len(o.only(MsgNewSite)) != 1 || len(o.only(MsgNewMaster)) != 1 {
		t.Fatalf("new site: events %v msgs %v", o.events, o.msgs)
	}
	o = s.recv(ackFrom(2, 1, c1.LSN, 0))
	if o.perm != c1.LSN {
		t.Fatalf("perm %d: a not-yet-caught-up site held back ALL", o.perm)
	}
	o = s.recv(ackFrom(7, 1, c1.LSN, 0))
	c2 := s.st.commitTxn("b")
	s.n.Committed(s.now, c2)
	o = s.recv(ackFrom(2, 1, c2.LSN, 0))
	if o.perm >= c2.LSN {
		t.Fatal("caught-up site 7 not counted by ALL")
	}
	o = s.recv(ackFrom(7, 1, c2.LSN, 0))
	if o.perm != c2.LSN {
		t.Fatalf("perm %d after both acked", o.perm)
	}
	st := s.n.Status()
	if len(st.Sites) != 2 || !st.Sites[1].Learned || !st.Sites[1].CaughtUp {
		t.Fatalf("status sites %+v", st.Sites)
	}
}

func TestAppMessages(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	m := c.oneMaster()
	var r *tnode
	for _, tn := range c.nodes {
		if tn != m {
			r = tn
			break
		}
	}
	r.n.SendApp(m.id, false, []byte("put k v"))
	c.flush(r)
	c.runUntil("APP at the master", time.Second, func() bool { return len(m.apps) == 1 })
	if a := m.apps[0]; a.Type != MsgApp || a.From != r.id || string(a.Payload) != "put k v" {
		t.Fatalf("master got %+v", a)
	}
	m.n.SendApp(r.id, true, []byte("ok"))
	c.flush(m)
	c.runUntil("APP_REPLY at the replica", time.Second, func() bool { return len(r.apps) == 1 })
	if a := r.apps[0]; a.Type != MsgAppReply || string(a.Payload) != "ok" {
		t.Fatalf("replica got %+v", a)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Site: AllSites},
		{Site: 1, Peers: []uint16{AllSites}},
		{Site: 1, AckPolicy: 9},
		{Site: 1, ClockSkew: 0.5},
		{Site: 1, HeartbeatSend: time.Second, HeartbeatMonitor: time.Second},
		{Site: 1, Leases: true, LeaseTimeout: 10 * time.Millisecond},
		{Site: 1, MaxMessageBytes: 100},
		{Site: 1, ReRequestMin: time.Second, ReRequestMax: time.Millisecond},
		{Site: 1, AckTimeout: -1},
	} {
		if _, err := NewNode(cfg, newMemStore()); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", cfg, err)
		}
	}
	if _, err := NewNode(Config{Site: 1}, nil); !errors.Is(err, ErrBadConfig) {
		t.Errorf("nil storage: %v", err)
	}
	n, err := NewNode(Config{Site: 1}, newMemStore())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Step(0, Message{From: 2, Type: MsgAlive, Payload: make([]byte, HeaderSize)}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Step before Start: %v", err)
	}
}

func TestElectAndStepDown(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	m := c.oneMaster()
	gen := m.n.Status().Gen
	// Phase 0: a master told to elect re-announces itself.
	m.n.Elect(c.now)
	c.flush(m)
	c.run(50 * time.Millisecond)
	if ms := c.masters(); len(ms) != 1 || ms[0] != m || m.n.Status().Gen != gen {
		t.Fatalf("Elect on the master changed the master: %s", c.dump())
	}
	// A replica's Elect holds a real election; the master's re-announcement
	// ends it with the master kept.
	var r *tnode
	for _, tn := range c.nodes {
		if tn != m {
			r = tn
			break
		}
	}
	r.n.Elect(c.now)
	c.flush(r)
	if !r.n.Status().ElectionRunning {
		t.Fatal("Elect on a replica started no election")
	}
	c.runUntil("election over", 5*time.Second, func() bool { return !r.n.Status().ElectionRunning && r.n.Status().Master != NoMaster })
	// StepDown: the master becomes a replica (CLIENT), someone is elected.
	m.n.StepDown(c.now)
	c.flush(m)
	if m.n.Status().Role != RoleReplica || !hasEvent(m.events, EventClient) {
		t.Fatalf("after StepDown: %v %v", m.n.Status().Role, m.events)
	}
	c.runUntil("a master after step-down", 10*time.Second, func() bool { return len(c.masters()) == 1 })
	nm := c.masters()[0]
	if nm.n.Status().Gen <= gen {
		t.Fatalf("new master gen %d not above %d", nm.n.Status().Gen, gen)
	}
	c.write(nm, "x")
	c.runUntil("convergence", 5*time.Second, c.converged)
	c.run(5 * time.Millisecond) // the last acks
	st := nm.n.Status()
	if st.Counters.MessagesOut == 0 || len(st.Sites) != 2 || st.Role.String() != "master" {
		t.Fatalf("status %+v", st)
	}
	for _, s := range st.Sites {
		if s.AckedLSN == 0 || s.LagBytes != 0 || s.LastHeard == 0 {
			t.Fatalf("site status %+v", s)
		}
	}
}

func TestStringers(t *testing.T) {
	for _, s := range []string{MsgLogMore.String(), MsgType(99).String(), AckQuorum.String(), AckPolicy(9).String(),
		RoleElecting.String(), EventDupMaster.String(), DropBufferFull.String(), DropReason(99).String(),
		(Event{Kind: EventNewSite, Site: 4}).String()} {
		if s == "" {
			t.Fatal("empty name")
		}
	}
	if DefaultConfig().HeartbeatSend == 0 {
		t.Fatal("no default heartbeat")
	}
	var c Counters
	c.Dropped[DropMalformed], c.Dropped[DropStaleGen] = 2, 3
	if c.DroppedTotal() != 5 {
		t.Fatal("DroppedTotal")
	}
}
