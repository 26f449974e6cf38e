package rep

import (
	"errors"
	"testing"
	"time"
)

// withPace returns m, a HEARTBEAT or LOG, as a paced one naming sites.
func withPace(m Message, sites ...uint16) Message {
	p := append([]byte(nil), m.Payload[:HeaderSize+8]...)
	le.PutUint16(p[28:], le.Uint16(p[28:])|FlagPaced)
	p = append(p, uint8(len(sites)))
	for _, s := range sites {
		p = appendU16(p, s)
	}
	m.Payload = append(p, m.Payload[HeaderSize+8:]...)
	return m
}

func TestPacedMessagesDecode(t *testing.T) {
	f := newFeed(1, 3)
	h := f.hdr(time.Second)
	h.Flags |= FlagMaster
	plain := []Message{mk(1, MsgHeartbeat, h, u64s(7)), f.log(time.Second, 0, 3)}
	for _, m := range plain {
		var d Decoded
		if err := DecodeMessage(m, &d); err != nil {
			t.Fatal(err)
		}
		if !d.Waits(2) || !d.Waits(9) {
			t.Errorf("%v without FlagPaced does not wait for every site", m.Type)
		}
		want := d.Data
		pm := withPace(m, 2, 4)
		if err := DecodeMessage(pm, &d); err != nil {
			t.Fatalf("paced %v: %v", m.Type, err)
		}
		if !d.Waits(2) || !d.Waits(4) || d.Waits(3) {
			t.Errorf("paced %v waits for %x, want sites 2 and 4", m.Type, d.Waited)
		}
		if d.LSN != 7 && m.Type == MsgHeartbeat || string(d.Data) != string(want) {
			t.Errorf("paced %v: perm %d, %d bytes of records; want the unpaced body", m.Type, d.LSN, len(d.Data))
		}
		// The count must fit the body, and a paced HEARTBEAT has nothing after.
		bad := withPace(m, 2)
		bad.Payload[HeaderSize+8] = 200
		if err := DecodeMessage(bad, &d); !errors.Is(err, ErrMalformed) {
			t.Errorf("paced %v claiming 200 sites: %v, want ErrMalformed", m.Type, err)
		}
		if m.Type == MsgHeartbeat {
			extra := withPace(m, 2)
			extra.Payload = append(extra.Payload, 0)
			if err := DecodeMessage(extra, &d); !errors.Is(err, ErrMalformed) {
				t.Errorf("paced HEARTBEAT with a trailing byte: %v, want ErrMalformed", err)
			}
		}
	}
}

// runPaced steps the cluster for d as boards reading at pace do: what
// arrives for a replica that is Paced is held (it still ticks) and handed
// over at the next multiple of pace.
func (c *cluster) runPaced(d, pace time.Duration, held map[uint16][]packet) {
	prev := c.filter
	c.filter = func(p *packet) bool {
		if prev != nil && prev(p) {
			return true
		}
		tn := c.node(p.to)
		if _, ok := held[p.to]; ok || tn.n.Paced() {
			held[p.to] = append(held[p.to], *p)
			return true
		}
		return false
	}
	defer func() { c.filter = prev }()
	end := c.now + d
	for c.now < end {
		c.now += time.Millisecond
		if c.now%pace == 0 {
			for id, ps := range held {
				delete(held, id)
				tn := c.node(id)
				for _, p := range ps {
					if tn.down {
						break
					}
					to := p.to
					if p.multicast {
						to = AllSites
					}
					_ = tn.n.Step(c.now, Message{From: p.from, To: to, Type: p.typ, Payload: p.payload})
					c.flush(tn)
				}
			}
		}
		c.stepOnce()
	}
}

func waitedSites(m *tnode) (ids []uint16) {
	for _, s := range m.n.Status().Sites {
		if s.Waited {
			ids = append(ids, s.Site)
		}
	}
	return ids
}

// TestPaceWaitsForWhatThePolicyNeeds: with Config.Pace the master names as
// many sites as its policy waits for, among those it counts, and the others
// learn that they are paced.
func TestPaceWaitsForWhatThePolicyNeeds(t *testing.T) {
	cases := []struct {
		policy AckPolicy
		sites  int
		zero   int // sites of priority 0 (the last ones)
		want   int
	}{
		{AckNone, 3, 0, 0},
		{AckOne, 5, 0, 1},
		{AckOnePeer, 3, 1, 1},
		{AckQuorum, 3, 0, 1},
		{AckQuorum, 5, 0, 2},
		{AckQuorum, 7, 0, 3},
		{AckQuorum, 5, 2, 1}, // three electable: a majority is the master and one peer
		{AckAllPeers, 5, 2, 2},
		{AckAll, 3, 0, 2},
	}
	for _, tc := range cases {
		var ids []uint16
		for i := 1; i <= tc.sites; i++ {
			ids = append(ids, uint16(i))
		}
		c := newCluster(t, ids, func(cfg *Config) {
			cfg.AckPolicy, cfg.Pace = tc.policy, 10*time.Millisecond
			if int(cfg.Site) > tc.sites-tc.zero {
				cfg.Priority = 0
			}
		})
		c.startAll()
		m := c.oneMaster()
		held := map[uint16][]packet{}
		c.runPaced(50*time.Millisecond, 10*time.Millisecond, held)
		for i := 0; i < 5; i++ {
			c.write(m, "k")
			c.runPaced(20*time.Millisecond, 10*time.Millisecond, held)
		}
		w := waitedSites(m)
		if len(w) != tc.want {
			t.Errorf("%v, %d sites (%d of priority 0): master waits for %v, want %d sites", tc.policy, tc.sites, tc.zero, w, tc.want)
		}
		for _, s := range w {
			if int(s) > tc.sites-tc.zero && (tc.policy == AckQuorum || tc.policy == AckAllPeers || tc.policy == AckOnePeer) {
				t.Errorf("%v: waits for site %d of priority 0", tc.policy, s)
			}
		}
		for _, tn := range c.nodes {
			if tn == m {
				continue
			}
			waited := false
			for _, s := range w {
				waited = waited || s == tn.id
			}
			if tn.n.Paced() == waited {
				t.Errorf("%v: site %d waited for %v, paced %v", tc.policy, tn.id, waited, tn.n.Paced())
			}
		}
		if m.perm != m.st.LastCommit().LSN {
			t.Errorf("%v: perm %d, last commit %d", tc.policy, m.perm, m.st.LastCommit().LSN)
		}
	}
}

// TestPaceSwapsInTheSiteThatAnswers: when the site the master waits for
// stops answering, a paced site's acks release the commits, and after a few
// the master waits for that site instead; no commit fails.
func TestPaceSwapsInTheSiteThatAnswers(t *testing.T) {
	const pace = 10 * time.Millisecond
	c := newCluster(t, []uint16{1, 2, 3}, func(cfg *Config) { cfg.Pace = pace })
	c.startAll()
	m := c.oneMaster()
	held := map[uint16][]packet{}
	c.runPaced(50*time.Millisecond, pace, held)
	c.write(m, "a")
	c.runPaced(20*time.Millisecond, pace, held)
	w := waitedSites(m)
	if len(w) != 1 {
		t.Fatalf("master waits for %v, want one site", w)
	}
	slow := c.node(w[0])
	var other *tnode
	for _, tn := range c.nodes {
		if tn != m && tn != slow {
			other = tn
		}
	}
	if !other.n.Paced() || slow.n.Paced() {
		t.Fatalf("site %d (not waited for) paced %v, site %d (waited for) paced %v", other.id, other.n.Paced(), slow.id, slow.n.Paced())
	}
	c.deafen(slow.id)
	for i := 0; i < 20 && !(len(waitedSites(m)) == 1 && waitedSites(m)[0] == other.id); i++ {
		c.write(m, "b")
		c.runPaced(pace, pace, held)
	}
	c.write(m, "c")
	c.runPaced(3*pace, pace, held)
	if w := waitedSites(m); len(w) != 1 || w[0] != other.id {
		t.Fatalf("with site %d deaf the master waits for %v, want site %d", slow.id, w, other.id)
	}
	if m.n.Counters().PaceSwaps == 0 {
		t.Error("no PaceSwaps counted")
	}
	if m.perm != m.st.LastCommit().LSN || len(m.failed) != 0 {
		t.Fatalf("perm %d of last commit %d, %d failed", m.perm, m.st.LastCommit().LSN, len(m.failed))
	}
	// With both answering, the site waited for releases the commits: no swap.
	swaps := m.n.Counters().PaceSwaps
	c.wake(slow.id)
	for i := 0; i < 10; i++ {
		c.write(m, "d")
		c.runPaced(pace, pace, held)
	}
	if got := m.n.Counters().PaceSwaps; got != swaps {
		t.Errorf("%d more swaps with both sites answering", got-swaps)
	}
	if !slow.n.Paced() || other.n.Paced() {
		t.Errorf("after waking, site %d paced %v, site %d paced %v", slow.id, slow.n.Paced(), other.id, other.n.Paced())
	}
	if !c.converged() {
		t.Fatalf("not converged\n%s", c.dump())
	}
}

func TestPaceNegativeIsBadConfig(t *testing.T) {
	if _, err := NewNode(Config{Site: 1, Pace: -time.Millisecond}, newMemStore()); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("Pace -1ms: %v, want ErrBadConfig", err)
	}
}
