package ckpt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
)

func newEnv(t *testing.T, logSize int) *inmem.Env {
	t.Helper()
	e, err := inmem.Create(inmem.Options{PoolSize: 16 << 20, LogSize: logSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return e
}

func put(t *testing.T, e *inmem.Env, i int) inmem.CommitInfo {
	t.Helper()
	info, err := e.Update(func(tx *inmem.Tx) error {
		db, err := tx.CreateDBIfNotExists("d")
		if err != nil {
			return err
		}
		return db.Put(fmt.Appendf(nil, "key%06d", i%500), fmt.Appendf(nil, "value-%d-%s", i, strings.Repeat("x", 100)))
	})
	if err != nil {
		t.Fatalf("put %d: %v", i, err)
	}
	return info
}

// ship applies the master's log after the replica's end and reports the
// checkpoint records it carried.
func ship(t *testing.T, master, replica *inmem.Env) []logbuf.Record {
	t.Helper()
	var ckpts []logbuf.Record
	from := replica.Log().End()
	b, _, err := master.Log().ReadEncoded(from, 1<<30, nil)
	if err != nil {
		t.Fatalf("read master log at %d: %v", from, err)
	}
	for off := 0; off < len(b); {
		r, n, err := logbuf.DecodeRecord(b[off:])
		if err != nil {
			t.Fatal(err)
		}
		if r.Type == logbuf.RecCheckpoint {
			ckpts = append(ckpts, r)
		}
		off += n
	}
	if _, err := replica.ApplyEncoded(b); err != nil {
		t.Fatalf("apply at %d: %v", from, err)
	}
	return ckpts
}

func TestMasterCheckpointPromotesOnlyWhenDurable(t *testing.T) {
	e := newEnv(t, 64<<10)
	c := New(e, Policy{KBytes: 8})
	defer c.Close()
	now := time.Unix(1000, 0)
	var infos []inmem.CommitInfo
	for i := 0; len(infos) < 100; i++ {
		infos = append(infos, put(t, e, i))
		if e.Log().End()-c.LSN() >= 8<<10 {
			break
		}
	}
	promoted, err := c.Maybe(now, 0)
	if err != nil || promoted {
		t.Fatalf("Maybe with nothing durable: promoted %v, %v", promoted, err)
	}
	if c.LSN() != 0 || c.Stats().Candidates != 1 {
		t.Fatalf("candidate must not be promoted yet: LSN %d, stats %+v", c.LSN(), c.Stats())
	}
	cand := e.Log().End() // the checkpoint record sits at the candidate's LSN
	last := infos[len(infos)-1]
	promoted, err = c.Maybe(now, last.End)
	if err != nil || !promoted || c.LSN() != last.End || cand <= last.End {
		t.Fatalf("Maybe durable at %d: promoted %v, %v, LSN %d", last.End, promoted, err, c.LSN())
	}
	if e.Log().Retained() != c.LSN() {
		t.Fatalf("log retains from %d, checkpoint at %d", e.Log().Retained(), c.LSN())
	}
	// Checkpointing keeps a small log from filling up.
	for i := 0; i < 3000; i++ {
		info := put(t, e, i)
		if _, err := c.Maybe(now, info.End); err != nil {
			t.Fatal(err)
		}
	}
	if c.Stats().Promoted < 10 {
		t.Fatalf("only %d promotions over 3000 commits: %+v", c.Stats().Promoted, c.Stats())
	}
}

func TestLogFullWithoutCheckpoint(t *testing.T) {
	e := newEnv(t, 64<<10)
	var last inmem.CommitInfo
	var err error
	for i := 0; i < 5000; i++ {
		var info inmem.CommitInfo
		info, err = e.Update(func(tx *inmem.Tx) error {
			db, err := tx.CreateDBIfNotExists("d")
			if err != nil {
				return err
			}
			return db.Put(fmt.Appendf(nil, "k%d", i), make([]byte, 200))
		})
		if err != nil {
			break
		}
		last = info
	}
	if !errors.Is(err, inmem.ErrLogFull) {
		t.Fatalf("want ErrLogFull from a log nobody checkpoints, got %v", err)
	}
	if e.LastCommit() != last || e.Log().End() != last.End {
		t.Fatalf("failed commit changed state: last %+v, env %+v, log end %d", last, e.LastCommit(), e.Log().End())
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestRollback(t *testing.T) {
	e := newEnv(t, 4<<20)
	c := New(e, Policy{KBytes: 4})
	defer c.Close()
	now := time.Unix(1000, 0)
	hashes := map[uint64]uint64{}
	var ends []uint64
	for i := 0; i < 200; i++ {
		info := put(t, e, i)
		hashes[info.End] = e.ContentHash()
		ends = append(ends, info.End)
		if i >= 150 {
			continue // leave commits after the last checkpoint
		}
		if _, err := c.Maybe(now, info.End); err != nil {
			t.Fatal(err)
		}
	}
	ck := c.LSN()
	if ck == 0 {
		t.Fatal("no checkpoint promoted")
	}
	var target uint64
	for _, end := range ends {
		if end > ck && target == 0 {
			target = end
		}
	}
	// Roll forward targets above the checkpoint: state equals the state then.
	for _, lsn := range []uint64{ends[len(ends)-1], target} {
		if err := c.RollbackTo(lsn); err != nil {
			t.Fatalf("rollback to %d: %v", lsn, err)
		}
		if got := e.ContentHash(); got != hashes[lsn] {
			t.Fatalf("after rollback to %d: hash %#x, want %#x", lsn, got, hashes[lsn])
		}
		if e.Log().End() != lsn {
			t.Fatalf("log end %d after rollback to %d", e.Log().End(), lsn)
		}
	}
	err := c.RollbackTo(ends[0])
	if !errors.Is(err, ErrBelowCheckpoint) || !strings.Contains(err.Error(), "internal init") {
		t.Fatalf("rollback below checkpoint: %v", err)
	}
	// Writing continues after a rollback.
	put(t, e, 7)
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}

// masterAndReplica opens two environments of logSize with a checkpointer
// each, the second as a replica's; both close at cleanup.
func masterAndReplica(t *testing.T, logSize int, kbytes int) (m, r *inmem.Env, mc, rc *Checkpointer) {
	t.Helper()
	m, r = newEnv(t, logSize), newEnv(t, logSize)
	mc, rc = New(m, Policy{KBytes: kbytes}), New(r, Policy{KBytes: kbytes})
	rc.SetMaster(false)
	t.Cleanup(func() { mc.Close(); rc.Close() })
	return m, r, mc, rc
}

func TestReplicaFollowsMasterCheckpoints(t *testing.T) {
	m, r, mc, rc := masterAndReplica(t, 256<<10, 8)
	now := time.Unix(1000, 0)
	hashes := map[uint64]uint64{}
	var ends []uint64
	for i := 0; i < 1500; i++ {
		info := put(t, m, i)
		hashes[info.End] = m.ContentHash()
		ends = append(ends, info.End)
		if _, err := mc.Maybe(now, info.End); err != nil {
			t.Fatal(err)
		}
		for _, rec := range ship(t, m, r) {
			rc.Observe(rec)
		}
		// The replica writes nothing of its own.
		if _, err := rc.Maybe(now, 0); err != nil {
			t.Fatal(err)
		}
		if r.Log().End() != m.Log().End() {
			t.Fatalf("replica log end %d, master %d", r.Log().End(), m.Log().End())
		}
	}
	if rc.LSN() == 0 || rc.LSN() > mc.LSN()+1<<20 || rc.Stats().Missed != 0 {
		t.Fatalf("replica checkpoint at %d, master %d, stats %+v", rc.LSN(), mc.LSN(), rc.Stats())
	}
	if rh, mh := r.ContentHash(), m.ContentHash(); rh != mh {
		t.Fatalf("replica hash %#x, master %#x", rh, mh)
	}
	// Both roll back to the same LSN and agree.
	var target uint64
	for _, end := range ends {
		if end > max(mc.LSN(), rc.LSN()) {
			target = end
			break
		}
	}
	if target == 0 {
		t.Fatal("no commit after the checkpoints")
	}
	for _, c := range []*Checkpointer{mc, rc} {
		if err := c.RollbackTo(target); err != nil {
			t.Fatal(err)
		}
	}
	if m.ContentHash() != hashes[target] || r.ContentHash() != hashes[target] {
		t.Fatalf("after rollback to %d the environments differ from the recorded state", target)
	}
	// Internal init from the master's checkpoint snapshot plus the log after it.
	s := mc.Snapshot()
	im, err := inmem.NewImport(inmem.Options{PoolSize: 16 << 20, LogSize: 256 << 10}, s.Meta())
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, pg := range s.PageList() {
		if buf, err = s.ReadPage(pg, buf); err != nil {
			t.Fatal(err)
		}
		if err := im.PutPage(pg, buf); err != nil {
			t.Fatal(err)
		}
	}
	n, err := im.Finish()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Remove()
	ship(t, m, n)
	if n.ContentHash() != m.ContentHash() {
		t.Fatal("imported snapshot plus log differs from the master")
	}
}

func TestIntervalPolicy(t *testing.T) {
	e := newEnv(t, 1<<20)
	c := New(e, Policy{Interval: time.Second})
	defer c.Close()
	t0 := time.Unix(1000, 0)
	if _, err := c.Maybe(t0, 0); err != nil {
		t.Fatal(err)
	}
	info := put(t, e, 1)
	if _, err := c.Maybe(t0.Add(500*time.Millisecond), info.End); err != nil || c.Stats().Candidates != 0 {
		t.Fatalf("checkpoint before the interval: %+v, %v", c.Stats(), err)
	}
	promoted, err := c.Maybe(t0.Add(time.Second), info.End)
	if err != nil || !promoted || c.LSN() != info.End {
		t.Fatalf("interval checkpoint: promoted %v, %v, LSN %d want %d", promoted, err, c.LSN(), info.End)
	}
	// Nothing written since: no new checkpoint however long we wait.
	end := e.Log().End()
	if _, err := c.Maybe(t0.Add(time.Hour), end); err != nil || c.Stats().Candidates != 1 {
		t.Fatalf("idle checkpoint: %+v, %v", c.Stats(), err)
	}
}

func TestRollbackDropsLaterCandidate(t *testing.T) {
	e := newEnv(t, 1<<20)
	c := New(e, Policy{KBytes: 1})
	defer c.Close()
	now := time.Unix(1000, 0)
	first := put(t, e, 1)
	h := e.ContentHash()
	for i := 2; i < 40; i++ {
		put(t, e, i)
	}
	// A candidate taken but never durable sits after first.End.
	if _, err := c.Maybe(now, 0); err != nil || c.Stats().Candidates != 1 {
		t.Fatalf("candidate: %+v, %v", c.Stats(), err)
	}
	if err := c.RollbackTo(first.End); err != nil {
		t.Fatal(err)
	}
	if e.ContentHash() != h || e.Log().End() != first.End {
		t.Fatal("rollback past an undurable candidate did not restore the state")
	}
	put(t, e, 99)
	if _, err := c.Maybe(now, e.Log().End()); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}

// Under a steady ack lag the pending candidate is kept (not replaced) until the
// durable LSN reaches it, so checkpoints keep being promoted and the log reclaimed.
func TestCheckpointUnderAckLag(t *testing.T) {
	e := newEnv(t, 64<<10)
	c := New(e, Policy{KBytes: 4})
	defer c.Close()
	now := time.Unix(1000, 0)
	var ends []uint64
	for i := 0; i < 3000; i++ {
		ends = append(ends, put(t, e, i).End)
		durable := uint64(0)
		if i >= 40 {
			durable = ends[i-40]
		}
		if _, err := c.Maybe(now, durable); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if c.LSN() > durable && c.LSN() != 0 {
			t.Fatalf("promoted checkpoint %d beyond the durable LSN %d", c.LSN(), durable)
		}
	}
	if st := c.Stats(); st.Replaced != 0 || st.Promoted < 10 {
		t.Fatalf("stats %+v", st)
	}
}

// A replica catching up applies a checkpoint record between every two
// Maybe calls, each durable up to where it stood before that apply: every
// candidate must be promoted before the next one replaces it. Replacing
// first never promoted anything: the first checkpoint kept the replica's log
// and its snapshot's pages for good.
func TestReplicaPromotesBeforeNewerCandidate(t *testing.T) {
	m, r, mc, rc := masterAndReplica(t, 1<<20, 4)
	now := time.Unix(1000, 0)
	const rounds = 20
	for i, round := 0, 0; round < rounds; round++ {
		// The master commits until it takes a checkpoint (durable at once).
		for before := mc.Stats().Candidates; mc.Stats().Candidates == before; i++ {
			info := put(t, m, i)
			if _, err := mc.Maybe(now, info.End); err != nil {
				t.Fatal(err)
			}
		}
		durable := r.Log().End() // everything applied before this batch
		if n := len(ship(t, m, r)); n != 1 {
			t.Fatalf("round %d shipped %d checkpoint records, want 1", round, n)
		}
		if _, err := rc.Maybe(now, durable); err != nil {
			t.Fatal(err)
		}
	}
	if st := rc.Stats(); st.Promoted != rounds-1 || st.Replaced != 0 {
		t.Fatalf("replica stats %+v after %d checkpoint records: want %d promoted, none replaced", st, rounds, rounds-1)
	}
	if r.ContentHash() != m.ContentHash() {
		t.Fatal("replica and master differ")
	}
}
