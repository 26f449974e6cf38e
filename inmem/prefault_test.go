package inmem

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestPrefaulterMapsEveryPageToTheEnd: with the whole range within its
// look-ahead the prefaulter maps every page once, in consecutive batches,
// then exits by itself.
func TestPrefaulterMapsEveryPageToTheEnd(t *testing.T) {
	const n, from = 1000, 3
	l := &populateLog{t: t, next: from}
	p := startPrefault(from, n, l.populate)
	<-p.done
	if l.next != n || p.next != n {
		t.Fatalf("mapped up to %d (pager at %d), want %d", l.next, p.next, n)
	}
	p.close()
	p.close() // twice is allowed
}

// TestPrefaulterWaitsForTheImport: beyond its look-ahead the prefaulter maps
// only as far as the importer's pages let it, and reaches the end once they
// do.
func TestPrefaulterWaitsForTheImport(t *testing.T) {
	const n = 3*prefaultAhead + 7
	const from = 5
	l := &populateLog{t: t, next: from}
	p := startPrefault(from, n, l.populate)
	if got := p.limit.Load(); got != from+prefaultAhead {
		t.Fatalf("initial limit %d, want %d", got, from+prefaultAhead)
	}
	p.advance(from+10, 10) // a small step does not move the limit
	if got := p.limit.Load(); got != from+prefaultAhead {
		t.Fatalf("limit after a small step %d, want %d", got, from+prefaultAhead)
	}
	p.advance(from+prefaultAhead, 100)
	if got := p.limit.Load(); got != from+2*prefaultAhead {
		t.Fatalf("limit after a window %d, want %d", got, from+2*prefaultAhead)
	}
	p.advance(n-1, 100) // the limit never passes the end
	if got := p.limit.Load(); got != n {
		t.Fatalf("limit near the end %d, want %d", got, n)
	}
	<-p.done
	if l.next != n {
		t.Fatalf("mapped up to %d, want %d", l.next, n)
	}
	p.close()
}

// TestPrefaulterExpectsASmallSnapshot: told how many page runs the snapshot
// has, the prefaulter reads only what those can reach (plus a little for holes
// in their numbering), not prefaultAhead of a large pool; it scales what is
// left by the pages per run seen so far (overflow runs are longer), and keeps
// the slack ahead when the hint was too low.
func TestPrefaulterExpectsASmallSnapshot(t *testing.T) {
	const n, from, runs = 4 * prefaultAhead, 10, 3000
	l := &populateLog{t: t, next: from}
	p := startPrefault(from, n, l.populate)
	defer p.close()
	p.expect(runs, from)
	if got, want := p.limit.Load(), uint64(from+runs+prefaultSlack); got != want {
		t.Fatalf("limit for %d runs %d, want %d", runs, got, want)
	}
	// Half the runs stored, one page each, numbered twice as sparsely as
	// they are many: the limit follows the highest page, with half the runs
	// still to come.
	pg := uint64(from)
	for i := 0; i < runs/2; i++ {
		pg += 2
		p.advance(pg, 1)
	}
	limitNear(t, p, pg+runs/2+prefaultSlack, "after half the runs")
	// Then runs of 7 pages: the pages per run seen so far rise, and with
	// them what the runs still expected are taken to hold.
	for i := 0; i < runs/4; i++ {
		pg += 7
		p.advance(pg, 7)
	}
	left := uint64(runs/4) * (runs/2 + 7*runs/4) / (runs/2 + runs/4)
	limitNear(t, p, pg+left+prefaultSlack, "after longer runs")
	// More runs than announced (a wrong hint) still leave the slack ahead.
	for i := 0; i < runs; i++ {
		pg++
		p.advance(pg, 1)
	}
	limitNear(t, p, pg+prefaultSlack, "past the announced runs")
}

// limitNear checks p's limit is want, or behind it by less than the step
// (a quarter of the look-ahead) that moves it: advance wakes the prefaulter
// only for steps that large.
func limitNear(t *testing.T, p *prefaulter, want uint64, what string) {
	t.Helper()
	if got := p.limit.Load(); got > want || got+p.ahead()/4 < want {
		t.Fatalf("limit %s %d, want %d (or less by under %d)", what, got, want, p.ahead()/4)
	}
}

// populateLog records a pager's populate calls and checks they cover
// consecutive pages.
type populateLog struct {
	t        *testing.T
	next     uint64
	calls    int
	failFrom int // fail from this call on (0: never)
}

func (l *populateLog) populate(pgno, n uint64) error {
	l.calls++
	if pgno != l.next || n == 0 || n > prefaultBatch {
		l.t.Errorf("populate [%d,+%d) after pages up to %d: want consecutive batches of at most %d", pgno, n, l.next, prefaultBatch)
	}
	l.next = pgno + n
	if l.failFrom > 0 && l.calls >= l.failFrom {
		return errors.ErrUnsupported
	}
	return nil
}

// TestPrefaulterStopsWhenMappingFails: a populate that fails (an old
// kernel, a region going away) is not called again; the pager exits.
func TestPrefaulterStopsWhenMappingFails(t *testing.T) {
	const n, from = 2000, 3
	failing := &populateLog{t: t, next: from, failFrom: 2}
	p := startPrefault(from, n, failing.populate)
	<-p.done
	if failing.calls != 2 {
		t.Fatalf("populate called %d times after failing on the 2nd, want 2", failing.calls)
	}
	p = startPrefault(from, n, nil) // nothing to map with: done at once
	<-p.done
}

// TestPopulateMapsAll: the background pager after an import maps every page
// up to the end without waiting for an importer.
func TestPopulateMapsAll(t *testing.T) {
	const n = 3*prefaultAhead + 1
	l := &populateLog{t: t, next: 7}
	p := startPopulate(7, n, l.populate)
	<-p.done
	if l.next != n {
		t.Fatalf("mapped up to %d, want %d", l.next, n)
	}
	p.close()
}

// TestImportedEnvStopsMappingAtClose: the environment an import returns maps
// the rest of its region in the background and stops doing so when closed,
// before the region is unmapped.
func TestImportedEnvStopsMappingAtClose(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 64 << 20, LogSize: 1 << 20})
	initInvariant(t, m)
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	defer s.Release()
	im, err := NewImport(Options{PoolSize: 64 << 20, LogSize: 1 << 20}, s.Meta())
	mustNoErr(t, err, "import")
	list := s.PageList()
	im.ExpectRuns(len(list))
	for _, pg := range list {
		buf, err := s.ReadPage(pg, nil)
		mustNoErr(t, err, "read page")
		mustNoErr(t, im.PutPage(pg, buf), "put page")
	}
	e, err := im.Finish()
	mustNoErr(t, err, "finish")
	if e.populating == nil {
		t.Fatal("the imported environment maps nothing in the background")
	}
	bg := e.populating
	mustNoErr(t, e.Check(), "check")
	mustNoErr(t, e.Close(), "close")
	select {
	case <-bg.done:
	default:
		t.Fatal("Close returned with the background mapping still running")
	}
}

// TestPageListAscending: the master sends pages in page order, which the
// importer's prefaulter relies on to stay ahead.
func TestPageListAscending(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 4 << 20, LogSize: 1 << 20})
	initInvariant(t, m)
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	defer s.Release()
	pages := s.PageList()
	if len(pages) < 2 || !slices.IsSorted(pages) {
		t.Fatalf("page list %v: want several pages in ascending order", pages)
	}
}

// BenchmarkImport: an internal init's receiving side, storing a 64 MiB
// snapshot into a fresh region (created outside the timing), its pages
// written by the kernel in batches (pageCopier) and copied, alternated in
// every iteration so both meet the same memory: a region's pages freed by the
// last iteration are often handed out again, and only pages this guest has
// not used for a while carry the first-access cost the kernel's writes avoid
// (the bench's init section, a fresh process, shows it). A third way, in
// every iteration too, imports in place into an empty environment created
// outside the timing (ImportInPlace, as a board restarted empty does; its
// pool is mapped when created). The importer runs flat out here, while a
// real one waits for the master's windows.
//
//	go test ./inmem -run '^$' -bench Import -benchtime 10x
func BenchmarkImport(b *testing.B) {
	m, err := Create(Options{PoolSize: 160 << 20, LogSize: 4 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	val := make([]byte, 1800) // two values per leaf page, like the bench's init
	for i := range val {
		val[i] = byte(i * 7)
	}
	for done := 0; done < 64<<20; done += 256 * len(val) {
		if _, err := m.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("bench")
			if err != nil {
				return err
			}
			for j := 0; j < 256; j++ {
				if err := db.Put([]byte(fmt.Sprintf("key-%09d", done/len(val)+j)), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		m.RetainLog(m.Log().End())
	}
	s, err := m.PinSnapshot()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Release()
	list := s.PageList()
	pages := make([][]byte, len(list))
	var bytes int64
	for i, pg := range list {
		if pages[i], err = s.ReadPage(pg, nil); err != nil {
			b.Fatal(err)
		}
		bytes += int64(len(pages[i]))
	}
	// importOnce imports the snapshot beside (a new lazy region, through the
	// kernel or by copy) or in place (into an empty environment created
	// beforehand, as a board's pool is at Open; its creation is not timed).
	importOnce := func(kernel, inPlace bool) time.Duration {
		var im *Import
		var err error
		if inPlace {
			target, cerr := Create(m.opt)
			if cerr != nil {
				b.Fatal(cerr)
			}
			defer target.Close()
			im, err = target.ImportInPlace(s.Meta())
		} else {
			im, err = NewImport(m.opt, s.Meta())
		}
		if err != nil {
			b.Fatal(err)
		}
		im.ExpectRuns(len(list))
		im.cp.copy = !kernel
		t0 := time.Now()
		for i, pg := range list {
			if err := im.PutPage(pg, pages[i]); err != nil {
				b.Fatal(err)
			}
		}
		e, err := im.Finish()
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		e.Close()
		return d
	}
	// The three ways in turn, each iteration starting with the next.
	ways := []struct {
		kernel, inPlace bool
		took            time.Duration
	}{{kernel: true}, {}, {kernel: true, inPlace: true}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range ways {
			w := &ways[(i+k)%len(ways)]
			w.took += importOnce(w.kernel, w.inPlace)
		}
	}
	mbs := func(d time.Duration) float64 { return float64(bytes) * float64(b.N) / d.Seconds() / 1e6 }
	kernel, cp, inPlace := mbs(ways[0].took), mbs(ways[1].took), mbs(ways[2].took)
	b.ReportMetric(kernel, "MB/s-kernel")
	b.ReportMetric(cp, "MB/s-copy")
	b.ReportMetric(kernel/cp, "x")
	b.ReportMetric(inPlace, "MB/s-in-place")
	b.ReportMetric(inPlace/kernel, "x-in-place")
}

// TestSnapshotClone: a clone pins the same state on its own: the pages it
// lists and reads stay as they were after the original is released and the
// environment commits on, and a released snapshot cannot be cloned.
func TestSnapshotClone(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 4 << 20, LogSize: 1 << 20})
	initInvariant(t, m)
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	c := s.Clone()
	if c == nil {
		t.Fatal("clone of a pinned snapshot is nil")
	}
	want := s.PageList()
	var pages [][]byte
	for _, pg := range want {
		b, err := s.ReadPage(pg, nil)
		mustNoErr(t, err, "read page")
		pages = append(pages, b)
	}
	s.Release()
	if s.Clone() != nil {
		t.Fatal("a released snapshot was cloned")
	}
	// Rewrite everything a few times: freed pages are reused unless pinned.
	for round := 0; round < 4; round++ {
		_, err := m.Update(func(tx *Tx) error {
			db := tx.DB("inv")
			for i := range invAccounts {
				if err := db.Put(fmt.Appendf(nil, "acct%03d", i), []byte{byte(round)}); err != nil {
					return err
				}
			}
			return nil
		})
		mustNoErr(t, err, "rewrite")
		m.RetainLog(m.Log().End())
	}
	if got := c.PageList(); !slices.Equal(got, want) {
		t.Fatalf("the clone lists %d pages, the original listed %d", len(got), len(want))
	}
	for i, pg := range want {
		b, err := c.ReadPage(pg, nil)
		mustNoErr(t, err, "read page of the clone")
		if !bytes.Equal(b, pages[i]) {
			t.Fatalf("page %d changed under the clone", pg)
		}
	}
	c.Release()
}
