package rep

import (
	"errors"
	"testing"
	"time"
)

// A master whose process stopped for more than half the monitor and came
// back was starved, not dead: its replicas then wait HeartbeatMonitorMax
// for it, so a longer starvation soon after does not depose it, while a
// master that stayed regular (for SilenceMemory monitors, or a new one) is
// again replaced after HeartbeatMonitor.
func TestMonitorStretchesForAStarvedMaster(t *testing.T) {
	const short, long = 10 * time.Millisecond, 20 * time.Millisecond
	c, m, r1, r2 := quietGroup(t, func(cfg *Config) { cfg.HeartbeatMonitorMax = long })
	replicas := []*tnode{r1, r2}
	monitors := func(want time.Duration, when string) {
		t.Helper()
		for _, r := range replicas {
			if got := r.n.Status().Monitor; got != want {
				t.Fatalf("%s: site %d monitors its master for %v, want %v\n%s", when, r.id, got, want, c.dump())
			}
		}
	}
	elections := func() uint64 { return r1.n.Counters().Elections + r2.n.Counters().Elections }
	starve := func(d time.Duration) {
		c.deafen(m.id)
		c.run(d)
		c.wake(m.id)
		c.run(20 * time.Millisecond)
	}
	monitors(short, "a regular master")
	gen, el := m.n.Status().Gen, elections()

	starve(7 * time.Millisecond)
	monitors(long, "after the master stopped for 7ms")
	for _, r := range replicas {
		if r.n.Counters().MasterSilences != 1 {
			t.Fatalf("site %d counted %d master silences, want 1", r.id, r.n.Counters().MasterSilences)
		}
	}
	// Past the monitor, within the stretched one: no election.
	starve(15 * time.Millisecond)
	if elections() != el || len(c.masters()) != 1 || c.masters()[0] != m || m.n.Status().Gen != gen {
		t.Fatalf("a master starved for 15ms after an earlier 7ms was deposed (%d elections)\n%s", elections()-el, c.dump())
	}
	c.write(m, "after")
	c.runUntil("convergence", time.Second, c.converged)

	// Regular for SilenceMemory monitors: the short monitor again, and the
	// same starvation now starts an election.
	c.run(SilenceMemory * short)
	monitors(short, "after the master was regular for SilenceMemory monitors")
	starve(15 * time.Millisecond)
	if elections() == el {
		t.Fatalf("a master regular for %v then silent for 15ms raised no election at a 10ms monitor\n%s", SilenceMemory*short, c.dump())
	}
	m = c.oneMaster()
	c.runUntil("convergence", time.Second, c.converged)

	// A starved master that then dies is replaced after the long monitor.
	starve(7 * time.Millisecond)
	var alive []*tnode
	for _, r := range c.nodes {
		if r != m {
			alive = append(alive, r)
		}
	}
	replicas = alive
	monitors(long, "after the new master stopped for 7ms")
	el = elections2(alive)
	c.crash(m.id)
	died := c.now
	c.runUntil("an election", time.Second, func() bool { return elections2(alive) > el })
	// Counted from its last heartbeat, up to a heartbeat period before
	// the crash.
	if took := c.now - died; took < long-m.cfg.HeartbeatSend || took > long+5*time.Millisecond {
		t.Fatalf("a dead master, starved before, was given up after %v, want about %v", took, long)
	}
	nm := c.oneMaster()
	for _, r := range alive {
		if r != nm {
			c.runUntil("the survivor follows the new master", time.Second, func() bool { return r.n.Status().Master == nm.id })
			if got := r.n.Status().Monitor; got != short {
				t.Fatalf("site %d monitors its new master for %v, want %v: a tenure starts regular", r.id, got, short)
			}
		}
	}
}

func elections2(ns []*tnode) uint64 {
	var n uint64
	for _, tn := range ns {
		n += tn.n.Counters().Elections
	}
	return n
}

// Without HeartbeatMonitorMax the monitor never stretches.
func TestMonitorFixedByDefault(t *testing.T) {
	c, m, r1, _ := quietGroup(t, nil)
	c.deafen(m.id)
	c.run(7 * time.Millisecond)
	c.wake(m.id)
	c.run(20 * time.Millisecond)
	if got, want := r1.n.Status().Monitor, 10*time.Millisecond; got != want || r1.n.Config().HeartbeatMonitorMax != want {
		t.Fatalf("monitor %v (max %v), want %v without HeartbeatMonitorMax", got, r1.n.Config().HeartbeatMonitorMax, want)
	}
	if r1.n.Counters().MasterSilences != 1 {
		t.Fatalf("master silences %d, want 1 (counted also without the stretch)", r1.n.Counters().MasterSilences)
	}
}

func TestHeartbeatMonitorMaxBounds(t *testing.T) {
	for _, tc := range []struct {
		max time.Duration
		ok  bool
	}{{-time.Millisecond, false}, {100 * time.Millisecond, false}, {0, true}, {400 * time.Millisecond, true}, {time.Second, true}} {
		_, err := NewNode(Config{Site: 1, HeartbeatMonitor: 400 * time.Millisecond, HeartbeatMonitorMax: tc.max}, newMemStore())
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadConfig)) {
			t.Errorf("HeartbeatMonitorMax %v with a 400ms monitor: %v, want ok=%v (else ErrBadConfig)", tc.max, err, tc.ok)
		}
	}
}
