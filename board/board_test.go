package board

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/rep"
	"github.com/seed61e250c8/boardha/shm"
)

// testGroup is n boards of one group on a mem hub.
type testGroup struct {
	t      *testing.T
	hub    *backplane.MemHub
	cfg    func(site uint16) Config
	boards map[uint16]*Board
}

// testConfig has timings relaxed enough for a loaded CI machine.
func testConfig(hub *backplane.MemHub, site uint16, n int) Config {
	peers := map[uint16]string{}
	for i := 1; i <= n; i++ {
		peers[uint16(i)] = ""
	}
	return Config{Site: site, Group: "test", Peers: peers, Priority: 100, Transport: MemTransport(hub),
		HeartbeatSend: 5 * time.Millisecond, HeartbeatMonitor: 150 * time.Millisecond,
		ElectionTimeout: 60 * time.Millisecond, AckTimeout: time.Second,
		PoolSize: 8 << 20, LogSize: 1 << 20, CheckpointKiB: 128, Seed: uint64(site)}
}

func newGroup(t *testing.T, n int, mod func(*Config)) *testGroup {
	t.Helper()
	g := &testGroup{t: t, hub: backplane.NewMemHub(backplane.MemConfig{Seed: 1}), boards: map[uint16]*Board{}}
	g.cfg = func(site uint16) Config {
		c := testConfig(g.hub, site, n)
		if mod != nil {
			mod(&c)
		}
		return c
	}
	t.Cleanup(func() {
		for _, b := range g.boards {
			b.Close()
		}
	})
	for i := 1; i <= n; i++ {
		g.start(uint16(i), StartClient)
	}
	return g
}

func (g *testGroup) start(site uint16, mode StartMode) *Board {
	g.t.Helper()
	b, err := Open(g.cfg(site))
	if err != nil {
		g.t.Fatalf("open site %d: %v", site, err)
	}
	g.boards[site] = b
	if err := b.Start(context.Background(), mode); err != nil {
		g.t.Fatalf("start site %d: %v", site, err)
	}
	return b
}

func (g *testGroup) stop(site uint16) {
	g.t.Helper()
	if err := g.boards[site].Close(); err != nil {
		g.t.Errorf("close site %d: %v", site, err)
	}
	delete(g.boards, site)
}

// master waits until every running board agrees on one master.
func (g *testGroup) master(not uint16) *Board {
	g.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var m uint16
		agree := true
		for _, b := range g.boards {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			s, err := b.WaitMaster(ctx)
			cancel()
			if err != nil || s == not || m != 0 && s != m {
				agree = false
				break
			}
			m = s
		}
		if agree && m != 0 && g.boards[m] != nil && g.boards[m].IsMaster() {
			return g.boards[m]
		}
	}
	g.t.Fatalf("no agreed master within 15s")
	return nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition with a deadline, not synchronising
	}
}

func get(b *Board, db, key string) []byte {
	var v []byte
	_ = b.View(func(tx *Tx) error {
		if got := tx.Bucket(db).Get([]byte(key)); got != nil {
			v = append([]byte{}, got...)
		}
		return nil
	})
	return v
}

func put(t *testing.T, b *Board, db, k, v string) Commit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.Update(ctx, func(tx *Tx) error { return tx.Bucket(db).Put([]byte(k), []byte(v)) })
	if err != nil {
		t.Fatalf("put %s=%s on site %d: %v", k, v, b.Site(), err)
	}
	return c
}

func TestWritesReplicate(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	c := put(t, m, "routes", "10.0.0.0/8", "eth1")
	if c.LSN == 0 || !c.Perm {
		t.Fatalf("commit %+v: want an LSN and Perm under QUORUM", c)
	}
	for site, b := range g.boards {
		eventually(t, fmt.Sprintf("the route on site %d", site), 5*time.Second, func() bool {
			return string(get(b, "routes", "10.0.0.0/8")) == "eth1"
		})
	}
	// Replicas refuse local writes.
	for _, b := range g.boards {
		if b == m {
			continue
		}
		_, err := b.Update(context.Background(), func(tx *Tx) error { return nil })
		if !errors.Is(err, ErrNotMaster) {
			t.Fatalf("Update on replica %d: %v, want ErrNotMaster", b.Site(), err)
		}
		if err := b.ViewLeased(func(*Tx) error { return nil }); !errors.Is(err, ErrLeaseExpired) && !errors.Is(err, ErrNotMaster) {
			t.Fatalf("ViewLeased on replica %d: %v", b.Site(), err)
		}
	}
}

func TestApplyFromReplica(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	var r *Board
	for _, b := range g.boards {
		if b != m {
			r = b
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.Apply(ctx, Put("arp", []byte("10.0.0.1"), []byte("02:00:00:00:00:01")), Put("arp", []byte("10.0.0.2"), []byte("x")))
	if err != nil {
		t.Fatalf("Apply on replica %d: %v", r.Site(), err)
	}
	if c.LSN == 0 || !c.Perm {
		t.Fatalf("forwarded commit %+v: want the master's LSN and Perm", c)
	}
	if v := get(m, "arp", "10.0.0.1"); string(v) != "02:00:00:00:00:01" {
		t.Fatalf("master has %q after a forwarded Apply", v)
	}
	if _, err := r.Apply(ctx, Delete("arp", []byte("10.0.0.2"))); err != nil {
		t.Fatalf("forwarded delete: %v", err)
	}
	if v := get(m, "arp", "10.0.0.2"); v != nil {
		t.Fatalf("key still on the master after a forwarded delete: %q", v)
	}
	if st := r.Stat(); st.Counters.AppForwarded != 2 {
		t.Fatalf("replica forwarded %d, want 2", st.Counters.AppForwarded)
	}
	// Apply on the master runs locally.
	if _, err := m.Apply(ctx, Put("arp", []byte("local"), []byte("1"))); err != nil {
		t.Fatalf("Apply on the master: %v", err)
	}
}

func TestFailoverAfterMasterClose(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	put(t, m, "kv", "before", "1")
	old := m.Site()
	for _, b := range g.boards {
		eventually(t, "replication of before", 5*time.Second, func() bool { return get(b, "kv", "before") != nil })
	}
	t0 := time.Now()
	g.stop(old)
	m2 := g.master(old)
	t.Logf("new master %d after %v", m2.Site(), time.Since(t0))
	if m2.Site() == old {
		t.Fatalf("closed master %d still master", old)
	}
	put(t, m2, "kv", "after", "2")
	if v := get(m2, "kv", "before"); string(v) != "1" {
		t.Fatalf("new master lost a Perm write: %q", v)
	}
	if st := m2.Stat(); st.Gen < 2 || st.Role != RoleMaster {
		t.Fatalf("new master stat %+v: want role master, gen >= 2", st)
	}
}

func TestInternalInit(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	// Write more than the log holds so the log is reclaimed and an empty
	// board cannot catch up from it.
	val := bytes.Repeat([]byte("v"), 400)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 5000; i++ {
		_, err := m.Update(ctx, func(tx *Tx) error {
			return tx.Bucket("fill").Put([]byte(fmt.Sprintf("k%06d", i)), val)
		})
		if err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
	var victim uint16
	for s := range g.boards {
		if s != m.Site() {
			victim = s
			break
		}
	}
	g.stop(victim)
	b := g.start(victim, StartClient)
	// WaitMaster returns once the board is synchronised: after the init,
	// never while the pages are still being copied.
	if _, err := b.WaitMaster(ctx); err != nil {
		t.Fatalf("WaitMaster on the restarted board: %v", err)
	}
	if st := b.Stat(); st.Init.Count == 0 || st.Init.Active || get(b, "fill", "k004999") == nil {
		t.Fatalf("WaitMaster returned before the internal init was done: init count %d, active %v, last key present %v",
			st.Init.Count, st.Init.Active, get(b, "fill", "k004999") != nil)
	}
	eventually(t, "internal init of the restarted board", 30*time.Second, func() bool {
		return b.Stat().Init.Count > 0 && get(b, "fill", "k004999") != nil
	})
	st := b.Stat()
	t.Logf("internal init: %d pages in %v (%.0f pages/s), %d frames / %d bytes received", st.Init.PagesTotal, st.Init.LastDuration, st.Init.PagesPerSec,
		st.Counters.FramesRecv, st.Counters.BytesRecv)
	// The pages came over the transport: its receive counters say so.
	if st.Counters.FramesRecv == 0 || st.Counters.BytesRecv < st.Counters.FramesRecv {
		t.Fatalf("transport receive counters after an init: %d frames, %d bytes", st.Counters.FramesRecv, st.Counters.BytesRecv)
	}
	if st.Init.LastDuration <= 0 || st.Init.LastTotalDuration < st.Init.LastDuration {
		t.Fatalf("init durations: last copy %v, from the first copy %v", st.Init.LastDuration, st.Init.LastTotalDuration)
	}
	put(t, m, "fill", "after-init", "1")
	eventually(t, "a write after init", 5*time.Second, func() bool { return get(b, "fill", "after-init") != nil })
	var n int
	b.View(func(tx *Tx) error {
		c := tx.Bucket("fill").Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	if n != 5001 {
		t.Fatalf("initialised board holds %d keys, want 5001", n)
	}
	// Every board converges to the master's content.
	hash := func(b *Board) uint64 {
		var h uint64
		b.View(func(tx *Tx) error { var err error; h, err = tx.ContentHash(); return err })
		return h
	}
	want := hash(m)
	for s, o := range g.boards {
		eventually(t, fmt.Sprintf("site %d to converge", s), 10*time.Second, func() bool { return hash(o) == want })
	}
}

func TestEventsInOrder(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var seq uint64
	sawMaster := false
	for !sawMaster {
		select {
		case ev := <-m.Events():
			if ev.Seq <= seq {
				t.Fatalf("event %v after seq %d: out of order", ev, seq)
			}
			seq = ev.Seq
			if ev.Type == EventMaster {
				sawMaster = true
				if ev.Master != m.Site() {
					t.Fatalf("EventMaster names master %d, want %d", ev.Master, m.Site())
				}
			}
		case <-ctx.Done():
			t.Fatalf("no EventMaster on the master")
		}
	}
	for _, b := range g.boards {
		if b == m {
			continue
		}
		saw := false
		for !saw {
			select {
			case ev := <-b.Events():
				saw = ev.Type == EventNewMaster && ev.Site == m.Site()
			case <-ctx.Done():
				t.Fatalf("no EventNewMaster for %d on site %d", m.Site(), b.Site())
			}
		}
	}
}

func TestLeasedReadsRefusedAfterPartition(t *testing.T) {
	g := newGroup(t, 3, func(c *Config) { c.Leases = true; c.LeaseTimeout = 100 * time.Millisecond })
	m := g.master(0)
	put(t, m, "kv", "k", "v")
	eventually(t, "a leased read on the master", 5*time.Second, func() bool {
		var v []byte
		err := m.ViewLeased(func(tx *Tx) error { v = tx.Bucket("kv").Get([]byte("k")); return nil })
		return err == nil && string(v) == "v"
	})
	var others []uint16
	for s := range g.boards {
		if s != m.Site() {
			others = append(others, s)
		}
	}
	g.hub.Partition([]uint16{m.Site()}, others)
	eventually(t, "leased reads refused on the partitioned master", 5*time.Second, func() bool {
		err := m.ViewLeased(func(*Tx) error { return nil })
		return errors.Is(err, ErrLeaseExpired) || errors.Is(err, ErrNotMaster)
	})
	g.hub.Heal()
}

func TestGroupCommit(t *testing.T) {
	// A slow heartbeat makes the hold (how long queued writes wait for the
	// commit in flight before going out pipelined) 10 ms: writers started
	// on a busy machine still arrive within it.
	g := newGroup(t, 3, func(c *Config) { c.HeartbeatSend = 20 * time.Millisecond })
	m := g.master(0)
	var others []uint16
	for s := range g.boards {
		if s != m.Site() {
			others = append(others, s)
		}
	}
	before := m.Stat().Counters
	const writers = 64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	write := func(i int) {
		defer wg.Done()
		c, err := m.Update(ctx, func(tx *Tx) error { return tx.Bucket("gc").Put([]byte(fmt.Sprint(i)), []byte("x")) })
		if err == nil && !c.Perm {
			err = fmt.Errorf("writer %d: commit not perm", i)
		}
		errs <- err
	}
	// The first commit stays in flight (no ack crosses the partition), so
	// the other writes queue behind it (a queue held longer than the hold
	// time goes out anyway, pipelined): they share a few transactions.
	g.hub.Partition([]uint16{m.Site()}, others)
	wg.Add(1)
	go write(0)
	eventually(t, "the first commit in flight", 5*time.Second, func() bool { return m.Stat().Queue.InFlight == 1 })
	for i := 1; i < writers; i++ {
		wg.Add(1)
		go write(i)
	}
	eventually(t, "every write queued or in flight", 5*time.Second, func() bool {
		q := m.Stat().Queue
		return q.Pending+q.InFlight == writers
	})
	g.hub.Heal()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := m.Stat().Counters
	commits, batches := after.Commits-before.Commits, after.Batches-before.Batches
	t.Logf("%d commits in %d batches", commits, batches)
	if commits != writers || batches > writers/4 {
		t.Fatalf("%d commits in %d batches: want %d commits in at most %d batches", commits, batches, writers, writers/4)
	}
	// A failing fn does not sink the others.
	var wg2 sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		wg2.Add(1)
		go func(i int) {
			defer wg2.Done()
			_, results[i] = m.Update(ctx, func(tx *Tx) error {
				if i == 3 {
					return errors.New("refused")
				}
				return tx.Bucket("gc2").Put([]byte(fmt.Sprint(i)), []byte("x"))
			})
		}(i)
	}
	wg2.Wait()
	for i, err := range results {
		if (i == 3) != (err != nil) {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
}

func TestUpdateFnPanicIsAnError(t *testing.T) {
	g := newGroup(t, 1, nil)
	m := g.master(0)
	_, err := m.Update(context.Background(), func(tx *Tx) error { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking fn: %v", err)
	}
	put(t, m, "kv", "still", "works")
}

func TestPoolFull(t *testing.T) {
	g := newGroup(t, 1, func(c *Config) { c.PoolSize = 64 * 4096; c.LogSize = 4 << 20; c.CheckpointKiB = 64 })
	m := g.master(0)
	val := bytes.Repeat([]byte("p"), 900)
	var err error
	ok := 0
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = m.Update(context.Background(), func(tx *Tx) error {
			return tx.Bucket("big").Put([]byte(fmt.Sprintf("%08d", i)), val)
		})
		if err == nil {
			ok++
		}
	}
	if !errors.Is(err, ErrPoolFull) || !errors.Is(err, inmem.ErrPoolFull) {
		t.Fatalf("filling the pool: %v, want ErrPoolFull (board and inmem)", err)
	}
	// The refused transaction left nothing behind; reads still work.
	n := 0
	m.View(func(tx *Tx) error {
		c := tx.Bucket("big").Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	if n != ok {
		t.Fatalf("%d keys after %d successful writes", n, ok)
	}
}

func TestOpenRejectsInvalidConfig(t *testing.T) {
	hub := backplane.NewMemHub(backplane.MemConfig{})
	c := testConfig(hub, 1, 1)
	c.HeartbeatSend = time.Hour
	_, err := Open(c)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "HeartbeatSend") {
		t.Fatalf("Open with a bad heartbeat: %v", err)
	}
}

func TestCloseFailsCalls(t *testing.T) {
	g := newGroup(t, 1, nil)
	m := g.master(0)
	g.stop(m.Site())
	if _, err := m.Update(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}
	if err := m.View(func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// attachedGroup is a group of one board whose region is named name, with
// routes/a set to v, and a Reader attached to it (closed when the test
// ends).
func attachedGroup(t *testing.T, name, v string) (*testGroup, *Board, *Reader) {
	t.Helper()
	g := newGroup(t, 1, func(c *Config) { c.ShmName = name })
	m := g.master(0)
	put(t, m, "routes", "a", v)
	r, err := Attach(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return g, m, r
}

// TestViewAllocs: a view with one lookup allocates nothing, on the board
// and through an attachment: a forwarding agent views at every lookup, and
// garbage made there would cost the board's own commits collections.
func TestViewAllocs(t *testing.T) {
	_, m, r := attachedGroup(t, fmt.Sprintf("boardha-test-allocs-%d", os.Getpid()), "1")
	key := []byte("a")
	var found int
	lookup := func(tx *Tx) error {
		if tx.Bucket("routes").Get(key) != nil {
			found++
		}
		return nil
	}
	for _, v := range []struct {
		name string
		view func(func(*Tx) error) error
	}{{"board", m.View}, {"attached", r.View}} {
		if a := testing.AllocsPerRun(200, func() { _ = v.view(lookup) }); a != 0 {
			t.Errorf("%.1f allocations per %s view, want 0", a, v.name)
		}
	}
	if found == 0 {
		t.Fatal("the lookups found nothing")
	}
}

// TestCommitAllocs: a QUORUM commit in a group of three allocates nothing
// on any board, from the caller's Update through the master's batch, the
// LOG and its apply on the replicas, to the acks that release it. The
// memory hub stands in for the backplane and allocates nothing either;
// the caller's fn is made once, as a firmware's table writer would.
func TestCommitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled objects at random, so commits allocate; run without -race")
	}
	g := newGroup(t, 3, nil)
	m := g.master(0)
	ctx := context.Background()
	var key [8]byte
	val := make([]byte, 100)
	var i uint64
	write := func(tx *Tx) error { return tx.Bucket("routes").Put(key[:], val) }
	update := func() {
		i++
		binary.BigEndian.PutUint64(key[:], i%512)
		c, err := m.Update(ctx, write)
		if err != nil || !c.Perm {
			t.Fatalf("commit %d: %+v, %v; want Perm", i, c, err)
		}
	}
	for range 2000 { // the tree, the log's buffers and the queues grown
		update()
	}
	if a := testing.AllocsPerRun(500, update); a != 0 {
		t.Errorf("%.1f allocations per commit, want 0", a)
	}
}

func TestAttachReadsSharedMemory(t *testing.T) {
	name := fmt.Sprintf("boardha-test-%d", os.Getpid())
	g, m, r := attachedGroup(t, name, "1")
	read := func() string {
		var v string
		if err := r.View(func(tx *Tx) error { v = string(tx.Bucket("routes").Get([]byte("a"))); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := read(); v != "1" {
		t.Fatalf("attached reader sees %q", v)
	}
	put(t, m, "routes", "a", "2")
	if v := read(); v != "2" {
		t.Fatalf("attached reader sees %q after an update", v)
	}
	g.stop(1)
	if err := r.View(func(*Tx) error { return nil }); !errors.Is(err, ErrOwnerGone) {
		t.Fatalf("attached view after the board closed: %v, want ErrOwnerGone", err)
	}
	if _, err := os.Stat("/dev/shm/" + name); !os.IsNotExist(err) {
		t.Fatalf("region left behind after Close: %v", err)
	}
}

// TestAttachAcrossInternalInit: a board restarted empty gets its data by
// internal init into its own pool, so a Reader attached to the empty
// region reads the data once the init is done, without attaching again,
// and no second region was made. A board restarted on a region holding
// data it cannot catch up from imports beside it into a new region that
// takes the name: a Reader attached to the old one learns it is gone
// (ErrOwnerGone) instead of showing it for ever, and attaching again
// reads the data.
func TestAttachAcrossInternalInit(t *testing.T) {
	for _, withData := range []bool{false, true} {
		t.Run(map[bool]string{false: "empty", true: "with-data"}[withData], func(t *testing.T) {
			testAttachAcrossInit(t, withData)
		})
	}
}

func testAttachAcrossInit(t *testing.T, withData bool) {
	name := fmt.Sprintf("boardha-test-reinit-%d", os.Getpid())
	t.Cleanup(func() { _ = shm.Remove(name) })
	g := newGroup(t, 3, func(c *Config) {
		if c.Site == 3 {
			c.ShmName, c.KeepShm = name, withData
		}
	})
	m := g.master(3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if withData {
		fillKeys(t, m, 0, 100)
		caughtUp(t, g.boards[3], m)
	}
	g.stop(3)
	fillKeys(t, m, 100, 5000) // more than the log holds: only an init can catch up
	b, err := Open(g.cfg(3))
	if err != nil {
		t.Fatal(err)
	}
	g.boards[3] = b
	r, err := Attach(name) // the region as the board found it, before it starts
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := b.Start(ctx, StartClient); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitMaster(ctx); err != nil || b.Stat().Init.Count == 0 {
		t.Fatalf("the restarted board: %v, %d inits", err, b.Stat().Init.Count)
	}
	caughtUp(t, b, m)
	if got := b.Stat().Init.InPlace; got == withData {
		t.Fatalf("init in place: %v, want %v (the region held data: %v)", got, !withData, withData)
	}
	if _, err := os.Stat("/dev/shm/" + name + ".init"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a region built beside the pool is left: %v", err)
	}
	hasLast := func(tx *Tx) error {
		if tx.Bucket("fill").Get([]byte("k004999")) == nil {
			return fmt.Errorf("k004999 missing from the imported region")
		}
		return nil
	}
	if !withData {
		if err := r.View(hasLast); err != nil {
			t.Fatalf("the reader attached to the empty pool: %v", err)
		}
		return
	}
	if err := r.View(func(*Tx) error { return nil }); !errors.Is(err, ErrOwnerGone) {
		t.Fatalf("a view of the region the init replaced: %v, want ErrOwnerGone", err)
	}
	r2, err := Attach(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.View(hasLast); err != nil {
		t.Fatal(err)
	}
}

// fillKeys commits fill/k<i> for i in [from, to) on master m, 400 bytes
// each, one transaction per key.
func fillKeys(t *testing.T, m *Board, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := bytes.Repeat([]byte("v"), 400)
	for i := from; i < to; i++ {
		if _, err := m.Update(ctx, func(tx *Tx) error { return tx.Bucket("fill").Put(fmt.Appendf(nil, "k%06d", i), val) }); err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
}

// TestInitFailureIsReported: a board restarted on its data too far behind
// the master, whose import beside that data cannot begin (here the import
// region's name is taken by a directory it cannot remove, as a full memory
// file system would refuse the region), says why in Stat.Init, keeps
// serving its own data, and finishes a fresh copy once the cause is gone.
func TestInitFailureIsReported(t *testing.T) {
	name := fmt.Sprintf("boardha-test-initfail-%d", os.Getpid())
	block := "/dev/shm/" + name + ".init"
	t.Cleanup(func() {
		_ = os.RemoveAll(block)
		_ = shm.Remove(name)
	})
	g := newGroup(t, 3, func(c *Config) {
		if c.Site == 3 {
			c.ShmName, c.KeepShm = name, true
		}
	})
	m := g.master(3)
	fillKeys(t, m, 0, 100)
	caughtUp(t, g.boards[3], m)
	g.stop(3)
	fillKeys(t, m, 100, 5000)
	if err := os.MkdirAll(block+"/in-the-way", 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := Open(g.cfg(3))
	if err != nil {
		t.Fatal(err)
	}
	g.boards[3] = b
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Start(ctx, StartClient); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failed init in the board's stat", 30*time.Second, func() bool {
		st := b.Stat()
		return st.Init.Failures > 0 && st.Init.LastError != ""
	})
	st := b.Stat()
	if !strings.Contains(st.Init.LastError, "leftover region") || st.Init.Count != 0 {
		t.Fatalf("init stat after the failure: %+v", st.Init)
	}
	if v := get(b, "fill", "k000099"); v == nil {
		t.Fatal("the board stopped serving its own data while its init failed")
	}
	if err := os.RemoveAll(block); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitMaster(ctx); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, b, m)
	st = b.Stat()
	if st.Init.Count != 1 || st.Init.Active || st.Init.LastError != "" || st.Init.Failures == 0 {
		t.Fatalf("init stat after the cause was removed: %+v", st.Init)
	}
	if st.Init.LastTotalDuration <= st.Init.LastDuration {
		t.Fatalf("the init took %v from its first copy and %v in its last: the failed copies are not counted", st.Init.LastTotalDuration, st.Init.LastDuration)
	}
	t.Logf("%d failed, then a copy of %d pages in %v (%v from the first)", st.Init.Failures, st.Init.PagesTotal, st.Init.LastDuration, st.Init.LastTotalDuration)
}

// caughtUp waits until replica r has applied what master m has committed.
func caughtUp(t *testing.T, r, m *Board) {
	t.Helper()
	want := m.Stat().LSN
	eventually(t, fmt.Sprintf("site %d at LSN %d", r.Site(), want), 30*time.Second, func() bool { return r.Stat().LSN >= want })
}

// TestStatShowsAttachedReaders: Stat names the processes attached to the
// region, and one that stays in a view while commits go on shows as
// reading, transactions behind, with pages held for it; once it lets go,
// the pages are reused.
func TestStatShowsAttachedReaders(t *testing.T) {
	_, m, r := attachedGroup(t, fmt.Sprintf("boardha-test-readers-%d", os.Getpid()), "0")
	ours := func(st Stat) (ReaderStat, bool) {
		for _, rs := range st.Pool.Readers {
			if rs.PID == os.Getpid() {
				return rs, true
			}
		}
		return ReaderStat{}, false
	}
	if rs, ok := ours(m.Stat()); !ok || rs.Reading {
		t.Fatalf("attached, not reading: Stat readers %+v", m.Stat().Pool.Readers)
	}
	const commits = 20
	err := r.View(func(tx *Tx) error {
		for i := 1; i <= commits; i++ {
			put(t, m, "routes", "a", fmt.Sprint(i))
		}
		st := m.Stat()
		rs, ok := ours(st)
		if !ok || !rs.Reading || rs.Behind < commits {
			t.Errorf("a reader in a view through %d commits: Stat readers %+v, want it reading at least %d behind", commits, st.Pool.Readers, commits)
		}
		if st.Pool.HeldPages == 0 || st.Pool.OldestBehind < commits {
			t.Errorf("pages held %d, oldest snapshot %d behind: want pages held for the reader, %d or more behind", st.Pool.HeldPages, st.Pool.OldestBehind, commits)
		}
		if v := string(tx.Bucket("routes").Get([]byte("a"))); v != "0" {
			t.Errorf("the reader's snapshot moved: %q", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	put(t, m, "routes", "a", "after")
	if rs, ok := ours(m.Stat()); !ok || rs.Reading {
		t.Fatalf("after the view: Stat readers %+v, want ours not reading", m.Stat().Pool.Readers)
	}
}

// TestReaderHeldLongIsCounted: an attached reader that stays in one view
// for Config.ReaderHoldWarn is counted in Stat (and logged), once for that
// snapshot however long it stays.
func TestReaderHeldLongIsCounted(t *testing.T) {
	name := fmt.Sprintf("boardha-test-holdwarn-%d", os.Getpid())
	g := newGroup(t, 1, func(c *Config) { c.ShmName, c.ReaderHoldWarn = name, time.Second })
	m := g.master(0)
	put(t, m, "routes", "a", "1")
	r, err := Attach(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	count := func() uint64 { return m.Stat().Counters.ReaderHoldWarnings }
	if n := count(); n != 0 {
		t.Fatalf("%d warnings before any view", n)
	}
	start := time.Now()
	err = r.View(func(tx *Tx) error {
		// The watch looks once a second: the threshold and two looks.
		eventually(t, "the held view to be counted", 10*time.Second, func() bool { return count() > 0 })
		// Held on across two more looks, the same snapshot is not counted
		// again. (The stimulus is holding the view that long.)
		time.Sleep(2100 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("one snapshot held for %v counted %d times, want once", time.Since(start).Round(time.Millisecond), n)
	}
	g.stop(1)
}

func TestStepDownAndElect(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := m.StepDown(ctx); err != nil {
		t.Fatalf("StepDown: %v", err)
	}
	if m.IsMaster() {
		t.Fatalf("site %d still master after StepDown", m.Site())
	}
	m2 := g.master(0)
	put(t, m2, "kv", "after-stepdown", "1")
	var r *Board
	for _, b := range g.boards {
		if b != m2 {
			r = b
			break
		}
	}
	if _, err := r.Elect(ctx); err != nil {
		t.Fatalf("Elect on replica %d: %v", r.Site(), err)
	}
	m3 := g.master(0)
	if v := get(m3, "kv", "after-stepdown"); string(v) != "1" {
		t.Fatalf("master %d after Elect lacks a Perm write: %q", m3.Site(), v)
	}
}

// A replica synchronised with one master is not ready for the next one
// until it has synchronised with it too (or been initialised by it):
// WaitMaster must not return in between.
func TestNotReadyUntilSynchronisedWithNewMaster(t *testing.T) {
	g := newGroup(t, 2, nil)
	m := g.master(0)
	var r *Board
	for s, b := range g.boards {
		if s != m.Site() {
			r = b
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.WaitMaster(ctx); err != nil {
		t.Fatal(err)
	}
	// What the node reports when a new master is adopted, before the
	// synchronisation with it: drive the mapping directly, and read what
	// it publishes in the same turn of the runtime (read after it, a real
	// resynchronisation on a loaded machine, as under -race in CI, could
	// have made the board ready again meanwhile).
	var ready bool
	if err := r.do(ctx, func() {
		r.rt.event(rep.Event{Kind: rep.EventNewMaster, Site: m.Site(), Gen: 1 << 20})
		r.rt.publish()
		ready = r.pub.Load().ready
	}); err != nil {
		t.Fatal(err)
	}
	if ready {
		t.Fatal("still ready after a new master was adopted, before synchronising with it")
	}
}

// TestWritesGatherWhileRuntimeBusy: writes submitted while another goroutine
// holds the runtime are committed together by that goroutine when it lets
// go, also under AckNone, where no commit waits for acks (they used to
// queue on the lock and commit one by one).
func TestWritesGatherWhileRuntimeBusy(t *testing.T) {
	g := newGroup(t, 3, func(c *Config) { c.AckPolicy = AckNone })
	m := g.master(0)
	before := m.Stat().Counters
	const writers = 32
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, writers)
	m.rtMu.Lock()
	for i := range writers {
		go func() {
			_, err := m.Update(ctx, func(tx *Tx) error { return tx.Bucket("busy").Put([]byte(fmt.Sprint(i)), []byte("x")) })
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.inboxN.Load() < writers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the inbox with a deadline while holding the runtime, not synchronising
	}
	queued := m.inboxN.Load()
	m.unlockRT()
	if queued != writers {
		t.Fatalf("%d of %d writes in the inbox after 5s", queued, writers)
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	after := m.Stat().Counters
	if c, b := after.Commits-before.Commits, after.Batches-before.Batches; c != writers || b != 1 {
		t.Fatalf("%d commits in %d batches; want %d in 1", c, b, writers)
	}
	if v := get(m, "busy", "7"); string(v) != "x" {
		t.Fatalf("key 7 = %q after the batch", v)
	}
}

// electionsBesides sums the elections the boards other than m started.
func (g *testGroup) electionsBesides(m *Board) (n uint64) {
	for s, b := range g.boards {
		if s != m.Site() {
			n += b.Stat().Election.Elections
		}
	}
	return n
}

// TestKeepAliveWhileRuntimeHeld: while the master's runtime is held (as by
// a thread the OS descheduled) the loop speaks for it, and the replicas do
// not elect; once it has been held for keepAliveLimit the loop stops, and
// the replicas replace what is now a wedged master.
func TestKeepAliveWhileRuntimeHeld(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	put(t, m, "db", "k", "v")
	elections := func() uint64 { return g.electionsBesides(m) }
	before, kaBefore := elections(), m.ctr.keepAlives.Load()
	monitor := m.cfg.HeartbeatMonitor

	m.rtMu.Lock()
	held := time.Now()
	time.Sleep(3 * monitor) // holding the runtime for a span, not synchronising
	m.unlockRT()
	if got := elections() - before; got != 0 {
		t.Fatalf("replicas started %d elections while the master's runtime was held for %v", got, time.Since(held))
	}
	if m.ctr.keepAlives.Load() == kaBefore {
		t.Fatal("the loop sent no keepalive while the master's runtime was held")
	}
	if g.master(0) != m {
		t.Fatal("the master changed")
	}
	put(t, m, "db", "k", "v2")

	// Held for good: the keepalives stop after keepAliveLimit.
	before = elections()
	m.rtMu.Lock()
	held = time.Now()
	eventually(t, "an election while the master's runtime is held", 10*time.Second, func() bool { return elections() > before })
	elapsed := time.Since(held)
	m.unlockRT()
	if elapsed < keepAliveLimit(m.cfg) {
		t.Fatalf("replicas elected %v after the master's runtime was held, before the keepalives should stop (%v)", elapsed, keepAliveLimit(m.cfg))
	}
	g.master(0) // the group settles (the old master may win again)
}

// TestKeepAliveWhileControlCallWaits: a control call (Stat here, as a
// monitoring agent polls it) that reaches the loop while the master's
// runtime is held is left to the holder; the loop goes on speaking for the
// master meanwhile, and the call completes once the runtime is let go. The
// loop used to wait for the runtime to run the call, and fell silent.
func TestKeepAliveWhileControlCallWaits(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	put(t, m, "db", "k", "v")
	elections := func() uint64 { return g.electionsBesides(m) }
	before := elections()
	monitor := m.cfg.HeartbeatMonitor

	m.rtMu.Lock()
	stat := make(chan Stat, 1)
	go func() { stat <- m.Stat() }()
	deadline := time.Now().Add(5 * time.Second)
	for len(m.ctrlCh) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond) // polling for the loop to take the call, with a deadline, not synchronising
	}
	if len(m.ctrlCh) > 0 {
		m.unlockRT()
		t.Fatal("the loop did not take the Stat call within 5s")
	}
	kaTaken := m.ctr.keepAlives.Load()
	held := time.Now()
	time.Sleep(3 * monitor) // holding the runtime for a span, not synchronising
	kaHeld := m.ctr.keepAlives.Load() - kaTaken
	m.unlockRT()
	if kaHeld == 0 {
		t.Fatalf("the loop sent no keepalive in the %v the runtime was held after it took a Stat call", time.Since(held))
	}
	if got := elections() - before; got != 0 {
		t.Fatalf("replicas started %d elections while the master's runtime was held with a Stat call waiting", got)
	}
	select {
	case st := <-stat:
		if st.Role != RoleMaster || len(st.Sites) == 0 {
			t.Fatalf("the waiting Stat came back without the runtime's view: role %v, %d sites", st.Role, len(st.Sites))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Stat call did not complete after the runtime was let go")
	}
}

// TestRecycledRequestsGetTheirOwnResults: writers' requests and result
// channels are recycled, so a result delivered twice, or to a request
// after its caller gave up, would reach a later Update. Each writer checks
// that every Update it makes ran its own fn before returning and that its
// commit LSNs strictly increase; every few calls a writer gives up on one
// (its context ends), which must not hand its result to anyone else.
func TestRecycledRequestsGetTheirOwnResults(t *testing.T) {
	g := newGroup(t, 3, nil)
	m := g.master(0)
	const writers, calls = 16, 300
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := range calls {
				// A bounded wait: a stale result left in a recycled channel
				// would wedge the runtime (its own send finds it full).
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ran := false
				key := []byte(fmt.Sprintf("w%02d-%04d", w, i))
				giveUp := i%37 == 36
				c, err := m.Update(ctx, func(tx *Tx) error {
					ran = true
					if giveUp {
						cancel() // the caller stops waiting while its commit goes on
					}
					return tx.Bucket("recycle").Put(key, key)
				})
				cancel()
				if giveUp {
					if err == nil && !ran {
						errs <- fmt.Errorf("writer %d call %d: a result without its fn having run", w, i)
						return
					}
					continue
				}
				switch {
				case err != nil:
					errs <- fmt.Errorf("writer %d call %d: %w", w, i, err)
					return
				case !ran:
					errs <- fmt.Errorf("writer %d call %d: a result without its fn having run (LSN %d)", w, i, c.LSN)
					return
				case c.LSN <= last:
					errs <- fmt.Errorf("writer %d call %d: LSN %d after %d: another call's result", w, i, c.LSN, last)
					return
				}
				last = c.LSN
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
