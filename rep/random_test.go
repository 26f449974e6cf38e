package rep

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

var randomSeeds = flag.Int("rep.seeds", 40, "seeds for TestRandomFaults")

type written struct {
	ci     CommitInfo
	site   uint16
	gen    uint32
	isPerm bool
}

// TestRandomFaults runs small groups through seeded loss, crashes (with and
// without memory loss) and partitions, then heals and checks that every
// commit that became permanent under QUORUM survived and all sites converge.
// REP_SEED=n replays one seed.
func TestRandomFaults(t *testing.T) {
	seeds := make([]uint64, 0, *randomSeeds)
	if s := os.Getenv("REP_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, v)
	} else {
		for i := 0; i < *randomSeeds; i++ {
			seeds = append(seeds, uint64(i+1))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("replay with REP_SEED=%d", seed)
			randomRun(t, seed)
		})
	}
}

func randomRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	size := 3 + rng.IntN(3)
	ids := make([]uint16, size)
	for i := range ids {
		ids[i] = uint16(i + 1)
	}
	leases := rng.IntN(2) == 0
	policy := []AckPolicy{AckQuorum, AckQuorum, AckAllPeers, AckAll}[rng.IntN(4)]
	passive := uint16(0) // a priority-0 site in bigger groups
	if size >= 4 && rng.IntN(2) == 0 {
		passive = uint16(size)
	}
	c := newCluster(t, ids, func(cfg *Config) {
		cfg.Seed = seed*31 + uint64(cfg.Site)
		cfg.Leases = leases
		cfg.AckPolicy = policy
		if cfg.Site == passive {
			cfg.Priority = 0
		}
		cfg.ReRequestMax = 200 * time.Millisecond
		cfg.MaxMessageBytes = 8 << 10
	})
	loss := rng.Float64() * 0.15
	c.filter = func(p *packet) bool { return rng.Float64() < loss }
	c.startAll()
	var ws []written
	end := 8 * time.Second
	for c.now < end {
		c.run(time.Duration(1+rng.IntN(20)) * time.Millisecond)
		for _, m := range c.masters() {
			if rng.IntN(3) == 0 && m.n.CanWrite() == nil {
				ci := c.write(m, fmt.Sprintf("s%d-%d", seed, len(ws)))
				if c.trace {
					t.Logf("%v site %d writes %+v", c.now, m.id, ci)
				}
				ws = append(ws, written{ci: ci, site: m.id, gen: m.n.gen})
			}
		}
		for i := range ws {
			w := &ws[i]
			tn := c.node(w.site)
			if !w.isPerm && !tn.down && tn.n.role == RoleMaster && tn.n.gen == w.gen && tn.perm >= w.ci.LSN {
				w.isPerm = true
				if c.trace {
					t.Logf("%v perm %+v", c.now, w.ci)
				}
			}
		}
		if leases {
			valid := 0
			for _, tn := range c.nodes {
				if !tn.down && tn.n.LeaseValid(c.now) {
					valid++
				}
			}
			if valid > 1 {
				t.Fatalf("%d masters hold valid leases at %v\n%s", valid, c.now, c.dump())
			}
		}
		switch r := rng.IntN(120); {
		case r == 0:
			victim := c.nodes[rng.IntN(size)]
			if !victim.down {
				if c.trace {
					t.Logf("%v crash %d", c.now, victim.id)
				}
				c.crash(victim.id)
			}
		case r == 1:
			for _, tn := range c.nodes {
				if tn.down {
					if rng.IntN(4) == 0 {
						tn.st.checkpointIfPerm()
					}
					// Losing memory is survivable while every other site
					// holds the data; a majority losing it at once is the
					// total group failure no in-memory group survives.
					lose := rng.IntN(3) == 0 && c.othersLive(tn.id)
					if c.trace {
						t.Logf("%v restart %d lose=%v", c.now, tn.id, lose)
					}
					c.restart(tn.id, lose, StartClient)
				}
			}
		case r == 2:
			a, b := uint16(1+rng.IntN(size)), uint16(1+rng.IntN(size))
			c.cut[[2]uint16{a, b}], c.cut[[2]uint16{b, a}] = true, true
			if c.trace {
				t.Logf("%v cut %d-%d", c.now, a, b)
			}
		case r == 3:
			c.cut = map[[2]uint16]bool{}
		case r == 4:
			for _, m := range c.masters() {
				m.st.checkpoint(rng.IntN(2) == 0)
			}
		}
	}
	// Heal everything.
	c.filter = nil
	c.cut = map[[2]uint16]bool{}
	for _, tn := range c.nodes {
		if tn.down {
			c.restart(tn.id, false, StartClient)
		}
	}
	c.runUntil("convergence after healing", 30*time.Second, c.converged)
	// Majority elections never elect two masters at one gen: the winner's
	// gen is the egen it won, and an egen has one winner.
	electedBy := map[uint32]uint16{}
	for _, tn := range c.nodes {
		for _, e := range tn.events {
			if e.Kind != EventElected {
				continue
			}
			if o, ok := electedBy[e.Gen]; ok && o != tn.id {
				t.Fatalf("sites %d and %d both elected at gen %d\n%s", o, tn.id, e.Gen, c.dump())
			}
			electedBy[e.Gen] = tn.id
		}
	}
	m := c.masters()[0]
	perms := 0
	for _, w := range ws {
		if !w.isPerm {
			continue
		}
		perms++
		if w.ci.End > m.st.EndLSN() || le.Uint64(m.st.full[w.ci.LSN+recHeaderSize:]) != w.ci.Chain {
			t.Fatalf("permanent commit %+v from site %d gen %d lost on final master %d\n%s",
				w.ci, w.site, w.gen, m.id, c.dump())
		}
	}
	t.Logf("size %d passive %d %v leases %v loss %.2f: %d writes, %d perm, final master %d gen %d",
		size, passive, policy, leases, loss, len(ws), perms, m.id, m.n.gen)
}

// othersLive reports whether every site but id is up and holds exactly the
// current master's content: only then can id's memory be lost without the
// group losing anything. (A majority losing memory at once is the total
// group failure no in-memory group survives; an empty site's vote is then
// as good as any, see the package documentation.)
func (c *cluster) othersLive(id uint16) bool {
	ms := c.masters()
	if len(ms) != 1 || ms[0].id == id {
		return false
	}
	h := ms[0].st.hash()
	for _, tn := range c.nodes {
		if tn.id == id {
			continue
		}
		if tn.down || tn.st.hash() != h || (tn != ms[0] && (tn.n.rs.sync != syncLive || tn.n.role != RoleReplica)) {
			return false
		}
	}
	return true
}
