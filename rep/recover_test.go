package rep

import (
	"fmt"
	"testing"
	"time"
)

// TestEmptyRestartDoesNotAckStaleMaster: three sites, QUORUM. The master is
// cut off, the other two elect a new master that takes Perm writes, then that
// new master restarts with its memory lost and can reach only the stale
// master. It must not follow it (its acks would make the stale master's
// writes Perm, later rolled back by the site holding the newer gen): it waits
// until it has heard both other sites, then follows the newest master.
func TestEmptyRestartDoesNotAckStaleMaster(t *testing.T) {
	c, old := threeSites(t)
	var others []*tnode
	for _, tn := range c.nodes {
		if tn != old {
			others = append(others, tn)
		}
	}
	c.link(old, others[0], true)
	c.link(old, others[1], true)
	c.runUntil("a second master", 10*time.Second, func() bool { return len(c.masters()) == 2 })
	var nm, r *tnode
	for _, tn := range others {
		if tn.n.role == RoleMaster {
			nm = tn
		} else {
			r = tn
		}
	}
	perm := c.write(nm, "b")
	c.runUntil("perm on the new master", 5*time.Second, func() bool { return nm.perm >= perm.LSN })

	// The new master loses its memory and comes back seeing only the
	// stale master.
	c.crash(nm.id)
	c.link(old, nm, false)
	c.link(nm, r, true)
	c.restart(nm.id, true, StartClient)
	stale := c.write(old, "stale")
	c.run(2 * time.Second)
	if old.perm >= stale.LSN {
		t.Fatalf("stale master's write %d became Perm with the acks of an empty site\n%s", stale.LSN, c.dump())
	}
	if !nm.n.recovering || nm.n.Status().Master != NoMaster {
		t.Fatalf("empty site %d acted on half the group: recovering=%v master=%d\n%s",
			nm.id, nm.n.recovering, nm.n.Status().Master, c.dump())
	}

	c.healHolds(perm)
}

// TestEmptyRestartVotesAsIfItHadItsLog: three sites, QUORUM. A replica is
// cut off and falls behind; the master's write becomes Perm with the other
// replica's ack; the master then loses its memory, restarts, hears both
// replicas, and the one holding the write is cut off. The emptied site and
// the stale replica are a majority, but electing the stale one would lose
// the Perm write: the emptied site votes as if it still had the log it lost
// (its floor, the most current log it heard while recovering), so no
// master is elected until the holder is back, and it then holds the write.
func TestEmptyRestartVotesAsIfItHadItsLog(t *testing.T) {
	c, m := threeSites(t)
	var stale, holder *tnode
	for _, tn := range c.nodes {
		if tn == m {
			continue
		}
		if stale == nil {
			stale = tn
		} else {
			holder = tn
		}
	}
	c.link(stale, m, true)
	c.link(stale, holder, true)
	perm := c.write(m, "b")
	c.runUntil("perm with the holder's ack", 5*time.Second, func() bool { return m.perm >= perm.LSN })

	c.crash(m.id)
	c.link(stale, m, false)
	c.restart(m.id, true, StartClient)
	c.runUntil("the emptied site recovered", 5*time.Second, func() bool { return !m.n.recovering })
	if st := m.n.Status(); (logPoint{st.VoteFloorGen, st.VoteFloorEnd}).less(logPoint{gen: perm.Gen, end: perm.End}) {
		t.Fatalf("reported floor gen %d end %d below the Perm write (gen %d, end %d)\n%s",
			st.VoteFloorGen, st.VoteFloorEnd, perm.Gen, perm.End, c.dump())
	}
	c.link(holder, m, true)
	c.run(3 * time.Second)
	for _, tn := range c.masters() {
		if tn != holder {
			if _, err := tn.st.CommitAt(perm.LSN); err != nil {
				t.Fatalf("site %d elected without the Perm write %d\n%s", tn.id, perm.LSN, c.dump())
			}
		}
	}

	c.healHolds(perm)
}

// TestEmptyRestartKeepsPromiseHeard: five sites, QUORUM. Master 1 is cut off
// from 2, 3 and 4, which elect 2; site 4 voted for 2 but never hears from it
// as master, so it still follows no master and shows gen 1 (with its
// promise above it). Site 3, which voted for 2 too, loses its memory and
// comes back able to reach 1, 4 and 5 only: a majority of the others, none
// of which knows gen 2. It must not follow the old master 1 (its lost vote
// promised not to), or its ack and 5's would make 1's write Perm until 2's
// higher gen rolled it back. The promise 4 reports in its ALIVE is what tells
// it; it refuses 1, which re-elects above gen 2 with 3 and 5, and the write
// it then makes Perm survives the heal.
func TestEmptyRestartKeepsPromiseHeard(t *testing.T) {
	c := fiveSites(t)
	n := c.node

	// 2 learns nothing reaches 4 from it but votes.
	c.filter = func(p *packet) bool {
		return p.from == 2 && p.to == 4 && p.typ != MsgVote1 && p.typ != MsgVote2
	}
	for _, id := range []uint16{2, 3, 4} {
		c.link(n(1), n(id), true)
	}
	c.link(n(2), n(5), true)
	c.runUntil("site 2 elected by 2, 3 and 4", 10*time.Second, func() bool {
		return n(2).n.role == RoleMaster && n(4).n.Promised() >= n(2).n.gen && n(3).n.Status().Master == 2
	})
	if g := n(4).n.gen; g >= n(2).n.gen {
		t.Fatalf("site 4 knows gen %d already; the story needs it behind\n%s", g, c.dump())
	}

	c.crash(3)
	c.link(n(2), n(3), true)
	c.link(n(1), n(3), false)
	c.restart(3, true, StartClient)
	c.runUntil("site 3 recovered", 5*time.Second, func() bool { return !n(3).n.recovering })
	if p := n(3).n.Promised(); p < n(2).n.gen {
		t.Fatalf("site 3 recovered with promise %d, below the gen %d its lost vote elected (site 4 promised %d)\n%s",
			p, n(2).n.gen, n(4).n.Promised(), c.dump())
	}
	// Site 5 holds site 1's VOTE1 and never hears site 2's, so every
	// attempt waits out the election timeout (300 ms, doubling).
	var wm *tnode
	c.runUntil(fmt.Sprintf("a master above gen %d on the side of 1, 3 and 5 (a majority)", n(2).n.gen), 5*time.Second, func() bool {
		for _, tn := range c.masters() {
			if tn.id != 2 && tn.n.CanWrite() == nil && tn.n.gen > n(2).n.gen {
				wm = tn
				return true
			}
		}
		return false
	})
	w := c.write(wm, "w")
	c.runUntil("the write Perm", 2*time.Second, func() bool { return wm.perm >= w.LSN })

	c.healHolds(w)
}

// TestTwoEmptyVotersWaitForMemory: five sites, QUORUM. Master 1 is cut off
// from 2, 3 and 4, which elect 2; then 3 and 4, both voters of 2, lose their
// memory and come back able to reach 1 and 5 only (and each other). Two
// memory losses in five, a minority: a write made Perm must survive. An
// emptied site knows nothing of gen 2, so the emptied ones must not count
// toward the majority a recovering site has to hear; otherwise 3 hears 1, 4
// and 5, follows 1, and 1's write becomes Perm with 3's and 5's acks until
// 2's gen rolls it back at the heal.
func TestTwoEmptyVotersWaitForMemory(t *testing.T) {
	c := fiveSites(t)
	n := c.node
	for _, id := range []uint16{2, 3, 4} {
		c.link(n(1), n(id), true)
	}
	c.link(n(2), n(5), true)
	c.runUntil("site 2 elected by 2, 3 and 4", 10*time.Second, func() bool {
		return n(2).n.role == RoleMaster && n(3).n.Status().Master == 2 && n(4).n.Status().Master == 2
	})

	for _, id := range []uint16{3, 4} {
		c.crash(id)
		c.link(n(2), n(id), true)
		c.link(n(1), n(id), false)
	}
	c.restart(3, true, StartClient)
	c.restart(4, true, StartClient)
	c.run(2 * time.Second)
	if st := n(3).n.Status(); st.Witnesses != 2 || st.WitnessesNeeded != 3 {
		t.Errorf("site 3 reports %d of %d witnesses heard; want 2 (sites 1 and 5) of 3", st.Witnesses, st.WitnessesNeeded)
	}
	if !n(3).n.Status().Recovering || !n(4).n.Status().Recovering {
		t.Fatalf("an emptied voter of gen %d recovered hearing only 1, 5 and the other emptied one (3 recovering %v, 4 recovering %v)\n%s",
			n(2).n.gen, n(3).n.recovering, n(4).n.recovering, c.dump())
	}
	if n(1).n.role == RoleMaster && n(1).n.CanWrite() == nil {
		w := c.write(n(1), "w")
		c.run(time.Second)
		if n(1).perm >= w.LSN {
			t.Fatalf("old master 1 (gen %d) made write %d Perm while gen %d exists\n%s", n(1).n.gen, w.LSN, n(2).n.gen, c.dump())
		}
	}

	c.filter = nil
	c.cut = map[[2]uint16]bool{}
	c.runUntil("convergence after healing", 20*time.Second, c.converged)
	for _, tn := range c.nodes {
		if st := tn.n.Status(); st.Recovering || st.VoteFloorEnd != 0 {
			t.Errorf("site %d converged but reports recovering %v, vote floor %d/%d", tn.id, st.Recovering, st.VoteFloorGen, st.VoteFloorEnd)
		}
	}
}

// healHolds heals every cut and filter, waits for convergence and checks
// that the final master holds the Perm write w.
func (c *cluster) healHolds(w CommitInfo) {
	c.t.Helper()
	c.filter = nil
	c.cut = map[[2]uint16]bool{}
	c.runUntil("convergence after healing", 20*time.Second, c.converged)
	m := c.masters()[0]
	if ci, err := m.st.CommitAt(w.LSN); err != nil || ci.Chain != w.Chain {
		c.t.Fatalf("Perm write %d lost on final master %d: %v\n%s", w.LSN, m.id, err, c.dump())
	}
}

// threeSites is a three-site QUORUM cluster and its master, converged
// after a first write.
func threeSites(t *testing.T) (*cluster, *tnode) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	m := c.oneMaster()
	c.write(m, "a")
	c.runUntil("convergence", 5*time.Second, c.converged)
	return c, m
}

// fiveSites is a five-site QUORUM cluster whose master is site 1 (the
// highest priority, then 2), converged after a first write.
func fiveSites(t *testing.T) *cluster {
	prio := map[uint16]uint32{1: 200, 2: 150, 3: 100, 4: 100, 5: 100}
	c := newCluster(t, []uint16{1, 2, 3, 4, 5}, func(cfg *Config) { cfg.Priority = prio[cfg.Site] })
	c.startAll()
	c.runUntil("site 1 master and everyone live", 10*time.Second, func() bool {
		ms := c.masters()
		return len(ms) == 1 && ms[0].id == 1 && c.converged()
	})
	c.write(c.node(1), "a")
	c.runUntil("convergence", 5*time.Second, c.converged)
	return c
}
