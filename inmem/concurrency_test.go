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
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
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
