package rep

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/shm"
	"golang.org/x/sys/unix"
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
	t      *testing.T
	now    time.Duration
	opt    inmem.Options
	policy ckpt.Policy
	name   func(site uint16) string // named regions when set
	sites  []*envSite
	q      []packet
	drop   func(p *packet) bool
	// batch steps everything due for a site before its Ready, as the
	// board's runtime steps a receive batch (up to 64 messages).
	batch bool
	// applied, if set, sees each site right after its storage did a Ready.
	applied func(s *envSite)
}

func newEnvGroup(t *testing.T, n int) *envGroup {
	return newEnvGroupWith(t, n, inmem.Options{PoolSize: 8 << 20, LogSize: 64 << 10}, ckpt.Policy{KBytes: 16}, nil)
}

func newEnvGroupWith(t *testing.T, n int, opt inmem.Options, policy ckpt.Policy, name func(uint16) string) *envGroup {
	g := &envGroup{t: t, opt: opt, policy: policy, name: name}
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
			if g.name != nil {
				// After an init the live region's file holds the plain name.
				for _, n := range []string{g.name(s.id), g.name(s.id) + importSuffix} {
					if err := shm.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
						t.Errorf("removing region %q: %v", n, err)
					}
				}
			}
		}
	})
	return g
}

func (g *envGroup) boot(s *envSite) {
	opt := g.opt
	if g.name != nil {
		opt.Name = g.name(s.id)
		_ = shm.Remove(opt.Name) // the memory of a site that went down
	}
	env, err := inmem.Create(opt)
	if err != nil {
		g.t.Fatal(err)
	}
	s.st = NewEnvStorage(env, opt, g.policy)
	s.n, err = NewNode(s.cfg, s.st)
	if err != nil {
		g.t.Fatal(err)
	}
	s.down = false
	s.n.Start(g.now, StartClient)
	g.flush(s)
}

// wipe makes site s lose its memory: its storage and environment close and
// it boots again with an empty one.
func (g *envGroup) wipe(s *envSite) {
	s.st.Close()
	s.st.Env().Close()
	g.boot(s)
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
		if res.InitFailed {
			s.n.InitFailed()
		}
		if g.applied != nil {
			g.applied(s)
		}
		if res.Replaced != nil {
			res.Replaced.Close()
		}
		s.n.Advance(rd)
		if rd.ListPages != nil {
			s.n.PagesListed(rd.ListPages.LSN(), rd.ListPages.PageList())
		}
	}
	g.t.Fatalf("site %d: Ready never empties", s.id)
}

func (g *envGroup) step() {
	g.now += time.Millisecond
	stepped := map[*envSite]bool{}
	for len(g.q) > 0 && g.q[0].at <= g.now {
		p := g.q[0]
		g.q = g.q[1:]
		for _, s := range g.sites {
			if s.down || s.id == p.from || (p.to != AllSites && p.to != s.id) || (g.drop != nil && g.drop(&p)) {
				continue
			}
			_ = s.n.Step(g.now, Message{From: p.from, To: p.to, Type: p.typ, Payload: p.payload})
			if g.batch {
				stepped[s] = true
			} else {
				g.flush(s)
			}
		}
	}
	for _, s := range g.sites {
		if stepped[s] {
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

// other returns the first site that is not s.
func (g *envGroup) other(s *envSite) *envSite {
	for _, o := range g.sites {
		if o != s {
			return o
		}
	}
	return nil
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
	victim := g.other(m)
	g.wipe(victim)
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

// write commits key=val on the master (the newest-gen one if two think they
// are) and flushes it.
func (g *envGroup) write(key string, val []byte) {
	g.t.Helper()
	var m *envSite
	for _, x := range g.sites {
		if !x.down && x.n.Status().Role == RoleMaster {
			m = x
		}
	}
	if m == nil {
		g.t.Fatal("no master to write on")
	}
	ci, err := m.st.Env().Update(func(tx *inmem.Tx) error {
		db, err := tx.CreateDBIfNotExists("routes")
		if err != nil {
			return err
		}
		return db.Put([]byte(key), val)
	})
	if err != nil {
		g.t.Fatalf("write %q: %v", key, err)
	}
	m.n.Committed(g.now, ci)
	g.flush(m)
}

// Many small commits over a few keys, with a kilobyte policy the log never
// reaches: the pages the commits copy must be reused, or the pools (the
// master's and the replicas') fill. inmem reuses at once what no snapshot
// can see; pages a pinned checkpoint still sees wait for a pool-pressure
// checkpoint (EnvStorage.poolPressure), which this stream does not need.
func TestEnvStoragePoolPressure(t *testing.T) {
	g := newEnvGroupWith(t, 3, inmem.Options{PoolSize: 1 << 20, LogSize: 1 << 20}, ckpt.Policy{KBytes: 1 << 20}, nil)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	total := g.master().st.Env().PageStats().TotalPages
	val := make([]byte, 64)
	// Each commit copies a few pages: this many would fill the pool
	// several times over without a checkpoint.
	n := int(4 * total)
	early := map[uint16]uint64{}
	for i := 0; i < n; i++ {
		if i == 100 {
			for _, s := range g.sites {
				early[s.id] = s.st.Env().PageStats().UsedPages
			}
		}
		g.write(fmt.Sprintf("key-%03d", i%50), val)
		g.step()
		if i%16 == 15 {
			// A replica promotes a checkpoint once it learns the master
			// made it permanent, which under a continuous stream waits
			// for a pause (the heartbeat carries the master's perm LSN).
			for range 150 {
				g.step()
			}
		}
	}
	g.until("convergence", 10*time.Second, g.converged)
	for _, s := range g.sites {
		if len(s.errs) > 0 {
			t.Errorf("site %d: storage errors: %v", s.id, s.errs)
		}
		if ps := s.st.Env().PageStats(); ps.UsedPages > early[s.id]+16 {
			t.Errorf("site %d holds %d of %d pages after %d small commits over 50 keys, %d after the first 100", s.id, ps.UsedPages, ps.TotalPages, n, early[s.id])
		}
	}
}

// With named regions an internal init builds the new region beside the live
// one and renames it over it: a reader attaching by name sees the imported
// data and no build region is left behind.
func TestEnvStorageNamedInit(t *testing.T) {
	name := func(site uint16) string { return fmt.Sprintf("boardha-reptest%d-%d", os.Getpid(), site) }
	g := newEnvGroupWith(t, 3, inmem.Options{PoolSize: 8 << 20, LogSize: 64 << 10, Mode: 0o600}, ckpt.Policy{KBytes: 16}, name)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	for i := 0; i < 300; i++ {
		g.write(fmt.Sprintf("key-%05d", i), make([]byte, 200))
		g.step()
	}
	g.until("convergence", 10*time.Second, g.converged)
	m := g.master()
	victim := g.other(m)
	victim.st.Close()
	if err := victim.st.Env().Remove(); err != nil {
		t.Fatal(err)
	}
	g.boot(victim)
	g.write("after-reboot", []byte("x"))
	g.until("convergence after memory loss", 20*time.Second, g.converged)
	if victim.n.Counters().Inits == 0 {
		t.Fatal("no internal init: the log should have been reclaimed")
	}
	if _, err := os.Stat("/dev/shm/" + name(victim.id) + importSuffix); !os.IsNotExist(err) {
		t.Fatalf("the import region is left behind (stat: %v)", err)
	}
	r, err := inmem.AttachReadOnly(name(victim.id))
	if err != nil {
		t.Fatalf("attach by name after the init: %v", err)
	}
	defer r.Close()
	err = r.View(func(tx *inmem.Tx) error {
		for _, k := range []string{"key-00000", "key-00299", "after-reboot"} {
			if tx.DB("routes").Get([]byte(k)) == nil {
				return fmt.Errorf("%s missing", k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the region under the live name is not the imported one: %v", err)
	}
}

// A site too far behind that cannot build its import (here: no memory for
// a region as large as its pool) ends each copy at the failure instead of
// taking every page for nothing, begins a fresh one after a back-off that
// grows while failures repeat, and converges once memory is there.
func TestEnvStorageInitFailsWithoutMemory(t *testing.T) {
	name := func(site uint16) string { return fmt.Sprintf("boardha-reptest%d-nomem-%d", os.Getpid(), site) }
	g := newEnvGroupWith(t, 3, inmem.Options{PoolSize: 8 << 20, LogSize: 64 << 10, Mode: 0o600}, ckpt.Policy{KBytes: 16}, name)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	g.write("before", []byte("x"))
	g.until("convergence", 10*time.Second, g.converged)
	m := g.master()
	victim := g.other(m)
	// Down with its data while the master's log moves on past it.
	victim.down = true
	for i := 0; i < 600; i++ {
		g.write(fmt.Sprintf("key-%05d", i), make([]byte, 2000))
		g.step()
	}
	// Its import beside its data would need more memory than the
	// memory file system has (fallocate fails: ENOSPC).
	victim.st.opt.PoolSize = 1 << 42
	var pages int
	var failedAt []time.Duration
	var update *packet
	g.drop = func(p *packet) bool {
		if p.to == victim.id && p.typ == MsgPage {
			pages++
		}
		if p.to == victim.id && p.typ == MsgUpdate {
			update = p
		}
		return false
	}
	g.applied = func(s *envSite) {
		if s == victim && len(failedAt) < int(s.n.Counters().InitFailures) {
			failedAt = append(failedAt, g.now)
			if update != nil {
				// A late duplicate of the UPDATE that began the failed
				// copy must not begin the next one before the back-off.
				late := *update
				late.at = g.now + time.Millisecond
				g.q = append(g.q, late)
			}
		}
	}
	victim.down = false
	g.until("three failed inits", 60*time.Second, func() bool { return len(failedAt) >= 3 })
	// The requests sent with the failed begin are answered; nothing more.
	failedPages := pages
	if failedPages > len(failedAt)*victim.cfg.InitWindowPages {
		t.Errorf("%d PAGE messages reached the site in %d inits that could not begin, want at most a window (%d pages) each",
			failedPages, len(failedAt), victim.cfg.InitWindowPages)
	}
	wantErr := false
	for _, err := range victim.errs {
		wantErr = wantErr || errors.Is(err, unix.ENOSPC)
	}
	if !wantErr {
		t.Errorf("the site's storage errors do not say the memory file system is full: %v", victim.errs)
	}
	first, second := failedAt[1]-failedAt[0], failedAt[2]-failedAt[1]
	if first < victim.n.cfg.ReRequestMax || second < 2*victim.n.cfg.ReRequestMax {
		t.Errorf("fresh copies began %v and %v after the failures before, want at least %v and %v (ReRequestMax, doubling)",
			first, second, victim.n.cfg.ReRequestMax, 2*victim.n.cfg.ReRequestMax)
	}
	t.Logf("failures at %v; %d storage errors", failedAt, len(victim.errs))

	victim.st.opt.PoolSize = g.opt.PoolSize
	g.write("after", []byte("y"))
	g.until("convergence once memory is there", 60*time.Second, g.converged)
	if got := victim.n.Counters().InitFailures; got != uint64(len(failedAt)) {
		t.Errorf("%d init failures counted, %d seen", got, len(failedAt))
	}
	if pages <= failedPages {
		t.Error("the site converged without receiving a page: it was not far enough behind to need an init")
	}
	t.Logf("%d PAGE messages in the failed inits, %d in the one that finished", failedPages, pages-failedPages)
}

// A replica copying the master's checkpoint asks for no log meanwhile. It
// used to: the gap timer of the catch-up that found the log gone kept
// running through the init and re-asked for the records from the empty
// board's end, which the master answered "log gone, init required". An
// answer arriving after the init finished started a second one, beside the
// data the first had just imported (hwtest TestRebootUnderLoad, once under
// load).
func TestNoLogRequestsDuringInit(t *testing.T) {
	g := newEnvGroup(t, 3)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	for i := 0; i < 600; i++ {
		g.write(fmt.Sprintf("key-%05d", i), make([]byte, 2000))
		g.step()
	}
	g.until("convergence", 20*time.Second, g.converged)
	victim := g.other(g.master())
	var duringInit, pages int
	g.drop = func(p *packet) bool {
		if p.from == victim.id && (p.typ == MsgLogReq || p.typ == MsgAllReq) && victim.n.rs.sync == syncInit {
			duringInit++
		}
		if p.to == victim.id && p.typ == MsgPage {
			// A slow copy: the gap timer's back-off would fire many
			// times over.
			pages++
			return pages%3 != 0
		}
		return false
	}
	g.wipe(victim)
	g.write("after-wipe", []byte("x"))
	g.until("convergence after memory loss", 60*time.Second, g.converged)
	if duringInit != 0 {
		t.Errorf("%d LOG_REQ/ALL_REQ sent while the site copied the checkpoint, want none", duringInit)
	}
	if got := victim.n.Counters().Inits; got != 1 {
		t.Errorf("%d internal inits, want 1", got)
	}
	t.Logf("%d PAGE messages, %d let through", pages, pages/3)
}

// A site that lost its memory catches up from the master's log, which still
// holds everything: megabytes of small commits, several pools' worth of
// replaced pages, arriving in messages that each carry many of the master's
// checkpoint records. The replica must promote them as it goes, as the
// master did: until it does, its log cannot be reclaimed and its checkpoint
// snapshot's pages stay allocated. It used to apply a whole message at once
// and promote nothing while applies kept coming (each apply's newest record
// replaced the candidate before it could be promoted). In the boardd
// failover bench, before inmem reused the pages no snapshot sees at once,
// its pool filled: "page pool full" at the same LSN until the replica gave
// up and re-initialized, over and over.
func TestEnvStorageCatchUpLongLog(t *testing.T) {
	g := newEnvGroupWith(t, 3, inmem.Options{PoolSize: 8 << 20, LogSize: 16 << 20}, ckpt.Policy{KBytes: 16}, nil)
	g.batch = true
	for _, s := range g.sites {
		s.cfg.MaxMessageBytes = 1 << 20
		s.n.cfg.MaxMessageBytes = 1 << 20 // the running nodes: NewNode only validated it
	}
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	m := g.master()
	victim := g.other(m)
	victim.down = true
	total := m.st.Env().PageStats().TotalPages
	val := make([]byte, 64)
	for i := 0; i < int(3*total); i++ {
		g.write(fmt.Sprintf("key-%03d", i%50), val)
		g.step()
	}
	if m.st.Env().Log().Begin() != 0 {
		t.Fatalf("the master's log no longer begins at 0 (%d): the victim would re-initialize instead of catching up", m.st.Env().Log().Begin())
	}
	g.wipe(victim)
	// The replica's checkpoint follows its log end as the master's does:
	// within a few checkpoint intervals after every apply, whatever the size
	// of the messages and of the batches they arrive in.
	maxLag := uint64(0)
	g.applied = func(s *envSite) {
		if s == victim {
			maxLag = max(maxLag, s.st.EndLSN()-s.st.CheckpointLSN())
		}
	}
	g.until("convergence", 20*time.Second, g.converged)
	if limit := uint64(3 * g.policy.KBytes << 10); maxLag > limit {
		t.Errorf("catching up, the replica's checkpoint fell %d KiB behind its log end (the master checkpoints every %d KiB)", maxLag>>10, g.policy.KBytes)
	}
	c := victim.n.Counters()
	if len(victim.errs) > 0 || c.ApplyStalls > 0 || c.Inits > 0 {
		t.Fatalf("catching up %d KiB of log: %d storage errors (first: %v), %d apply stalls, %d internal inits",
			m.st.EndLSN()>>10, len(victim.errs), firstErr(victim.errs), c.ApplyStalls, c.Inits)
	}
	if p := victim.st.Checkpointer().Stats().Promoted; p < 10 {
		t.Fatalf("the replica promoted %d checkpoints catching up %d KiB of log", p, m.st.EndLSN()>>10)
	}
}

func firstErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// Verify points come from the checkpoint's window of the log when it holds
// commits (a rollback cannot go below the checkpoint anyway), newest first
// and exponentially spaced; below the checkpoint the whole log is scanned.
func TestEnvStorageVerifyPointsFromCheckpoint(t *testing.T) {
	g := newEnvGroupWith(t, 3, inmem.Options{PoolSize: 8 << 20, LogSize: 16 << 20}, ckpt.Policy{KBytes: 16}, nil)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	m := g.master()
	val := make([]byte, 64)
	for i := 0; i < 3000; i++ {
		g.write(fmt.Sprintf("key-%03d", i%50), val)
		g.step()
	}
	ck, begin := m.st.CheckpointLSN(), m.st.Env().Log().Begin()
	if ck <= begin {
		t.Fatalf("checkpoint at %d, log begins at %d: the test needs a checkpoint inside the log", ck, begin)
	}
	pts, err := m.st.VerifyPoints(^uint64(0), 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) == 0 || pts[0].LSN != m.st.LastCommit().LSN {
		t.Fatalf("points %v: want the last commit %d first", pts, m.st.LastCommit().LSN)
	}
	for i, p := range pts {
		if p.LSN < ck || (i > 0 && p.LSN >= pts[i-1].LSN) {
			t.Fatalf("point %d at %d: want every point at or above the checkpoint %d, newest first (%v)", i, p.LSN, ck, pts)
		}
	}
	below, err := m.st.VerifyPoints(ck, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(below) == 0 || below[0].LSN >= ck {
		t.Fatalf("points before the checkpoint %d: %v", ck, below)
	}
}

// storageWithData is the storage of a site whose environment, in a region
// of its own named after the test (name), holds a database "local": an
// init imports beside it (an empty one would import in place, into no
// region of its own). Both, and any import region left, are removed when
// the test ends, also when it fails.
func storageWithData(t *testing.T, what string) (name string, env *inmem.Env, st *EnvStorage) {
	t.Helper()
	name = fmt.Sprintf("boardha-reptest%d-%s", os.Getpid(), what)
	t.Cleanup(func() { _ = shm.Remove(name + importSuffix) })
	opt := inmem.Options{Name: name, PoolSize: 4 << 20, LogSize: 64 << 10, Mode: 0o600}
	env, err := inmem.Create(opt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Update(func(tx *inmem.Tx) error { _, err := tx.CreateDB("local"); return err }); err != nil {
		_ = env.Remove()
		t.Fatal(err)
	}
	st = NewEnvStorage(env, opt, ckpt.Policy{KBytes: 16})
	t.Cleanup(func() {
		st.Close()
		_ = st.Env().Remove()
	})
	return name, env, st
}

// An init whose pages do not make a whole tree fails at Finish and leaves no
// import region behind: the next init would remove it, but a board that
// gives up meanwhile should not hold a pool's worth of shared memory.
func TestEnvStorageFailedInitDropsItsRegion(t *testing.T) {
	name, _, st := storageWithData(t, "failinit")
	// A master's snapshot with a tree in it: Finish wants its pages.
	snap := routesSnapshot(t, 1)
	rd := Ready{Init: &InitAction{Begin: true, Meta: snap.Meta(), CkptLSN: snap.LSN(), Finish: true}}
	if _, err := st.Apply(&rd, false); !errors.Is(err, inmem.ErrCorrupt) {
		t.Fatalf("finishing an init without its pages: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat("/dev/shm/" + name + importSuffix); !os.IsNotExist(err) {
		t.Fatalf("the failed init's region is left behind (stat: %v)", err)
	}
}

// While a replica copies the master's checkpoint (internal init), writes go
// on and the kilobyte policy comes due again and again: a new checkpoint
// would answer the replica's next PAGE_REQ with PAGE_FAIL and restart its
// copy, and an init slower than the checkpoint interval (a large pool, a
// lossy backplane) would never finish. The master keeps the checkpoint
// being copied (Ready.HoldCheckpoint) while its log is at most half full.
func TestEnvStorageInitKeepsItsCheckpointUnderWrites(t *testing.T) {
	const before, during = 1600, 1000 // the first overflow the 256 KiB log
	g, m, victim := wipedAfterFill(t, 8<<20, before, 200)
	// Every other PAGE message lost: the copy takes retries, hundreds of
	// milliseconds, while a checkpoint comes due every 20 writes (one per
	// millisecond).
	k := 0
	g.drop = func(p *packet) bool { k++; return p.typ == MsgPage && k%2 == 0 }
	promoted := m.st.Checkpointer().Stats().Promoted
	i := before
	g.until("convergence after memory loss under writes", 60*time.Second, func() bool {
		if i < before+during {
			g.write(fmt.Sprintf("key-%05d", i), make([]byte, 200))
			i++
		}
		return victim.n.Counters().Inits > 0 && g.converged()
	})
	if n := victim.n.Counters().InitRestarts; n != 0 {
		t.Fatalf("the init restarted %d times: the master moved the checkpoint it was copying", n)
	}
	if m.st.Checkpointer().Stats().Promoted == promoted {
		t.Fatal("the master never checkpointed again after the init: the hold outlived it")
	}
	if m.st.CheckpointLSN() == 0 {
		t.Fatal("the master never checkpointed")
	}
	t.Logf("%d writes during the init and after; the master promoted %d checkpoints meanwhile", i-before, m.st.Checkpointer().Stats().Promoted-promoted)
}

// An empty site imports in place, and its environment refuses writes while
// the import fills it. If the node gives the init up (here: it is elected
// with what it has and appends its new generation), the import is dropped
// and the environment takes writes again; a failed Finish leaves it empty
// and writable too.
func TestEnvStorageInitInPlaceGivenUp(t *testing.T) {
	opt := inmem.Options{PoolSize: 4 << 20, LogSize: 64 << 10}
	snap := routesSnapshot(t, 3)
	env, err := inmem.Create(opt)
	if err != nil {
		t.Fatal(err)
	}
	st := NewEnvStorage(env, opt, ckpt.Policy{KBytes: 16})
	defer func() {
		st.Close()
		_ = st.Env().Close()
	}()
	begin := func() {
		t.Helper()
		rd := Ready{Init: &InitAction{Begin: true, Meta: snap.Meta(), CkptLSN: snap.LSN()}}
		res, err := st.Apply(&rd, false)
		if err != nil || !res.InitBegun || !res.InitInPlace {
			t.Fatalf("begin: %+v, %v; want an init in place", res, err)
		}
		if _, err := env.Update(func(*inmem.Tx) error { return nil }); !errors.Is(err, inmem.ErrImporting) {
			t.Fatalf("a write during the import: %v, want ErrImporting", err)
		}
	}
	begin()
	rd := Ready{NewGen: 7}
	res, err := st.Apply(&rd, true)
	if err != nil || !res.HasNewGen || !res.InitGivenUp {
		t.Fatalf("new gen with the init given up: %+v, %v", res, err)
	}
	if st.Env() != env || env.Gen() != 7 {
		t.Fatalf("environment %p (gen %d), want the same %p at gen 7", st.Env(), env.Gen(), env)
	}

	st.Close()
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	env2, err := inmem.Create(opt)
	if err != nil {
		t.Fatal(err)
	}
	st = NewEnvStorage(env2, opt, ckpt.Policy{KBytes: 16}) // closed by the deferred call
	env = env2
	begin()
	rd = Ready{Init: &InitAction{Finish: true}}
	if _, err := st.Apply(&rd, false); !errors.Is(err, inmem.ErrCorrupt) {
		t.Fatalf("finishing an init without its pages: %v, want ErrCorrupt", err)
	}
	if _, err := env2.Update(func(tx *inmem.Tx) error { _, err := tx.CreateDB("after"); return err }); err != nil {
		t.Fatalf("a write after the failed init: %v", err)
	}
}

// An init beside a site's data that the node gives up (here: elected with
// what it has) frees the import's region at once, not at the next init or
// when the board closes: it is as large as the pool.
func TestEnvStorageInitBesideGivenUp(t *testing.T) {
	name, env, st := storageWithData(t, "givenup")
	snap := routesSnapshot(t, 3)
	rd := Ready{Init: &InitAction{Begin: true, Meta: snap.Meta(), CkptLSN: snap.LSN()}}
	if res, err := st.Apply(&rd, false); err != nil || !res.InitBegun || res.InitInPlace {
		t.Fatalf("begin: %+v, %v; want an init beside the data", res, err)
	}
	region := "/dev/shm/" + name + importSuffix
	if _, err := os.Stat(region); err != nil {
		t.Fatalf("the import's region: %v", err)
	}
	rd = Ready{NewGen: 7}
	res, err := st.Apply(&rd, true)
	if err != nil || !res.HasNewGen || !res.InitGivenUp || res.InitDone {
		t.Fatalf("new gen with the init given up: %+v, %v", res, err)
	}
	if _, err := os.Stat(region); !os.IsNotExist(err) {
		t.Fatalf("the given-up import's region is still there (stat: %v)", err)
	}
	if st.Env() != env || env.Gen() != 7 {
		t.Fatalf("environment %p (gen %d), want the same %p at gen 7", st.Env(), env.Gen(), env)
	}
	if err := env.View(func(tx *inmem.Tx) error {
		if tx.DB("local") == nil {
			return errors.New("the site's own database is gone")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// routesSnapshot pins, until the test ends, the snapshot of a master's
// environment after commits transactions of one route each.
func routesSnapshot(t *testing.T, commits int) *inmem.Snapshot {
	t.Helper()
	src, err := inmem.Create(inmem.Options{PoolSize: 4 << 20, LogSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	for i := range commits {
		if _, err := src.Update(func(tx *inmem.Tx) error {
			db, err := tx.CreateDBIfNotExists("routes")
			if err != nil {
				return err
			}
			return db.Put(fmt.Appendf(nil, "k%d", i), []byte("v"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := src.PinSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Release)
	return snap
}

// An init whose copy the master's moving checkpoint cuts short resumes it:
// writes during the copy fill more than half the master's log, so the
// master moves the checkpoint being copied (its writes come first) and
// the replica starts over from the new one, keeping the pages it holds
// that the master has not written since (the master sends their numbers
// alone). It used to copy everything again each time, and a copy slower
// than half a log of writes never finished. Against a master of an older
// build, which drops the resuming requests (32 bytes) as malformed, the
// replica asks for every page after a retry and the copy still finishes.
func TestEnvStorageInitResumes(t *testing.T) {
	for _, oldMaster := range []bool{false, true} {
		t.Run(map[bool]string{false: "resumed", true: "older-master"}[oldMaster], func(t *testing.T) {
			testInitResumes(t, oldMaster)
		})
	}
}

func testInitResumes(t *testing.T, oldMaster bool) {
	const before = 3000 // 3000 values of 1000 bytes: several hundred pages
	g, m, victim := wipedAfterFill(t, 16<<20, before, 1000)
	// One PAGE message in four lost: the copy takes retries while the
	// writes below, new keys every millisecond, fill half the log. They
	// stop once the copy was cut short, so the resumed one can finish.
	k, refused := 0, 0
	g.drop = func(p *packet) bool {
		if oldMaster && p.typ == MsgPageReq && len(p.payload) == HeaderSize+32 {
			refused++
			return true
		}
		k++
		return p.typ == MsgPage && k%4 == 0
	}
	i := before
	g.until("convergence after memory loss under writes", 60*time.Second, func() bool {
		if victim.n.Counters().InitRestarts == 0 {
			for range 2 {
				g.write(fmt.Sprintf("key-%05d", i), make([]byte, 1000))
				i++
			}
		}
		return victim.n.Counters().Inits > 0 && g.converged()
	})
	c := victim.n.Counters()
	switch {
	case c.InitRestarts == 0 || c.InitResumes == 0:
		t.Fatalf("restarts %d, resumes %d: the test wants the copy cut short and resumed", c.InitRestarts, c.InitResumes)
	case !oldMaster && c.InitPagesKept == 0:
		t.Fatal("the resumed copy kept no page")
	case oldMaster && (refused == 0 || c.InitPagesKept != 0):
		t.Fatalf("older master: %d resuming requests refused, %d pages kept; want some and none", refused, c.InitPagesKept)
	}
	t.Logf("%d writes during the init; %d restarts, %d resumed, %d pages kept, %d pages in the final snapshot, %d resuming requests refused", i-before,
		c.InitRestarts, c.InitResumes, c.InitPagesKept, len(m.st.Checkpointer().Snapshot().PageList()), refused)
}

// wipedAfterFill is a three-site group (log 256 KiB, a checkpoint every
// 4 KiB) whose master committed n values of size bytes, converged, and
// then one of whose replicas, victim, lost its memory.
func wipedAfterFill(t *testing.T, pool int64, n, size int) (g *envGroup, m, victim *envSite) {
	t.Helper()
	g = newEnvGroupWith(t, 3, inmem.Options{PoolSize: pool, LogSize: 256 << 10}, ckpt.Policy{KBytes: 4}, nil)
	g.until("a master", 10*time.Second, func() bool { return g.master() != nil })
	for i := 0; i < n; i++ {
		g.write(fmt.Sprintf("key-%05d", i), make([]byte, size))
		if i%10 == 0 {
			g.step()
		}
	}
	g.until("convergence", 10*time.Second, g.converged)
	m = g.master()
	victim = g.other(m)
	g.wipe(victim)
	return g, m, victim
}
