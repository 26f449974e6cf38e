package rep

import (
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
