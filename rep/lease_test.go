package rep

import (
	"errors"
	"testing"
	"time"
)

func TestLeaseValidityWithClockSkew(t *testing.T) {
	s := startMaster(t, func(c *Config) {
		c.Peers = []uint16{2, 3, 4, 5}
		c.Leases = true
		c.LeaseTimeout = time.Second
		c.ClockSkew = 1.25
	})
	n := s.n
	// A restarted site first waits out any grant it may have made.
	if n.LeaseValid(500 * time.Millisecond) {
		t.Fatal("lease valid before the startup lease wait")
	}
	s.now = 2 * time.Second
	s.n.Tick(s.now)
	s.ready()
	ci := s.st.commitTxn("a")
	n.Committed(s.now, ci)
	s.ready()
	// Five electable sites: the master and two grants make a majority.
	s.now = 2150 * time.Millisecond
	s.recv(ackFrom(2, 1, ci.LSN, 2100*time.Millisecond))
	s.now = 2300 * time.Millisecond
	if n.LeaseValid(s.now) {
		t.Fatal("valid with one grant of the two needed")
	}
	s.recv(ackFrom(3, 1, ci.LSN, 2200*time.Millisecond))
	// Valid until the second-latest grant's send time + 1s/1.25 = 2.1s + 0.8s.
	if !n.LeaseValid(2899*time.Millisecond) || n.LeaseValid(2900*time.Millisecond) {
		t.Fatalf("lease until %v, want 2.9s", n.Status().LeaseExpires)
	}
	// A newer grant from site 2 extends it to min(2.2, 2.25)+0.8 = 3.0s.
	s.now = 2400 * time.Millisecond
	s.recv(ackFrom(2, 1, ci.LSN, 2250*time.Millisecond))
	if !n.LeaseValid(2999*time.Millisecond) || n.LeaseValid(3000*time.Millisecond) {
		t.Fatalf("lease until %v, want 3.0s", n.Status().LeaseExpires)
	}
	// Echoes from the future or before this tenure do not count.
	s.recv(ackFrom(4, 1, ci.LSN, 10*time.Second))
	s.recv(ackFrom(5, 1, ci.LSN, 0))
	if n.LeaseValid(3000 * time.Millisecond) {
		t.Fatal("future or missing echoes extended the lease")
	}
	if !s.n.Status().LeaseValid {
		t.Fatal("status disagrees with LeaseValid")
	}
}

func TestReplicaGrantsAndWaitsOutLease(t *testing.T) {
	f := newFeed(1, 2)
	cfg := func(c *Config) {
		c.Leases = true
		c.LeaseTimeout = 500 * time.Millisecond
		c.HeartbeatMonitor = 300 * time.Millisecond
	}
	s := newReplica(t, cfg)
	s.now = time.Second // past the startup wait
	s.recv(f.newMaster(s.now))
	o := s.recv(f.log(s.now, 0, 2))
	acks := o.only(MsgAck)
	if len(acks) != 1 || decode(t, acks[0]).Echo != time.Second {
		t.Fatalf("ack does not echo the master's send time: %v", o.msgs)
	}
	// Heartbeats are answered with a grant.
	s.now += 100 * time.Millisecond
	o = s.recv(f.heartbeat(s.now))
	if g := o.only(MsgLeaseGrant); len(g) != 1 || decode(t, g[0]).Echo != s.now {
		t.Fatalf("heartbeat not answered with a grant: %v", o.msgs)
	}
	grantUntil := s.now + 500*time.Millisecond
	// The master goes silent: the election waits out the grant (phase 2).
	s.listen(300 * time.Millisecond)
	if s.n.role != RoleElecting {
		t.Fatalf("role %v", s.n.role)
	}
	if s.n.el.Phase().String() != "lease-wait" {
		t.Fatalf("election phase %v while a grant is outstanding", s.n.el.Phase())
	}
	for s.now < grantUntil-time.Millisecond {
		if o := s.tick(time.Millisecond); len(o.only(MsgVote1)) != 0 {
			t.Fatalf("voted at %v, grant runs until %v", s.now, grantUntil)
		}
	}
	voted := false
	for i := 0; i < 5 && !voted; i++ {
		voted = len(s.tick(time.Millisecond).only(MsgVote1)) > 0
	}
	if !voted {
		t.Fatal("no vote after the grant ran out")
	}
}

func TestReplicaDoesNotGrantTwoMastersAtOnce(t *testing.T) {
	f := newFeed(1, 2)
	s := newReplica(t, func(c *Config) { c.Leases = true; c.LeaseTimeout = 500 * time.Millisecond })
	s.now = time.Second
	s.recv(f.newMaster(s.now))
	s.recv(f.log(s.now, 0, 2)) // grant to site 1 until 1.5s
	// Site 3 becomes master at gen 2 (elected without us) while our grant
	// to site 1 is still running.
	f2 := &feed{st: f.st, cis: f.cis, site: 3, gen: 2}
	s.now += 100 * time.Millisecond
	s.recv(f2.newMaster(s.now))
	p := f.cis[1]
	s.recv(mk(3, MsgVerify, f2.hdr(s.now), appendPoint(nil, CommitPoint{LSN: p.LSN, Gen: p.Gen, Chain: p.Chain})))
	if s.n.rs.sync != syncLive && s.n.rs.sync != syncLog {
		t.Fatalf("not synced with site 3: %d", s.n.rs.sync)
	}
	f2.st.gen = 2
	f2.add(1)
	o := s.recv(f2.log(s.now, 2, 3))
	for _, a := range append(o.only(MsgAck), o.only(MsgLeaseGrant)...) {
		if decode(t, a).Echo != 0 {
			t.Fatalf("granted site 3 a lease at %v while the grant to site 1 runs until 1.5s", s.now)
		}
	}
	s.now = 1600 * time.Millisecond
	o = s.recv(f2.heartbeat(s.now))
	if g := o.only(MsgLeaseGrant); len(g) != 1 || decode(t, g[0]).Echo != s.now {
		t.Fatalf("no grant to site 3 after the old one ran out: %v", o.msgs)
	}
}

func TestLeasesNeverOverlapAcrossFailover(t *testing.T) {
	c := newCluster(t, []uint16{1, 2, 3}, func(cfg *Config) {
		cfg.Leases = true
		cfg.LeaseTimeout = 300 * time.Millisecond
		cfg.ClockSkew = 1.1
	})
	c.startAll()
	old := c.oneMaster()
	c.write(old, "a")
	c.runUntil("a valid lease", 2*time.Second, func() bool { return old.n.LeaseValid(c.now) })
	// Cut the master off from everyone.
	for _, tn := range c.nodes {
		if tn != old {
			c.cut[[2]uint16{old.id, tn.id}], c.cut[[2]uint16{tn.id, old.id}] = true, true
		}
	}
	cutAt := c.now
	var nm *tnode
	c.runUntil("a new master with a valid lease", 10*time.Second, func() bool {
		valid := 0
		for _, tn := range c.nodes {
			if tn.n.LeaseValid(c.now) {
				valid++
				if tn != old {
					nm = tn
				}
			}
		}
		if valid > 1 {
			t.Fatalf("%d valid lease holders at %v", valid, c.now)
		}
		return nm != nil
	})
	if old.n.LeaseValid(c.now) {
		t.Fatal("the cut-off master still claims its lease")
	}
	if c.now-cutAt < 300*time.Millisecond {
		t.Fatalf("new master's lease after %v, before the old grants could expire", c.now-cutAt)
	}
}

func TestDecodeRejectsBadRecordFraming(t *testing.T) {
	f := newFeed(1, 3)
	good := f.log(0, 0, 3)
	var d Decoded
	if err := DecodeMessage(good, &d); err != nil {
		t.Fatal(err)
	}
	recs := d.Data
	for name, mutate := range map[string]func(b []byte){
		"short length": func(b []byte) { le.PutUint32(b, 8) },
		"long length":  func(b []byte) { le.PutUint32(b, uint32(len(b)+1)) },
		"lsn jump":     func(b []byte) { n := le.Uint32(b); le.PutUint64(b[n+24:], 999) },
		"truncated":    nil,
	} {
		b := append([]byte(nil), recs...)
		if mutate != nil {
			mutate(b)
		} else {
			b = b[:len(b)-5]
		}
		m := mk(1, MsgLog, f.hdr(0), u64s(0), b)
		if err := DecodeMessage(m, &d); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
