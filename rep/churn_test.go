package rep

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// boardTimers are the board runtime's defaults: fast heartbeats and
// elections, which exposed election churn after a master died.
func boardTimers(leases bool) func(*Config) {
	return func(c *Config) {
		c.HeartbeatSend = 2 * time.Millisecond
		c.HeartbeatMonitor = 10 * time.Millisecond
		c.ElectionTimeout = 10 * time.Millisecond
		c.ElectionBackoffMax = 200 * time.Millisecond
		c.LeaseTimeout = 20 * time.Millisecond
		c.Leases = leases
	}
}

// TestFailoverSettles kills the master of a three-site group and checks the
// two survivors settle on one master for good: no further elections, egen and
// gen frozen, for many heartbeat-monitor periods.
func TestFailoverSettles(t *testing.T) {
	for _, leases := range []bool{false, true} {
		for round := 0; round < 8; round++ {
			name := fmt.Sprintf("leases=%v/round=%d", leases, round)
			t.Run(name, func(t *testing.T) {
				c := newCluster(t, []uint16{1, 2, 3}, boardTimers(leases))
				if round >= 2 {
					// A loaded machine: transit 1-16 ms (beyond the
					// heartbeat monitor), ticks late now and then, as on
					// the boards that showed the churn. It ends before the
					// quiet period: the group must then settle.
					rng := rand.New(rand.NewPCG(uint64(round), 7))
					c.delay = func(uint16) time.Duration {
						return time.Millisecond + time.Duration(rng.Int64N(int64(15*time.Millisecond)))
					}
					c.stall = func(uint16) bool { return rng.IntN(4) == 0 }
				}
				c.startAll()
				m := c.oneMaster()
				for i := 0; i < 5; i++ {
					c.write(m, "a")
					c.run(time.Millisecond)
				}
				// Crash masters in turn so later rounds start from a
				// group that already failed over.
				for k := 0; k <= round%2; k++ {
					c.run(50 * time.Millisecond)
					c.crash(m.id)
					c.runUntil("a new master", 5*time.Second, func() bool {
						ms := c.masters()
						return len(ms) == 1 && ms[0] != m
					})
					old := m
					m = c.masters()[0]
					if k < round%2 {
						c.restart(old.id, false, StartClient)
						c.runUntil("rejoin", 5*time.Second, c.converged)
					}
				}
				// Let the election settle, then demand quiet.
				c.run(300 * time.Millisecond)
				c.delay, c.stall = nil, nil
				c.run(500 * time.Millisecond)
				type snap struct {
					master    uint16
					gen, egen uint32
					elections uint64
				}
				take := func() map[uint16]snap {
					s := map[uint16]snap{}
					for _, tn := range c.nodes {
						if tn.down {
							continue
						}
						st := tn.n.Status()
						s[tn.id] = snap{st.Master, st.Gen, st.Egen, st.Counters.Elections}
					}
					return s
				}
				before := take()
				c.run(100 * c.node(1).cfg.HeartbeatMonitor)
				after := take()
				if len(c.masters()) != 1 {
					t.Fatalf("%d masters after settling\n%s", len(c.masters()), c.dump())
				}
				for id, b := range before {
					if a := after[id]; a != b {
						t.Errorf("site %d did not settle: before %+v after %+v\n%s", id, b, a, c.dump())
					}
				}
			})
		}
	}
}

// TestRefusalCarriesPromise: a replica's egen raised by elections in which
// it voted only for itself promises nothing. A master must not step down
// (and re-elect) for it; only for a refusal carrying a promise above its gen.
func TestRefusalCarriesPromise(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, boardTimers(false))
	c.startAll()
	m := c.oneMaster()
	c.runUntil("convergence", 5*time.Second, c.converged)
	var r *tnode
	for _, tn := range c.nodes {
		if tn != m {
			r = tn
			break
		}
	}
	gen := m.n.Status().Gen
	// Lone elections at r (its master silent for it, nobody answering)
	// raise its egen well above the master's gen without any VOTE2 to
	// another site.
	for _, tn := range c.nodes {
		if tn != r {
			c.cut[[2]uint16{tn.id, r.id}], c.cut[[2]uint16{r.id, tn.id}] = true, true
		}
	}
	c.runUntil("egen above gen", 5*time.Second, func() bool { return r.n.Status().Egen > gen+3 })
	if r.n.Promised() > gen {
		t.Fatalf("site %d promised %d alone", r.id, r.n.Promised())
	}
	// r refuses m (here: r believes m stale); the refusal carries r's
	// promise, which binds m to nothing.
	r.n.sendRefusal(m.id)
	c.cut = map[[2]uint16]bool{}
	c.flush(r)
	c.run(100 * time.Millisecond)
	if m.n.role != RoleMaster || m.n.Status().Gen != gen || m.n.Counters().DupMasters != 0 {
		t.Fatalf("master %d stepped down for an egen that promised nothing\n%s", m.id, c.dump())
	}
	c.runUntil("r rejoins", 5*time.Second, c.converged)
}

// quietGroup starts a three-site group with board timers, writes a little
// and returns the master and the two replicas once all is quiet.
func quietGroup(t *testing.T, mod func(*Config)) (c *cluster, m, r1, r2 *tnode) {
	c = newCluster(t, []uint16{1, 2, 3}, func(cfg *Config) {
		boardTimers(false)(cfg)
		if mod != nil {
			mod(cfg)
		}
	})
	c.startAll()
	m = c.oneMaster()
	for i := 0; i < 5; i++ {
		c.write(m, "a")
		c.run(time.Millisecond)
	}
	c.runUntil("convergence", 5*time.Second, c.converged)
	c.run(100 * time.Millisecond)
	for _, tn := range c.nodes {
		switch {
		case tn == m:
		case r1 == nil:
			r1 = tn
		default:
			r2 = tn
		}
	}
	return c, m, r1, r2
}

// A replica that could not run for many heartbeat-monitor periods (its
// runtime busy applying a long catch-up, or descheduled on a loaded
// machine) has not observed its master's silence: the master's messages are
// waiting for it. It must not elect on waking; it first hears them.
func TestDeafReplicaDoesNotElect(t *testing.T) {
	c, m, r1, _ := quietGroup(t, nil)
	gen, elections := m.n.Status().Gen, r1.n.Counters().Elections
	for range 5 {
		c.deafen(r1.id)
		c.run(100 * time.Millisecond)
		c.write(m, "b")
		c.wake(r1.id)
		c.run(50 * time.Millisecond)
	}
	if got := r1.n.Counters().Elections; got != elections || len(c.masters()) != 1 || c.masters()[0] != m || m.n.Status().Gen != gen {
		t.Fatalf("site %d started %d elections after waking from deafness; master %d gen %d -> %v\n%s",
			r1.id, got-elections, m.id, gen, c.masters(), c.dump())
	}
	c.runUntil("convergence", time.Second, c.converged)
	// A master that really died while a replica was deaf is still
	// detected once the replica has listened for a heartbeat-monitor period.
	c.deafen(r1.id)
	c.run(50 * time.Millisecond)
	c.crash(m.id)
	c.run(50 * time.Millisecond)
	c.wake(r1.id)
	c.runUntil("a new master", time.Second, func() bool { ms := c.masters(); return len(ms) == 1 && ms[0] != m })
}

// A VOTE1 a replica received while it still heard its master is of an
// election that was a false alarm for the group (the master re-announced
// itself): the replica must not count it when, later, it holds an election
// of its own. Counting it, with its own VOTE1, made a majority: the replica
// cast a VOTE2 for the other site, which was no longer electing, and the
// promise of that vote (an egen above the master's gen) made it refuse the
// healthy master, which stepped down: a needless change of master.
func TestStaleVoteDoesNotDeposeMaster(t *testing.T) {
	// r1 prefers r2 as master (lower priority), so its VOTE2 goes there.
	c, m, r1, r2 := quietGroup(t, nil)
	r1.n.cfg.Priority = 50
	r1.n.el = newElector(r1.n.cfg)
	r1.n.el.ObserveEgen(max(r1.n.gen, r1.n.promised))
	c.run(50 * time.Millisecond)
	gen := m.n.Status().Gen
	// r2 misses the master for a heartbeat-monitor period: it elects,
	// the master re-announces itself, r2 follows it again.
	cut := func(from, to uint16, on bool) { c.cut[[2]uint16{from, to}] = on }
	cut(m.id, r2.id, true)
	c.runUntil("r2 elects", time.Second, func() bool { return r2.n.Status().ElectionRunning })
	cut(m.id, r2.id, false)
	c.runUntil("r2 follows the master again", time.Second, func() bool {
		return !r2.n.Status().ElectionRunning && r2.n.Status().Master == m.id
	})
	c.run(50 * time.Millisecond)
	// Later r1 misses the master once.
	cut(m.id, r1.id, true)
	c.runUntil("r1 elects", time.Second, func() bool { return r1.n.Status().ElectionRunning })
	cut(m.id, r1.id, false)
	c.run(200 * time.Millisecond)
	if ms := c.masters(); len(ms) != 1 || ms[0] != m || m.n.Status().Gen != gen || m.n.Counters().DupMasters != 0 {
		t.Fatalf("a false alarm changed the master: was %d gen %d; r1 promised %d\n%s", m.id, gen, r1.n.Promised(), c.dump())
	}
}

// TestLostMasterVotingIsWaitedFor: a site whose election began with its
// master's silence counts that master absent and votes once every other
// electable site's VOTE1 is in, without waiting out the timeout for a vote
// that will not come. When the master comes back (here restarted with empty
// memory) and votes, that has to end: those sites then voted before a slow
// site's VOTE1 arrived, at every attempt, while the restarted site waited for
// it and voted for it, and the votes split without end (sim seed 110122:
// sixteen seconds of elections and no master).
func TestLostMasterVotingIsWaitedFor(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3, 4}, func(cfg *Config) {
		boardTimers(false)(cfg)
		if cfg.Site == 4 {
			cfg.Priority = 200 // the best candidate, and the slow one
		}
	})
	c.start(1, StartMaster)
	for _, id := range []uint16{2, 3, 4} {
		c.start(id, StartClient)
	}
	c.runUntil("convergence", time.Second, c.converged)
	if m := c.masters()[0]; m.id != 1 {
		t.Fatalf("site %d is master, want 1", m.id)
	}
	c.write(c.node(1), "a")
	c.runUntil("convergence", time.Second, c.converged)

	// Site 4 cut off: sites 2 and 3 hold elections they cannot win (three
	// of four electable sites make a quorum), counting site 1 absent.
	for _, id := range []uint16{1, 2, 3} {
		c.link(c.node(id), c.node(4), true)
	}
	c.crash(1)
	c.runUntil("sites 2 and 3 electing", time.Second, func() bool {
		return c.node(2).n.role == RoleElecting && c.node(3).n.role == RoleElecting
	})
	c.run(50 * time.Millisecond)
	c.restart(1, true, StartClient)
	c.runUntil("site 1 done recovering", time.Second, func() bool { return !c.node(1).n.recovering })

	// Site 4 back, its messages taking 5 ms (the others' 1 ms).
	c.delay = func(from uint16) time.Duration {
		if from == 4 {
			return 5 * time.Millisecond
		}
		return time.Millisecond
	}
	for _, id := range []uint16{1, 2, 3} {
		c.link(c.node(id), c.node(4), false)
	}
	healed := c.now
	c.runUntil("a master", 10*time.Second, func() bool { return len(c.masters()) == 1 })
	if m := c.masters()[0]; m.id != 4 {
		t.Errorf("site %d elected, want 4 (the most current with the highest priority)", m.id)
	}
	// Every attempt that waits for all four VOTE1s elects site 4; a few
	// attempts' worth of time allows for one begun during the healing.
	took := c.now - healed
	t.Logf("site 4 elected %v after it came back", took)
	if took > 100*time.Millisecond {
		t.Errorf("a master %v after site 4 came back; each attempt in which sites 2 and 3 counted the voting site 1 absent split the votes\n%s", took, c.dump())
	}
	c.runUntil("convergence", 5*time.Second, c.converged)
}

// A master heard again after more than half the monitor of silence is
// counted (Counters.MasterSilences): the warning before elections begin.
// Shorter gaps, within a few heartbeats, are not.
func TestMasterSilencesCounted(t *testing.T) {
	c, m, r1, r2 := quietGroup(t, nil)
	elections := r1.n.Counters().Elections + r2.n.Counters().Elections
	stop := func(d time.Duration) {
		c.deafen(m.id)
		c.run(d)
		c.wake(m.id)
		c.run(20 * time.Millisecond)
	}
	stop(2 * time.Millisecond)
	for _, r := range []*tnode{r1, r2} {
		if got := r.n.Counters().MasterSilences; got != 0 {
			t.Fatalf("site %d counted %d master silences after a 2ms stop at a 10ms monitor, want 0", r.id, got)
		}
	}
	stop(7 * time.Millisecond)
	for _, r := range []*tnode{r1, r2} {
		if got := r.n.Counters().MasterSilences; got != 1 {
			t.Fatalf("site %d counted %d master silences after a 7ms stop at a 10ms monitor, want 1", r.id, got)
		}
	}
	if got := r1.n.Counters().Elections + r2.n.Counters().Elections; got != elections {
		t.Fatalf("%d elections after a 7ms stop at a 10ms monitor", got-elections)
	}
}
