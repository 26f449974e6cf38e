package rep

import (
	"testing"
	"time"
)

// TestEmptyRestartDoesNotAckStaleMaster: three sites, QUORUM. The master is
// cut off, the other two elect a new master that takes Perm writes, then that
// new master restarts with its memory lost and can reach only the stale
// master. It must not follow it (its acks would make the stale master's
// writes Perm, later rolled back by the site holding the newer gen): it waits
// until it has heard a majority, then follows the newest master.
func TestEmptyRestartDoesNotAckStaleMaster(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	old := c.oneMaster()
	c.write(old, "a")
	c.runUntil("convergence", 5*time.Second, c.converged)
	var others []*tnode
	for _, tn := range c.nodes {
		if tn != old {
			others = append(others, tn)
		}
	}
	cut := func(a, b *tnode, on bool) {
		c.cut[[2]uint16{a.id, b.id}], c.cut[[2]uint16{b.id, a.id}] = on, on
	}
	cut(old, others[0], true)
	cut(old, others[1], true)
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
	cut(old, nm, false)
	cut(nm, r, true)
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

	c.cut = map[[2]uint16]bool{}
	c.runUntil("convergence after healing", 10*time.Second, c.converged)
	m := c.masters()[0]
	if ci, err := m.st.CommitAt(perm.LSN); err != nil || ci.Chain != perm.Chain {
		t.Fatalf("Perm write %d lost on final master %d: %v\n%s", perm.LSN, m.id, err, c.dump())
	}
}
