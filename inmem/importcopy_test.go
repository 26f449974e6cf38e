package inmem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// fillRoutes commits batches transactions into database db of m, each of
// perBatch route keys with random values of minLen..minLen+spread-1 bytes
// and the key and value big gives for the batch (a value run).
func fillRoutes(t *testing.T, m *Env, rng *rand.Rand, db string, batches, perBatch, minLen, spread int, big func(batch int) (string, []byte)) {
	t.Helper()
	for batch := range batches {
		_, err := m.Update(func(tx *Tx) error {
			d, err := tx.CreateDBIfNotExists(db)
			if err != nil {
				return err
			}
			for i := range perBatch {
				v := make([]byte, minLen+rng.IntN(spread))
				for j := range v {
					v[j] = byte(rng.Uint32())
				}
				if err := d.Put(fmt.Appendf(nil, "10.%d.%d.0/24", batch, i), v); err != nil {
					return err
				}
			}
			k, v := big(batch)
			return d.Put([]byte(k), v)
		})
		mustNoErr(t, err, "fill")
	}
}

// importMaster fills an environment with a tree deep enough for branch
// pages, values in overflow runs of a few pages, and one run larger than
// an import batch (written by the kernel on its own), and pins a snapshot
// of it (released when the test ends).
func importMaster(t *testing.T) (Options, *Env, *Snapshot) {
	t.Helper()
	opt := Options{PoolSize: 16 << 20, LogSize: 4 << 20}
	m := newTestEnv(t, opt)
	rng := rand.New(rand.NewPCG(3, 4))
	fillRoutes(t, m, rng, "fib", 6, 300, 8, 200, func(batch int) (string, []byte) {
		big := make([]byte, 2*m.ps+rng.IntN(m.ps))
		big[len(big)-1] = byte(batch + 1)
		return fmt.Sprintf("big-%d", batch), big
	})
	_, err := m.Update(func(tx *Tx) error {
		db, err := tx.CreateDBIfNotExists("images")
		if err != nil {
			return err
		}
		huge := make([]byte, importBatch+5*m.ps)
		for i := range huge {
			huge[i] = byte(i / 7)
		}
		return db.Put([]byte("huge"), huge)
	})
	mustNoErr(t, err, "huge value")
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	t.Cleanup(func() { s.Release() })
	return opt, m, s
}

// rawUnit returns a copy of the page (or whole overflow run) at pg of e.
func rawUnit(e *Env, pg uint64) []byte {
	p := e.data[pg*uint64(e.ps) : (pg+1)*uint64(e.ps)]
	n := 1
	if pType(p) == pageOverflow {
		n = pOvPages(p)
	}
	return bytes.Clone(e.data[pg*uint64(e.ps) : (pg+uint64(n))*uint64(e.ps)])
}

// importUnits imports the snapshot's pages as units gives them (nil: not
// sent), in the given order, and finishes.
func importUnits(t *testing.T, s *Snapshot, opt Options, copyMode bool, order []uint64, units func(pg uint64) []byte) (*Env, error) {
	t.Helper()
	im, err := NewImport(opt, s.Meta())
	mustNoErr(t, err, "import")
	im.cp.copy = copyMode
	for _, pg := range order {
		if u := units(pg); u != nil {
			mustNoErr(t, im.PutPage(pg, u), fmt.Sprintf("PutPage %d", pg))
		}
	}
	e, err := im.Finish()
	if err != nil {
		im.Abort()
		return nil, err
	}
	t.Cleanup(func() { mustNoErr(t, e.Remove(), "remove import") })
	return e, nil
}

// TestImportThroughTheKernel: pages written through process_vm_writev in
// batches (or copied, where the kernel refuses) make the master's content,
// whatever their order, with pages sent twice, whole or in their wire form,
// and with a value run larger than a batch.
func TestImportThroughTheKernel(t *testing.T) {
	opt, m, s := importMaster(t)
	list := s.PageList()
	rng := rand.New(rand.NewPCG(5, 6))
	shuffled := append([]uint64(nil), list...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	withDups := append(append([]uint64(nil), list...), list[len(list)/3], list[len(list)/2], list[0])
	wire := func(pg uint64) []byte {
		b, err := s.ReadPage(pg, nil)
		mustNoErr(t, err, "read page")
		return b
	}
	whole := func(pg uint64) []byte { return rawUnit(m, pg) }
	for _, copyMode := range []bool{false, true} {
		for name, order := range map[string][]uint64{"ascending": list, "shuffled": shuffled, "with pages twice": withDups} {
			for form, units := range map[string]func(uint64) []byte{"wire": wire, "whole": whole} {
				t.Run(fmt.Sprintf("copy=%v/%s/%s", copyMode, name, form), func(t *testing.T) {
					e, err := importUnits(t, s, opt, copyMode, order, units)
					mustNoErr(t, err, "finish")
					if e.ContentHash() != m.ContentHash() {
						t.Fatal("imported content differs from the master's")
					}
					mustNoErr(t, e.Check(), "check")
				})
			}
		}
	}
}

// TestImportFinishChecksSketches: Finish checks the imported trees from
// what PutPage recorded of each page, and finds what the pages themselves
// pass but the trees do not: a run whose value length is not the one its
// leaf gives, a page two branches lead to, an overflow run where a tree
// page belongs, a run never sent.
func TestImportFinishChecksSketches(t *testing.T) {
	opt, m, s := importMaster(t)
	var branch, run uint64
	for _, pg := range s.PageList() {
		switch p := m.data[pg*uint64(m.ps):]; {
		case pType(p) == pageBranch && pCount(p) >= 2 && branch == 0:
			branch = pg
		case pType(p) == pageOverflow && pOvPages(p) < 4 && run == 0:
			run = pg
		}
	}
	if branch == 0 || run == 0 {
		t.Fatalf("the master has no branch page with two children (%d) or short value run (%d)", branch, run)
	}
	for _, tc := range []struct {
		name, want string
		mutate     func(pg uint64, u []byte) []byte
	}{
		{"value length", "bad overflow run", func(pg uint64, u []byte) []byte {
			if pg == run {
				u[4]-- // pUpper: one byte shorter than the leaf says
			}
			return u
		}},
		{"page reached twice", "referenced twice", func(pg uint64, u []byte) []byte {
			if pg == branch {
				c, _ := childAt(u, 0)
				setChild(u, 1, c)
			}
			return u
		}},
		{"run as a tree page", "needs a branch or leaf", func(pg uint64, u []byte) []byte {
			if pg == branch {
				setChild(u, 1, run)
			}
			return u
		}},
		{"run never sent", "missing", func(pg uint64, u []byte) []byte {
			if pg == run {
				return nil
			}
			return u
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := importUnits(t, s, opt, false, s.PageList(), func(pg uint64) []byte { return tc.mutate(pg, rawUnit(m, pg)) })
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Finish: %v; want ErrCorrupt saying %q", err, tc.want)
			}
		})
	}
}

// TestImportBadWirePageLeavesBatch: a wire page that fails its checks
// after it was expanded into the batch is taken out again; the pages
// around it arrive intact.
func TestImportBadWirePageLeavesBatch(t *testing.T) {
	opt, m, s := importMaster(t)
	im, err := NewImport(opt, s.Meta())
	mustNoErr(t, err, "import")
	defer im.Abort()
	rejected := 0
	for _, pg := range s.PageList() {
		b, err := s.ReadPage(pg, nil)
		mustNoErr(t, err, "read page")
		if len(b)%m.ps != 0 && rejected == 0 && pType(b) == pageLeaf {
			bad := bytes.Clone(b)
			bad[pageHeaderSize] ^= 0xff // the first slot points elsewhere
			if err := im.PutPage(pg, bad); err == nil {
				t.Fatalf("page %d with a damaged slot accepted", pg)
			}
			rejected++
			// Taken out of the batch: written out now, the batch leaves
			// the page as the fresh region had it.
			mustNoErr(t, im.cp.flush(), "flush")
			if p := im.e.data[pg*uint64(m.ps) : (pg+1)*uint64(m.ps)]; !bytes.Equal(p, make([]byte, m.ps)) {
				t.Fatalf("the rejected page %d reached the region", pg)
			}
		}
		mustNoErr(t, im.PutPage(pg, b), "PutPage")
	}
	if rejected == 0 {
		t.Fatal("no leaf travelled in its wire form")
	}
	e, err := im.Finish()
	mustNoErr(t, err, "finish")
	defer func() { mustNoErr(t, e.Remove(), "remove import") }()
	if e.ContentHash() != m.ContentHash() {
		t.Fatal("imported content differs from the master's")
	}
}

// fuzzImport is a small snapshot for FuzzImportTree: 1 KiB pages, a tree
// with branch pages and a few value runs; its pages as the master sends
// them (wire form where shorter).
type fuzzImport struct {
	opt   Options
	s     *Snapshot
	list  []uint64
	units map[uint64][]byte
}

func newFuzzImport(tb testing.TB) *fuzzImport {
	tb.Helper()
	opt := Options{PageSize: fuzzPS, PoolSize: 1 << 20, LogSize: 256 << 10}
	m := newTestEnv(tb, opt)
	_, err := m.Update(func(tx *Tx) error {
		db, err := tx.CreateDBIfNotExists("fib")
		if err != nil {
			return err
		}
		for i := 0; i < 120; i++ {
			if err := db.Put(fmt.Appendf(nil, "10.%d.0/24", i), fmt.Appendf(nil, "via %d", i)); err != nil {
				return err
			}
		}
		for i := 0; i < 3; i++ {
			if err := db.Put(fmt.Appendf(nil, "big-%d", i), bytes.Repeat([]byte{byte(i + 1)}, 2*fuzzPS+100*i)); err != nil {
				return err
			}
		}
		return nil
	})
	mustNoErr(tb, err, "fill")
	s, err := m.PinSnapshot()
	mustNoErr(tb, err, "pin")
	tb.Cleanup(func() { s.Release() })
	fi := &fuzzImport{opt: opt, s: s, list: s.PageList(), units: map[uint64][]byte{}}
	for _, pg := range fi.list {
		u, err := s.ReadPage(pg, nil)
		mustNoErr(tb, err, "read page")
		fi.units[pg] = u
	}
	return fi
}

// seeds are inputs of FuzzImportTree: each page of the snapshot in turn as
// sent, a branch whose first two children are the same page, and a page
// cut short.
func (fi *fuzzImport) seeds() [][]byte {
	input := func(i int, unit []byte) []byte {
		return append(binary.LittleEndian.AppendUint16(nil, uint16(i)), unit...)
	}
	var out [][]byte
	for i, pg := range fi.list {
		u := fi.units[pg]
		out = append(out, input(i, u), input(i, u[:len(u)/2]))
		if len(u) == fuzzPS && pType(u) == pageBranch && pCount(u) >= 2 {
			twice := bytes.Clone(u)
			c, _ := childAt(twice, 0)
			setChild(twice, 1, c)
			out = append(out, input(i, twice))
		}
	}
	return out
}

// FuzzImportTree: a snapshot whose one page is replaced by arbitrary bytes
// (the first two bytes of the input pick which) never panics the import:
// PutPage refuses the page or Finish refuses the tree, with ErrCorrupt or
// ErrLayout, or the import finishes. Inputs of odd length import in place,
// into an empty environment, which a refused import leaves empty and
// writable.
func FuzzImportTree(f *testing.F) {
	fi := newFuzzImport(f)
	for _, s := range fi.seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		victim := fi.list[int(binary.LittleEndian.Uint16(in))%len(fi.list)]
		var im *Import
		var err error
		if len(in)%2 == 1 {
			target, err := Create(fi.opt)
			mustNoErr(t, err, "create the target")
			defer target.Close()
			defer func() {
				if target.cur.root != 0 {
					return // imported
				}
				_, err := target.Update(func(tx *Tx) error { _, err := tx.CreateDB("after"); return err })
				mustNoErr(t, err, "a write after the refused import")
			}()
			im, err = target.ImportInPlace(fi.s.Meta())
			mustNoErr(t, err, "import in place")
		} else {
			im, err = NewImport(fi.opt, fi.s.Meta())
			mustNoErr(t, err, "import")
		}
		defer im.Abort()
		refused := func(err error) bool { return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrLayout) }
		for _, pg := range fi.list {
			u := fi.units[pg]
			if pg == victim {
				u = in[2:]
			}
			if err := im.PutPage(pg, u); err != nil && !refused(err) {
				t.Fatalf("PutPage %d: %v, want ErrCorrupt or ErrLayout", pg, err)
			}
		}
		e, err := im.Finish()
		if err != nil {
			if !refused(err) {
				t.Fatalf("Finish: %v, want ErrCorrupt or ErrLayout", err)
			}
			return
		}
		if !im.InPlace() {
			mustNoErr(t, e.Remove(), "remove import")
		}
	})
}
