package rep

import (
	"fmt"
	"testing"
	"time"
)

// A master whose node cannot run (deafened: no ticks, nothing received)
// but whose driver sends its KeepAlive every heartbeat period is not taken
// for dead; once the keepalives stop, the replicas elect. The grants the
// keepalives draw do not renew the master's lease: it lapses as if the
// master had been silent.
func TestKeepAliveHoldsOffElection(t *testing.T) {
	for _, leases := range []bool{false, true} {
		t.Run(fmt.Sprintf("leases=%v", leases), func(t *testing.T) {
			c, m, r1, r2 := quietGroup(t, func(cfg *Config) { cfg.Leases = leases })
			gen := m.n.Status().Gen
			ka, ok := m.n.KeepAlive(nil)
			if !ok {
				t.Fatalf("master %d has no keepalive", m.id)
			}
			if _, ok := r1.n.KeepAlive(nil); ok {
				t.Fatalf("replica %d offers a keepalive", r1.id)
			}
			elections := r1.n.Elections() + r2.n.Elections()
			c.deafen(m.id)
			for range 50 { // 100 ms: ten heartbeat monitors
				c.q = append(c.q, packet{at: c.now, from: m.id, to: AllSites, typ: MsgHeartbeat, payload: ka})
				c.run(2 * time.Millisecond)
			}
			if got := r1.n.Elections() + r2.n.Elections(); got != elections {
				t.Fatalf("replicas started %d elections while the master's keepalives came\n%s", got-elections, c.dump())
			}
			if leases && m.n.LeaseValid(c.now) {
				t.Fatalf("the master's lease is valid %v after its node last ran: keepalive grants renewed it", 100*time.Millisecond)
			}
			c.wake(m.id)
			if leases && m.n.LeaseValid(c.now) {
				t.Fatalf("the master's lease is valid after it read the grants its keepalives drew")
			}
			c.run(50 * time.Millisecond)
			if ms := c.masters(); len(ms) != 1 || ms[0] != m || m.n.Status().Gen != gen {
				t.Fatalf("master changed: was %d gen %d, now %v\n%s", m.id, gen, ms, c.dump())
			}
			// Keepalives stop: the master is silent, the replicas elect.
			c.deafen(m.id)
			c.runUntil("an election", time.Second, func() bool { return r1.n.Elections()+r2.n.Elections() > elections })
		})
	}
}
