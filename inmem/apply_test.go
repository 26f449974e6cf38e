package inmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// masterTxns commits n transactions of `keys` puts each (keys spread over
// the tree) and returns the content hash after each, by commit end.
func masterTxns(t testing.TB, m *Env, n, keys int) map[uint64]uint64 {
	t.Helper()
	hashes := map[uint64]uint64{}
	for i := 0; i < n; i++ {
		ci, err := m.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("d")
			if err != nil {
				return err
			}
			for j := 0; j < keys; j++ {
				if err := db.Put(fmt.Appendf(nil, "k%03d-%05d", j, i), make([]byte, 150)); err != nil {
					return err
				}
			}
			return nil
		})
		mustNoErr(t, err, "master update")
		hashes[ci.End] = m.ContentHash()
	}
	return hashes
}

// A batch applied as one tree transaction ends as the same content as the
// same transactions applied one by one.
func TestApplyEncodedMergedMatchesSingly(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 8 << 20})
	masterTxns(t, m, 300, 7)
	b, _, err := m.Log().ReadEncoded(0, 8<<20, nil)
	mustNoErr(t, err, "read")
	merged := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 8 << 20})
	_, err = merged.ApplyEncoded(b)
	mustNoErr(t, err, "merged apply")
	singly := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 8 << 20})
	singly.wmu.Lock()
	_, err = singly.applyRun(b, true, false)
	singly.wmu.Unlock()
	mustNoErr(t, err, "apply one by one")
	if merged.ContentHash() != m.ContentHash() || singly.ContentHash() != m.ContentHash() {
		t.Fatal("replica content differs from the master's")
	}
	if merged.LastCommit() != m.LastCommit() || merged.Log().End() != m.Log().End() {
		t.Fatalf("merged replica at %+v (log end %d), master at %+v", merged.LastCommit(), merged.Log().End(), m.LastCommit())
	}
	mustNoErr(t, merged.Check(), "check merged")
	// The merged apply copied each page of a path once for the batch.
	if ms, ss := merged.Stats().Pages.UsedPages, singly.Stats().Pages.UsedPages; ms > ss {
		t.Errorf("merged replica holds %d pages, the one applied one by one %d", ms, ss)
	}
}

// A pool that fills during a merged batch leaves the transactions before
// the failing one applied, as one by one (the batch is retried so).
func TestApplyEncodedPoolFullKeepsEarlier(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 8 << 20})
	hashes := masterTxns(t, m, 400, 20)
	b, _, err := m.Log().ReadEncoded(0, 8<<20, nil)
	mustNoErr(t, err, "read")
	r := newTestEnv(t, Options{PoolSize: 512 << 10, LogSize: 8 << 20})
	_, err = r.ApplyEncoded(b)
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("want ErrPoolFull applying %d bytes to a small pool, got %v", len(b), err)
	}
	last := r.LastCommit()
	if last.End == 0 || r.Log().End() != last.End {
		t.Fatalf("after the failure: last commit %+v, log end %d", last, r.Log().End())
	}
	if want, ok := hashes[last.End]; !ok || r.ContentHash() != want {
		t.Fatalf("replica content at %d is not the master's at that commit", last.End)
	}
	mustNoErr(t, r.Check(), "check after pool full")
}

// BenchmarkApplyEncoded applies batches of 16 transactions of 4 puts each
// (random keys in a tree of 100k) to a replica, as one tree transaction
// per batch and one per transaction.
func BenchmarkApplyEncoded(b *testing.B) {
	for _, merge := range []bool{true, false} {
		b.Run(fmt.Sprintf("merged=%v", merge), func(b *testing.B) {
			m := newTestEnv(b, Options{PoolSize: 256 << 20, LogSize: 64 << 20})
			r := newTestEnv(b, Options{PoolSize: 256 << 20, LogSize: 64 << 20})
			rng := newRand(1)
			put := func(n int) {
				_, err := m.Update(func(tx *Tx) error {
					db, err := tx.CreateDBIfNotExists("d")
					if err != nil {
						return err
					}
					for j := 0; j < n; j++ {
						if err := db.Put(fmt.Appendf(nil, "key-%08d", rng.IntN(100000)), make([]byte, 100)); err != nil {
							return err
						}
					}
					return nil
				})
				mustNoErr(b, err, "master update")
			}
			put(20000)
			for i := 0; i < 40; i++ {
				put(2000)
			}
			all, _, err := m.Log().ReadEncoded(0, 64<<20, nil)
			mustNoErr(b, err, "read")
			r.wmu.Lock()
			_, err = r.applyRun(all, true, false)
			r.wmu.Unlock()
			mustNoErr(b, err, "load replica")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				start := m.Log().End()
				for k := 0; k < 16; k++ {
					put(4)
				}
				batch, _, err := m.Log().ReadEncoded(start, 1<<20, nil)
				mustNoErr(b, err, "read batch")
				m.RetainLog(start)
				r.RetainLog(r.Log().End())
				b.StartTimer()
				r.wmu.Lock()
				_, err = r.applyRun(batch, true, merge)
				r.wmu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestApplyEncodedNoAllocs: a replica applies what it receives without an
// allocation per transaction (the apply reuses its transaction, beginApply),
// merged or one transaction at a time.
func TestApplyEncodedNoAllocs(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 64 << 20, LogSize: 32 << 20})
	r := newTestEnv(t, Options{PoolSize: 64 << 20, LogSize: 32 << 20})
	var batches [][]byte
	for i := range 300 {
		start := m.Log().End()
		for k := range 4 {
			_, err := m.Update(func(tx *Tx) error {
				db, err := tx.CreateDBIfNotExists("d")
				if err != nil {
					return err
				}
				return db.Put(fmt.Appendf(nil, "key-%05d", (i*4+k)%997), make([]byte, 100))
			})
			mustNoErr(t, err, "master update")
		}
		b, _, err := m.Log().ReadEncoded(start, 1<<20, nil)
		mustNoErr(t, err, "read")
		batches = append(batches, b)
	}
	apply := func(merge bool) func() {
		return func() {
			b := batches[0]
			batches = batches[1:]
			r.wmu.Lock()
			_, err := r.applyRun(b, true, merge)
			r.wmu.Unlock()
			mustNoErr(t, err, "apply")
		}
	}
	apply(false)() // the first apply creates the database and the reused transaction
	for _, merge := range []bool{false, true} {
		if a := testing.AllocsPerRun(100, apply(merge)); a > 0 {
			t.Errorf("merged=%v: %.1f allocations per applied batch of 4 transactions, want 0", merge, a)
		}
	}
	for len(batches) > 0 {
		apply(true)()
	}
	if m.ContentHash() != r.ContentHash() {
		t.Fatal("the replica's content is not the master's after applying everything it sent")
	}
	mustNoErr(t, r.Check(), "check the replica")
}

// TestUpdateReusesTx: Update runs in a reused transaction, so the master's
// group commit (one Update per batch) allocates nothing, and a transaction
// kept past its Update refuses writes instead of reaching a later one's data.
func TestUpdateReusesTx(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 8 << 20})
	var key [8]byte
	val := make([]byte, 100)
	var kept *DB
	var i uint64
	put := func(tx *Tx) error {
		db, err := tx.CreateDBIfNotExists("routes")
		if err != nil {
			return err
		}
		kept = db
		return db.Put(key[:], val)
	}
	update := func() {
		i++
		binary.BigEndian.PutUint64(key[:], i%256)
		_, err := e.Update(put)
		mustNoErr(t, err, "update")
	}
	for range 512 { // the tree and the writer's buffers grown
		update()
	}
	if a := testing.AllocsPerRun(200, update); a != 0 {
		t.Errorf("%.1f allocations per Update, want 0", a)
	}
	if err := kept.Put([]byte("late"), val); !errors.Is(err, ErrTxClosed) {
		t.Fatalf("a put through a handle kept past its Update: %v, want ErrTxClosed", err)
	}
	mustNoErr(t, e.View(func(tx *Tx) error {
		if tx.DB("routes").Get([]byte("late")) != nil {
			t.Error("the late put is visible")
		}
		return nil
	}), "view")
}
