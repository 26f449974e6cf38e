package rep

import (
	"testing"
	"time"
)

func masterMsg(from uint16, t MsgType, gen uint32, end uint64, body ...[]byte) Message {
	m := mk(from, t, Header{Gen: gen, End: end, Priority: 100, Flags: FlagMaster, Master: from}, body...)
	m.To = AllSites
	return m
}

func TestDupMasterLowerStepsDown(t *testing.T) {
	s := startMaster(t, nil) // gen 1
	end := s.st.EndLSN()
	// Same gen, longer log: the other master wins.
	o := s.recv(masterMsg(3, MsgHeartbeat, 1, end+100, u64s(0)))
	if s.n.role == RoleMaster || !hasEvent(o.events, EventDupMaster) || s.n.counters.DupMasters != 1 {
		t.Fatalf("lost DUPMASTER but role %v events %v", s.n.role, o.events)
	}
	if s.n.master != 3 || len(o.only(MsgVerifyReq)) != 1 {
		t.Fatalf("did not re-sync with the winner: master %d msgs %v", s.n.master, o.msgs)
	}
	if err := s.n.CanWrite(); err != ErrLockout {
		t.Fatalf("CanWrite while re-syncing: %v", err)
	}
}

func TestDupMasterHigherTellsOther(t *testing.T) {
	s := startMaster(t, nil)
	end := s.st.EndLSN()
	for _, tc := range []struct {
		gen uint32
		end uint64
		src uint16
	}{
		{1, end - 1, 3}, // same gen, shorter log
		{1, end, 0},     // same gen and log: lower site id loses
		{0, end + 1000, 3},
	} {
		o := s.recv(masterMsg(tc.src, MsgNewMaster, tc.gen, tc.end))
		if s.n.role != RoleMaster {
			t.Fatalf("%+v: stepped down", tc)
		}
		if d := o.only(MsgDupMaster); len(d) != 1 || d[0].To != tc.src {
			t.Fatalf("%+v: no DUPMASTER to the loser: %v", tc, o.msgs)
		}
	}
	// A DUPMASTER from a master that does not beat us is answered, not obeyed.
	s.recv(masterMsg(3, MsgDupMaster, 1, 0))
	if s.n.role != RoleMaster {
		t.Fatal("obeyed a losing DUPMASTER")
	}
	// Any message from a newer generation makes this master stale.
	o := s.recv(mk(2, MsgAck, Header{Gen: 2, Master: 3, Priority: 100}, u64s(0, 0)))
	if s.n.role == RoleMaster || !hasEvent(o.events, EventDupMaster) {
		t.Fatal("stayed master after seeing a newer generation")
	}
}

func TestPartitionedMasterStepsDownAndRollsBack(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, nil)
	c.startAll()
	old := c.oneMaster()
	perm := c.write(old, "before")
	c.runUntil("perm before partition", time.Second, func() bool { return old.perm >= perm.LSN })
	// Cut the master off; the others elect a new one.
	for _, tn := range c.nodes {
		if tn != old {
			c.cut[[2]uint16{old.id, tn.id}] = true
			c.cut[[2]uint16{tn.id, old.id}] = true
		}
	}
	lost := c.write(old, "lost")
	c.runUntil("a second master", 10*time.Second, func() bool { return len(c.masters()) == 2 })
	c.runUntil("PERM_FAILED on the cut-off master", 5*time.Second, func() bool {
		for _, l := range old.failed {
			if l == lost.LSN {
				return true
			}
		}
		return false
	})
	var nm *tnode
	for _, m := range c.masters() {
		if m != old {
			nm = m
		}
	}
	c.write(nm, "after")
	// Heal: the stale master learns of the newer gen, steps down, rolls back.
	c.cut = map[[2]uint16]bool{}
	c.runUntil("convergence", 10*time.Second, c.converged)
	if c.masters()[0] != nm {
		t.Fatal("the stale master won")
	}
	if !hasEvent(old.events, EventDupMaster) || len(rollbackEvents(old)) == 0 {
		t.Fatalf("old master events %v", old.events)
	}
	if _, err := old.st.CommitAt(perm.LSN); err != nil {
		t.Fatalf("permanent commit lost: %v", err)
	}
}
