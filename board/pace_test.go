package board

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// pacedSites returns the replicas that say they are paced, and the sites the
// master says it waits for.
func pacedSites(g *testGroup, m *Board) (paced, waited []uint16) {
	for site, b := range g.boards {
		if b != m && b.Stat().Paced {
			paced = append(paced, site)
		}
	}
	for _, s := range m.Stat().Sites {
		if s.Waited {
			waited = append(waited, s.Site)
		}
	}
	return paced, waited
}

// waitPaced writes on m until one replica says it is paced and the master
// waits for the other, and returns the two.
func waitPaced(t *testing.T, g *testGroup, m *Board) (paced, waited uint16) {
	t.Helper()
	eventually(t, "one replica paced, the other waited for", 5*time.Second, func() bool {
		put(t, m, "routes", "k", "v")
		p, w := pacedSites(g, m)
		if len(p) == 1 && len(w) == 1 && p[0] != w[0] {
			paced, waited = p[0], w[0]
			return true
		}
		return false
	})
	return paced, waited
}

// TestPacedReplicaReadsAtItsPace: under QUORUM in a group of three the
// master waits for one replica; the other learns it is paced, still applies
// everything, and a write it forwards is answered.
func TestPacedReplicaReadsAtItsPace(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	paced, _ := waitPaced(t, g, m)
	for i := 0; i < 50; i++ {
		put(t, m, "routes", fmt.Sprint(i), "v")
	}
	for site, b := range g.boards {
		eventually(t, fmt.Sprintf("site %d applied every write", site), 5*time.Second, func() bool {
			return string(get(b, "routes", "49")) == "v"
		})
	}
	r := g.boards[paced]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := r.Apply(ctx, Put("arp", []byte("a"), []byte("b"))); err != nil || !c.Perm {
		t.Fatalf("Apply forwarded by the paced replica %d: %+v, %v", r.Site(), c, err)
	}
}

// TestPacedReplicaTakesOverWhenTheWaitedOneGoes: when the replica the
// master waits for closes, commits go on (the paced one's acks release
// them) and the master waits for the one left.
func TestPacedReplicaTakesOverWhenTheWaitedOneGoes(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	paced, waited := waitPaced(t, g, m)
	g.stop(waited)
	eventually(t, "the master to wait for the replica left", 5*time.Second, func() bool {
		if c := put(t, m, "routes", "k", "w"); !c.Perm {
			t.Fatalf("commit %+v not permanent", c)
		}
		_, w := pacedSites(g, m)
		return len(w) == 1 && w[0] == paced
	})
	if st := m.Stat(); st.Counters.PaceSwaps == 0 {
		t.Errorf("master counted no pace swaps")
	}
	// It learns so from the next message.
	eventually(t, fmt.Sprintf("site %d, now waited for, to stop pacing", paced), 5*time.Second, func() bool {
		put(t, m, "routes", "k", "x")
		return !g.boards[paced].Stat().Paced
	})
}

func TestPaceOff(t *testing.T) {
	g := newGroup(t, 3, func(c *Config) { c.Pace = -1 })
	m := g.master(0)
	for i := 0; i < 20; i++ {
		put(t, m, "routes", fmt.Sprint(i), "v")
	}
	if paced, waited := pacedSites(g, m); len(paced) != 0 || len(waited) != 0 {
		t.Fatalf("pacing off, yet paced %v, waited %v", paced, waited)
	}
}
