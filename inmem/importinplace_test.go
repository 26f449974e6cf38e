package inmem

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
)

// inPlaceTarget creates an empty named environment of opt's geometry with
// newGens RecNewGen commits (which leave the tree empty and move its txid).
func inPlaceTarget(t *testing.T, opt Options, tag string, newGens int) *Env {
	t.Helper()
	opt.Name = fmt.Sprintf("boardha-test-inplace-%d-%s-%s", os.Getpid(), t.Name(), tag)
	opt.Name = string(slices.DeleteFunc([]byte(opt.Name), func(c byte) bool { return c == '/' }))
	e := newTestEnv(t, opt)
	for i := range newGens {
		_, err := e.AppendNewGen(uint32(i + 2))
		mustNoErr(t, err, "new gen")
	}
	return e
}

// putSnapshot stores the snapshot's pages, in their wire form, in the
// order given.
func putSnapshot(t *testing.T, im *Import, s *Snapshot, order []uint64) {
	t.Helper()
	var buf []byte
	for _, pg := range order {
		var err error
		buf, err = s.ReadPage(pg, buf[:0])
		mustNoErr(t, err, "read page")
		mustNoErr(t, im.PutPage(pg, buf), fmt.Sprintf("PutPage %d", pg))
	}
}

// TestImportInPlace: an empty environment imports a master's snapshot into
// its own pool while views of it, in this process and attached, go on:
// each sees the empty state or the whole import, never a mix; writes are
// refused until Finish; after it the environment is the master's, its log
// takes the master's records after the snapshot, and new pages do not
// land on imported ones. Both parities of the environment's txid against
// the snapshot's (the meta slot Finish writes).
func TestImportInPlace(t *testing.T) {
	opt, m, s := importMaster(t)
	var want uint64
	mustNoErr(t, s.View(func(tx *Tx) (err error) { want, err = tx.ContentHash(); return err }), "snapshot hash")
	for _, newGens := range []int{0, 1} {
		t.Run(fmt.Sprintf("newgens=%d", newGens), func(t *testing.T) {
			e := inPlaceTarget(t, opt, "", newGens)
			r, err := AttachReadOnly(e.Name())
			mustNoErr(t, err, "attach")
			defer r.Close()

			// Readers run through the whole import: each view sees no
			// database, or the master's content.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[string]int{}
			look := func(name string, view func(func(*Tx) error) error) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					var state string
					err := view(func(tx *Tx) error {
						if len(tx.DBNames()) == 0 {
							state = "empty"
							return nil
						}
						h, err := tx.ContentHash()
						if err != nil {
							return err
						}
						if h != want {
							return fmt.Errorf("a view of %d databases with another content", len(tx.DBNames()))
						}
						state = "imported"
						return nil
					})
					if err != nil {
						t.Errorf("%s view: %v", name, err)
						return
					}
					mu.Lock()
					seen[name+" "+state]++
					mu.Unlock()
				}
			}
			wg.Add(2)
			go look("local", e.View)
			go look("attached", r.View)
			// Stopped before the attachment and the environment close,
			// also when the test fails on the way.
			stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
			defer stopReaders()

			im, err := e.ImportInPlace(s.Meta())
			mustNoErr(t, err, "import in place")
			if !im.InPlace() {
				t.Fatal("ImportInPlace returned an import of its own region")
			}
			if _, err := e.Update(func(tx *Tx) error { _, err := tx.CreateDB("x"); return err }); !isErr(err, ErrImporting) {
				t.Fatalf("a write during the import: %v, want ErrImporting", err)
			}
			order := s.PageList()
			rand.New(rand.NewPCG(7, 8)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			putSnapshot(t, im, s, order)
			mustNoErr(t, e.View(func(tx *Tx) error {
				if n := len(tx.DBNames()); n != 0 {
					return fmt.Errorf("%d databases visible before Finish", n)
				}
				return nil
			}), "view before finish")
			got, err := im.Finish()
			mustNoErr(t, err, "finish")
			if got != e {
				t.Fatal("Finish of an import in place returned another environment")
			}
			// Views after Finish, then stop the readers.
			mustNoErr(t, r.View(func(tx *Tx) error {
				if h, err := tx.ContentHash(); err != nil || h != want {
					return fmt.Errorf("attached view after Finish: hash %x (%v), want %x", h, err, want)
				}
				return nil
			}), "attached view")
			stopReaders()
			t.Logf("views: %v", seen)

			if e.ContentHash() != want {
				t.Fatal("imported content differs from the master's")
			}
			mustNoErr(t, e.Check(), "check")
			// The master's later commits apply after the snapshot's LSN.
			fillRoutes(t, m, rand.New(rand.NewPCG(9, 10)), "fib", 3, 200, 8, 200, func(batch int) (string, []byte) {
				return fmt.Sprintf("later-%d", batch), make([]byte, 3*m.ps)
			})
			shipLog(t, m, e)
			if e.ContentHash() != m.ContentHash() {
				t.Fatal("after the master's later commits the content differs")
			}
			mustNoErr(t, e.Check(), "check after the log")
		})
	}
}

// TestImportInPlaceRefused: ImportInPlace takes only an empty environment
// of the snapshot's page size, a pool as large and a txid behind the
// snapshot's; otherwise ErrNotInPlace, and the environment stays writable.
func TestImportInPlaceRefused(t *testing.T) {
	opt, _, s := importMaster(t)
	cases := map[string]*Env{}
	withDB := newTestEnv(t, opt)
	_, err := withDB.Update(func(tx *Tx) error { _, err := tx.CreateDB("a"); return err })
	mustNoErr(t, err, "create db")
	cases["holding a database"] = withDB
	dropped := newTestEnv(t, opt)
	_, err = dropped.Update(func(tx *Tx) error { _, err := tx.CreateDB("a"); return err })
	mustNoErr(t, err, "create db")
	_, err = dropped.Update(func(tx *Tx) error { return tx.DropDB("a") })
	mustNoErr(t, err, "drop db")
	cases["a database created and dropped"] = dropped
	cases["other page size"] = newTestEnv(t, Options{PoolSize: opt.PoolSize, LogSize: opt.LogSize, PageSize: 8192})
	cases["smaller pool"] = newTestEnv(t, Options{PoolSize: opt.PoolSize / 2, LogSize: opt.LogSize})
	near := newTestEnv(t, opt)
	for near.cur.txid < s.m.txid {
		_, err := near.AppendNewGen(near.Gen() + 1)
		mustNoErr(t, err, "new gen")
	}
	cases["txid as far as the snapshot's"] = near
	for name, e := range cases {
		if _, err := e.ImportInPlace(s.Meta()); !isErr(err, ErrNotInPlace) {
			t.Errorf("%s: %v, want ErrNotInPlace", name, err)
		}
		if _, err := e.Update(func(tx *Tx) error { _, err := tx.CreateDBIfNotExists("b"); return err }); err != nil {
			t.Errorf("%s: a write after the refusal: %v", name, err)
		}
	}
}

// TestImportInPlaceAbort: an import that fails at Finish (a page never
// sent) or is aborted leaves the environment empty and writable, and a
// new import over the pages the first one left finishes whole.
func TestImportInPlaceAbort(t *testing.T) {
	opt, m, s := importMaster(t)
	e := inPlaceTarget(t, opt, "failed", 0)
	list := s.PageList()

	im, err := e.ImportInPlace(s.Meta())
	mustNoErr(t, err, "import")
	putSnapshot(t, im, s, list[1:])
	if _, err := im.Finish(); !isErr(err, ErrCorrupt) {
		t.Fatalf("Finish with page %d missing: %v, want ErrCorrupt", list[0], err)
	}
	im.Abort()
	// One import at a time.
	im, err = e.ImportInPlace(s.Meta())
	mustNoErr(t, err, "a second import after the failed one")
	if _, err := e.ImportInPlace(s.Meta()); !isErr(err, ErrImporting) {
		t.Fatalf("an import while another runs: %v, want ErrImporting", err)
	}
	im.Abort()
	if _, err := e.Update(func(tx *Tx) error { _, err := tx.CreateDB("a"); return err }); err != nil {
		t.Fatalf("a write after the aborted imports: %v", err)
	}

	// Pages an aborted import left in the pool do not stand in for pages
	// the next one did not get.
	e2 := inPlaceTarget(t, opt, "aborted", 0)
	im, err = e2.ImportInPlace(s.Meta())
	mustNoErr(t, err, "import")
	putSnapshot(t, im, s, list[:len(list)/2])
	im.Abort()
	mustNoErr(t, e2.View(func(tx *Tx) error {
		if n := len(tx.DBNames()); n != 0 {
			return fmt.Errorf("%d databases after Abort", n)
		}
		return nil
	}), "view after abort")
	im, err = e2.ImportInPlace(s.Meta())
	mustNoErr(t, err, "import again")
	putSnapshot(t, im, s, list)
	_, err = im.Finish()
	mustNoErr(t, err, "finish")
	if e2.ContentHash() != m.ContentHash() {
		t.Fatal("the import after an aborted one differs from the master")
	}
	mustNoErr(t, e2.Check(), "check")
}

// TestImportResume: an import of a snapshot, stopped halfway when the
// master moved on, resumes with the master's later snapshot: the pages
// below the halfway mark that the master has not written since are kept,
// the rest stored, and the result is the later snapshot, in place and
// beside alike. A page to keep that the import never stored is refused.
func TestImportResume(t *testing.T) {
	for _, inPlace := range []bool{true, false} {
		t.Run(fmt.Sprintf("inplace=%v", inPlace), func(t *testing.T) {
			opt, m, s1 := importMaster(t)
			var im *Import
			var err error
			if inPlace {
				im, err = inPlaceTarget(t, opt, "", 0).ImportInPlace(s1.Meta())
			} else {
				im, err = NewImport(opt, s1.Meta())
			}
			mustNoErr(t, err, "import")
			defer im.Abort()
			list1 := s1.PageList()
			half := list1[:len(list1)/2]
			putSnapshot(t, im, s1, half)
			below := half[len(half)-1] + 1

			// The master moves on: some pages rewritten, some added.
			fillRoutes(t, m, rand.New(rand.NewPCG(11, 12)), "fib", 2, 50, 8, 200, func(batch int) (string, []byte) {
				return fmt.Sprintf("moved-%d", batch), make([]byte, 2*m.ps)
			})
			s2, err := m.PinSnapshot()
			mustNoErr(t, err, "pin the later snapshot")
			defer s2.Release()
			if !isErr(im.Keep(half[0]+1<<20), ErrCorrupt) {
				t.Fatal("Keep of a page outside the pool was accepted")
			}
			mustNoErr(t, im.Resume(s2.Meta()), "resume")
			var kept, sent int
			var buf []byte
			for _, pg := range s2.PageList() {
				born, err := s2.PageTxid(pg)
				mustNoErr(t, err, "page txid")
				if pg < below && born <= s1.Txid() {
					mustNoErr(t, im.Keep(pg), fmt.Sprintf("keep %d", pg))
					kept++
					continue
				}
				buf, err = s2.ReadPage(pg, buf[:0])
				mustNoErr(t, err, "read page")
				mustNoErr(t, im.PutPage(pg, buf), fmt.Sprintf("PutPage %d", pg))
				sent++
			}
			if kept == 0 || sent == 0 {
				t.Fatalf("kept %d, sent %d pages: the test wants both", kept, sent)
			}
			e, err := im.Finish()
			mustNoErr(t, err, "finish")
			if !inPlace {
				defer e.Remove()
			}
			var want uint64
			mustNoErr(t, s2.View(func(tx *Tx) (err error) { want, err = tx.ContentHash(); return err }), "hash")
			if e.ContentHash() != want {
				t.Fatal("the resumed import differs from the later snapshot")
			}
			mustNoErr(t, e.Check(), "check")
			t.Logf("%d pages kept, %d sent of %d", kept, sent, kept+sent)
		})
	}
}
