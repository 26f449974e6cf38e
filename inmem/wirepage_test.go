package inmem

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// pinAndImport pins a snapshot of m and starts an import of it, both
// undone when the test ends.
func pinAndImport(t *testing.T, m *Env, opt Options) (*Snapshot, *Import) {
	t.Helper()
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	t.Cleanup(func() { s.Release() })
	im, err := NewImport(opt, s.Meta())
	mustNoErr(t, err, "import")
	t.Cleanup(func() { im.Abort() })
	return s, im
}

// TestWirePagesRoundTrip: an import of a snapshot whose half-full pages
// travel without their free space ends with the master's content, and the
// pages travel in about the bytes their entries take.
func TestWirePagesRoundTrip(t *testing.T) {
	opt := Options{PoolSize: 8 << 20, LogSize: 1 << 20}
	m := newTestEnv(t, opt)
	rng := rand.New(rand.NewPCG(1, 2))
	fillRoutes(t, m, rng, "routes", 8, 200, 16, 300, func(int) (string, []byte) {
		v := make([]byte, 3*m.ps+100) // a value run goes as its value
		v[len(v)-1] = 1
		return "big", v
	})
	s, im := pinAndImport(t, m, opt)
	var wire, whole, short int
	var buf []byte
	for _, pg := range s.PageList() {
		var err error
		buf, err = s.ReadPage(pg, buf)
		mustNoErr(t, err, "read page")
		wire += len(buf)
		if len(buf) < m.ps {
			short++
			whole += m.ps
		} else {
			whole += len(buf)
		}
		mustNoErr(t, im.PutPage(pg, buf), "put page")
	}
	if short == 0 || wire > whole*3/4 {
		t.Fatalf("%d pages sent short, %d wire bytes for %d page bytes: want the free space left out", short, wire, whole)
	}
	r, err := im.Finish()
	mustNoErr(t, err, "finish")
	defer r.Close()
	if err := r.Check(); err != nil {
		t.Fatalf("imported environment: %v", err)
	}
	if r.ContentHash() != m.ContentHash() {
		t.Fatal("imported content differs from the master's")
	}
}

// TestWirePageRejectsMismatch: a short page whose length does not match
// its header, or whose entries are bad, is refused and leaves nothing.
func TestWirePageRejectsMismatch(t *testing.T) {
	opt := Options{PoolSize: 1 << 20, LogSize: 1 << 20}
	m := newTestEnv(t, opt)
	_, err := m.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		return db.Put([]byte("k"), []byte("v"))
	})
	mustNoErr(t, err, "fill")
	s, im := pinAndImport(t, m, opt)
	pages := s.PageList()
	pg, err := s.ReadPage(pages[len(pages)-1], nil)
	mustNoErr(t, err, "read")
	if len(pg) >= m.ps {
		t.Fatalf("a page of one entry went whole (%d bytes)", len(pg))
	}
	at := pages[len(pages)-1]
	bad := [][]byte{
		pg[:len(pg)-1],             // one byte short
		append(bytes.Clone(pg), 0), // one byte long
		pg[:pageHeaderSize-1],      // no header
		func() []byte { b := bytes.Clone(pg); b[pageHeaderSize], b[pageHeaderSize+1] = 0xff, 0xff; return b }(), // a slot off the page
		func() []byte { b := bytes.Clone(pg); b[0] = pageOverflow; return b }(),                                 // overflow pages go whole
	}
	for i, b := range bad {
		if err := im.PutPage(at, b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("bad short page %d: %v, want ErrCorrupt", i, err)
		}
		if im.run(at) != 0 {
			t.Fatalf("bad short page %d was recorded as imported", i)
		}
	}
	if err := im.PutPage(1, pg); !errors.Is(err, ErrLayout) {
		t.Errorf("short page in the reserved area: %v, want ErrLayout", err)
	}
	mustNoErr(t, im.PutPage(at, pg), "the good page after the bad ones")
}

// FuzzWirePage: expanding any bytes into a page never panics, and a page
// that validates comes back from its wire form equal but for the free space.
func FuzzWirePage(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, n := range []int{1, 2, 3} {
			_ = expandWirePage(make([]byte, n*fuzzPS), data)
		}
		if len(data) == 0 || len(data)%fuzzPS != 0 || validatePage(data, pPgno(data), fuzzPS) != nil {
			return
		}
		w := appendWirePage(nil, data)
		q := make([]byte, len(data))
		if len(w) == len(data) {
			copy(q, w)
		} else if len(w)%fuzzPS == 0 {
			t.Fatalf("wire form of %d bytes looks like whole pages", len(w))
		} else if err := expandWirePage(q, w); err != nil {
			t.Fatalf("wire form of a valid page does not expand: %v", err)
		}
		if err := validatePage(q, pPgno(data), fuzzPS); err != nil {
			t.Fatalf("valid page invalid after the wire: %v", err)
		}
		head, up, _ := wireSpan(data)
		if up < 0 {
			up = len(data)
		}
		if !bytes.Equal(q[:head], data[:head]) || !bytes.Equal(q[up:], data[up:]) {
			t.Fatal("what the page holds changed on the wire")
		}
	})
}
