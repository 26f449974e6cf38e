package inmem

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// In-process readers run concurrently with the writer and always see whole
// commits; their pages are not reused while they hold a snapshot.
func TestConcurrentReadersInProcess(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 16 << 20, LogSize: 32 << 20})
	initInvariant(t, e)
	var stop atomic.Bool
	var views atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := uint64(0)
			for !stop.Load() {
				err := e.View(func(tx *Tx) error {
					c, err := checkInvariant(tx)
					if err == nil && c < last {
						err = fmt.Errorf("counter went back from %d to %d", last, c)
					}
					last = c
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				views.Add(1)
			}
		}()
	}
	steps := uint64(0)
	for ; steps < 400 || views.Load() < 200; steps++ {
		invariantStep(t, e, steps)
		if steps%200 == 0 {
			e.RetainLog(e.Log().End())
		}
		if len(errs) > 0 || steps > 100000 {
			break
		}
	}
	stopReaders(t, &stop, &wg, errs)
	t.Logf("%d commits, %d concurrent views", steps, views.Load())
}

// A cursor in a write transaction survives puts and deletes between its calls.
func TestCursorAcrossWrites(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 16 << 20, PageSize: 1024})
	_, err := e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		for i := range 2000 {
			if err := db.Put(fmt.Appendf(nil, "k%05d", i), make([]byte, 30)); err != nil {
				return err
			}
		}
		// Delete every other key while walking, and insert keys behind the cursor.
		c := db.Cursor()
		n := 0
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if n%2 == 0 {
				if err := db.Delete(k); err != nil {
					return err
				}
			}
			if err := db.Put(fmt.Appendf(nil, "a%05d", n), nil); err != nil {
				return err
			}
			n++
		}
		if n != 2000 {
			return fmt.Errorf("walked %d keys, want 2000", n)
		}
		left := 0
		for k, _ := c.Seek([]byte("k")); k != nil; k, _ = c.Next() {
			left++
		}
		if left != 1000 {
			return fmt.Errorf("%d keys left, want 1000", left)
		}
		return tx.Check()
	})
	mustNoErr(t, err, "update")
}

// Growing a deep tree and deleting everything in random order exercises leaf and
// branch merges and root collapse; the tree stays valid and shrinks to one page.
func TestGrowAndShrink(t *testing.T) {
	r := newRand(testSeed(t, 7))
	e := newTestEnv(t, Options{PoolSize: 32 << 20, LogSize: 32 << 20, PageSize: 1024})
	const n = 20000
	perm := r.Perm(n)
	for start := 0; start < n; start += 1000 {
		_, err := e.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("d")
			if err != nil {
				return err
			}
			for _, i := range perm[start : start+1000] {
				if err := db.Put(fmt.Appendf(nil, "key-%08d", i), make([]byte, i%40)); err != nil {
					return err
				}
			}
			return nil
		})
		mustNoErr(t, err, "fill")
	}
	mustNoErr(t, e.Check(), "check full")
	perm = r.Perm(n)
	for start := 0; start < n; start += 500 {
		_, err := e.Update(func(tx *Tx) error {
			db := tx.DB("d")
			for _, i := range perm[start : start+500] {
				if err := db.Delete(fmt.Appendf(nil, "key-%08d", i)); err != nil {
					return err
				}
			}
			return tx.Check()
		})
		mustNoErr(t, err, fmt.Sprintf("delete batch at %d", start))
	}
	err := e.View(func(tx *Tx) error {
		db := tx.DB("d")
		if k, _ := db.Cursor().First(); k != nil {
			return fmt.Errorf("key %q left", k)
		}
		p, err := tx.page(db.root)
		if err != nil {
			return err
		}
		if pType(p) != pageLeaf {
			return fmt.Errorf("empty tree's root is not a leaf")
		}
		return nil
	})
	mustNoErr(t, err, "empty")
	e.RetainLog(e.Log().End())
	st := e.Stats()
	// Pending pages are still allocated in shm's view until released.
	if st.Pages.UsedPages-st.PendingPages > 2+e.lay.logPages+2 {
		t.Fatalf("after deleting everything %d pages used, %d pending", st.Pages.UsedPages, st.PendingPages)
	}
}

// With an old snapshot pinned (a checkpoint), the pages later commits copy
// and free are reused at once unless a live snapshot may see them: a pool
// of 1024 pages carries thousands of commits, the pinned snapshot keeps its
// content, and concurrent readers always see whole commits.
func TestPinnedSnapshotDoesNotHoldLaterPages(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 4 << 20, LogSize: 32 << 20})
	initInvariant(t, e)
	for i := range uint64(20) {
		invariantStep(t, e, i)
	}
	pinned, _, err := e.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Release()
	want := viewHash(t, pinned.View)

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := e.View(func(tx *Tx) error { _, err := checkInvariant(tx); return err }); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	const steps = 5000 // ~3 pages copied each: far more than the pool holds
	for i := uint64(20); i < steps; i++ {
		invariantStep(t, e, i)
		if i%500 == 0 {
			e.RetainLog(e.Log().End())
		}
		if len(errs) > 0 {
			break
		}
	}
	stopReaders(t, &stop, &wg, errs)
	if got := viewHash(t, pinned.View); got != want {
		t.Fatalf("the pinned snapshot's content changed: hash %x, was %x", got, want)
	}
	st := e.Stats()
	t.Logf("after %d commits with a pinned snapshot: %d pages used, %d pending of %d", steps, st.Pages.UsedPages, st.PendingPages, st.Pages.TotalPages)
}

// A run only a newer pinned snapshot can see waits in recheck; rolling back
// to that snapshot makes it live again, and it must never be freed.
func TestRollbackKeepsRunsOnlyANewerSnapshotSaw(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 4 << 20, LogSize: 32 << 20})
	initInvariant(t, e)
	step := uint64(0)
	steps := func(n int) {
		for range n {
			invariantStep(t, e, step)
			step++
		}
	}
	steps(10)
	older, _, err := e.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	steps(10)
	newer, _, err := e.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	want := viewHash(t, newer.View)
	steps(30) // frees pages born between the checkpoints: only newer sees them
	if len(e.recheck) == 0 {
		t.Fatal("no run waits in recheck: the test does not exercise the rollback")
	}
	t.Logf("%d runs in recheck before the rollback", len(e.recheck))
	if err := e.Rollback(newer, newer.LSN()); err != nil {
		t.Fatal(err)
	}
	if got := viewHash(t, e.View); got != want {
		t.Fatalf("after the rollback the content hash is %x, want the snapshot's %x", got, want)
	}
	newer.Release()
	older.Release()
	// Nothing pinned: every allocated page is reachable or reserved, and no
	// reachable page was handed back to the allocator.
	tx, err := e.Begin(true) // releases what may be released
	if err != nil {
		t.Fatal(err)
	}
	reach := uint64(0)
	if err := tx.walk(e.cur, true, func(_ uint64, n int) error { reach += uint64(n); return nil }); err != nil {
		t.Fatal(err)
	}
	st := e.alloc.Stats()
	tx.Abort()
	if reserved := 2 + e.lay.logPages; st.UsedPages != reach+reserved || st.BadFrees != 0 {
		t.Fatalf("page accounting after the rollback: used %d, reachable %d + reserved %d, bad frees %d",
			st.UsedPages, reach, reserved, st.BadFrees)
	}
	step = 20  // the state is the snapshot's again: go on from its step
	steps(200) // reuses whatever was released: a live page among it would break the tree
	if err := e.Check(); err != nil {
		t.Fatalf("tree check after the rollback and later commits: %v", err)
	}
	if err := e.View(func(tx *Tx) error { _, err := checkInvariant(tx); return err }); err != nil {
		t.Fatal(err)
	}
}

// viewHash is the content hash of the snapshot a View-like function shows.
func viewHash(t *testing.T, view func(func(*Tx) error) error) uint64 {
	t.Helper()
	var h uint64
	if err := view(func(tx *Tx) error { var err error; h, err = tx.ContentHash(); return err }); err != nil {
		t.Fatal(err)
	}
	return h
}

// stopReaders stops the reader goroutines, waits for them and fails the
// test with the first error one reported.
func stopReaders(t *testing.T, stop *atomic.Bool, wg *sync.WaitGroup, errs chan error) {
	t.Helper()
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
