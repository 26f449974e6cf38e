package rep

import (
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
)

// envSite is one site of a group over real inmem environments driven
// through EnvStorage.
type envSite struct {
	id   uint16
	cfg  Config
	n    *Node
	st   *EnvStorage
	down bool
	errs []error
	evs  []Event
}

type envGroup struct {
	t     *testing.T
	now   time.Duration
	opt   inmem.Options
	sites []*envSite
	q     []packet
	drop  func(p *packet) bool
}

func newEnvGroup(t *testing.T, n int) *envGroup {
	g := &envGroup{t: t, opt: inmem.Options{PoolSize: 8 << 20, LogSize: 64 << 10}}
	for i := 1; i <= n; i++ {
		cfg := Config{Site: uint16(i), Priority: 100, AckPolicy: AckQuorum, Seed: uint64(i),
			InitWindowPages: 8, MaxMessageBytes: 64 << 10}
		for j := 1; j <= n; j++ {
			if j != i {
				cfg.Peers = append(cfg.Peers, uint16(j))
			}
		}
		s := &envSite{id: uint16(i), cfg: cfg}
		g.boot(s)
		g.sites = append(g.sites, s)
	}
	t.Cleanup(func() {
		for _, s := range g.sites {
			s.st.Close()
			s.st.Env().Close()
		}
	})
	return g
}

func (g *envGroup) boot(s *envSite) {
	env, err := inmem.Create(g.opt)
	if err != nil {
		g.t.Fatal(err)
	}
	s.st = NewEnvStorage(env, g.opt, ckpt.Policy{KBytes: 16})
	s.n, err = NewNode(s.cfg, s.st)
	if err != nil {
		g.t.Fatal(err)
	}
	s.down = false
	s.n.Start(g.now, StartClient)
	g.flush(s)
}

func (g *envGroup) flush(s *envSite) {
	for i := 0; i < 100; i++ {
		rd := s.n.Ready()
		if rd.Empty() {
			s.n.Advance(rd)
			return
		}
		for _, m := range rd.Messages {
			g.q = append(g.q, packet{at: g.now + time.Millisecond, from: s.id, to: m.To, typ: m.Type,
				payload: append([]byte(nil), m.Payload...)})
		}
		s.evs = append(s.evs, rd.Events...)
		res, err := s.st.Apply(&rd, s.n.Status().Role == RoleMaster)
		if err != nil {
			s.errs = append(s.errs, err)
		}
		if res.Replaced != nil {
			res.Replaced.Close()
		}
		s.n.Advance(rd)
	}
	g.t.Fatalf("site %d: Ready never empties", s.id)
}

func (g *envGroup) step() {
	g.now += time.Millisecond
	for len(g.q) > 0 && g.q[0].at <= g.now {
		p := g.q[0]
		g.q = g.q[1:]
		for _, s := range g.sites {
			if s.down || s.id == p.from || (p.to != AllSites && p.to != s.id) || (g.drop != nil && g.drop(&p)) {
				continue
			}
			_ = s.n.Step(g.now, Message{From: p.from, To: p.to, Type: p.typ, Payload: p.payload})
			g.flush(s)
		}
	}
	for _, s := range g.sites {
		if !s.down {
			s.n.Tick(g.now)
			g.flush(s)
		}
	}
}

func (g *envGroup) until(what string, limit time.Duration, cond func() bool) {
	g.t.Helper()
	end := g.now + limit
	for !cond() {
		if g.now >= end {
			var s string
			for _, x := range g.sites {
				st := x.n.Status()
				s += fmt.Sprintf("\n site %d role %v master %d end %d sync %d errs %v", x.id, st.Role, st.Master, st.EndLSN, x.n.rs.sync, x.errs)
			}
			g.t.Fatalf("%s never happened%s", what, s)
		}
		g.step()
	}
}

func (g *envGroup) master() *envSite {
	var m *envSite
	for _, s := range g.sites {
		if !s.down && s.n.Status().Role == RoleMaster {
			if m != nil {
				return nil
			}
			m = s
		}
	}
	return m
}

func (g *envGroup) converged() bool {
	m := g.master()
	if m == nil {
		return false
	}
	h := m.st.Env().ContentHash()
	for _, s := range g.sites {
		if s.down {
			continue
		}
		if s.st.Env().ContentHash() != h || s.st.EndLSN() != m.st.EndLSN() {
			return false
		}
	}
	return true
}

func TestEnvStorageGroup(t *testing.T) {
	g := newEnvGroup(t, 3)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	write := func(i int) {
		var m *envSite
		for _, x := range g.sites {
			if !x.down && x.n.Status().Role == RoleMaster {
				m = x // the newest-gen one if two think they are master
			}
		}
		ci, err := m.st.Env().Update(func(tx *inmem.Tx) error {
			db, err := tx.CreateDBIfNotExists("routes")
			if err != nil {
				return err
			}
			return db.Put([]byte(fmt.Sprintf("key-%05d", i)), make([]byte, 200))
		})
		if err != nil {
			t.Fatal(err)
		}
		m.n.Committed(g.now, ci)
		g.flush(m)
	}
	for i := 0; i < 300; i++ {
		write(i)
		g.step()
	}
	g.until("convergence", 10*time.Second, g.converged)
	m := g.master()
	if m.st.Checkpointer().Stats().Promoted == 0 || m.st.CheckpointLSN() == 0 {
		t.Fatalf("master never checkpointed (%d KiB of log)", m.st.EndLSN()>>10)
	}
	// A replica loses its memory: internal init from the master's checkpoint.
	var victim *envSite
	for _, s := range g.sites {
		if s != m {
			victim = s
			break
		}
	}
	victim.st.Close()
	victim.st.Env().Close()
	g.boot(victim)
	// Lose some PAGE messages on the way.
	k := 0
	g.drop = func(p *packet) bool { k++; return p.typ == MsgPage && k%4 == 0 }
	for i := 300; i < 320; i++ {
		write(i)
		g.step()
	}
	g.until("convergence after memory loss", 20*time.Second, g.converged)
	if victim.n.Counters().Inits == 0 {
		t.Fatal("no internal init")
	}
	for _, x := range g.sites {
		if x != m && x.st.Checkpointer().Stats().Promoted == 0 {
			t.Errorf("replica %d never promoted a checkpoint", x.id)
		}
	}
	// Cut the master off: it keeps writing (not permanent), the others elect.
	g.drop = func(p *packet) bool { return p.from == m.id || p.to == m.id }
	for i := 320; i < 330; i++ {
		write(i) // on the old master, cut off
		g.step()
	}
	g.until("a second master", 20*time.Second, func() bool {
		for _, x := range g.sites {
			if x != m && x.n.Status().Role == RoleMaster {
				return true
			}
		}
		return false
	})
	// Heal: the old master steps down and rolls its unacked writes back.
	g.drop = nil
	g.until("convergence after the partition", 20*time.Second, g.converged)
	if g.master() == m {
		t.Fatal("the cut-off master kept its role")
	}
	if m.n.Counters().Rollbacks == 0 && m.n.Counters().Inits == 0 {
		t.Fatal("the old master neither rolled back nor re-initialized")
	}
	err := g.master().st.Env().View(func(tx *inmem.Tx) error {
		for i := 0; i < 320; i += 37 {
			// Every write made while the group had a quorum survived.
			if tx.DB("routes").Get([]byte(fmt.Sprintf("key-%05d", i))) == nil {
				return fmt.Errorf("key-%05d lost", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
