package inmem

import "sync/atomic"

// prefaultAhead is how far (in pages) the prefaulter maps beyond the highest
// page an import has stored: 256 MiB of 4 KiB pages, far enough that it never
// waits for the importer's progress during a large init (8192 pages made it
// wait for wake-ups: 449 MB/s against 499 unbounded, five alternated runs of
// the bench's init, when it also read the pages). Import.ExpectRuns narrows it
// to what is still to come.
const prefaultAhead = 65536

// prefaultSlack is mapped beyond the pages still expected: page numbers of a
// snapshot are not dense, so the rest of it spans more pages than it has.
const prefaultSlack = 1024

// prefaultBatch is how many pages one pass of the prefaulter maps before it
// looks at its stop signal again.
const prefaultBatch = 256

// prefaulter maps the pages of an import's lazy region (shm.Options.Lazy,
// Region.Populate) in page order, ahead of the pages the importer stores, on
// a goroutine of its own; after the import, a second one (startPopulate) maps
// the rest of the region in the background, as creating it with
// MAP_POPULATE would have.
//
// Why: mapping the whole region at creation took 0.1–0.8 s for a 640 MiB
// pool before the first page could be requested; mapped a batch at a time
// ahead of the import, it costs the pages the import stores, overlaps the
// transfer, and the kernel's writes of the pages (pageCopier) find them
// allocated: 0.54 µs a page against 0.72–1.24 unmapped (256 MiB probes).
// Until 2026-12-06 it also read one byte of every page, to take the first
// access of this process to each fresh page (5–11 µs on the test rig's
// virtual machines) off the importer's copy; the kernel now writes the
// pages without that access (pageCopier), and reading them would only pay
// it early. Mapping never changes a page, so the prefaulter and the importer
// need no coordination beyond the limit. The master sends pages in ascending
// page order (Snapshot.PageList), so mapping in page order stays ahead.
type prefaulter struct {
	end      uint64                     // pages [next, end) are left to map
	populate func(pgno, n uint64) error // nil after it failed: nothing left to do
	next     uint64                     // next page; the prefaulter's goroutine only
	limit    atomic.Uint64              // map the pages below this
	kick     chan struct{}              // limit moved
	stop     chan struct{}
	done     chan struct{}

	// The importer's side (advance, expect): page runs and pages stored so
	// far, and the runs the snapshot has (0: unknown).
	runsStored, pagesStored, runsExpected uint64
}

// startPrefault maps pages [from, end) with populate, at first those below
// from+prefaultAhead; advance moves the limit.
func startPrefault(from, end uint64, populate func(pgno, n uint64) error) *prefaulter {
	return startPager(from, end, min(end, from+prefaultAhead), populate)
}

// startPopulate maps pages [from, end) with populate in the background.
func startPopulate(from, end uint64, populate func(pgno, n uint64) error) *prefaulter {
	return startPager(from, end, end, populate)
}

func startPager(from, end, limit uint64, populate func(pgno, n uint64) error) *prefaulter {
	p := &prefaulter{end: end, next: from, populate: populate,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.limit.Store(limit)
	go p.run()
	return p
}

// ahead is how far beyond the highest stored page to read: the pages the
// runs still expected of the snapshot hold (at the pages per run seen so far,
// overflow runs being longer than one), or prefaultAhead if that is unknown
// or more.
func (p *prefaulter) ahead() uint64 {
	if p.runsExpected == 0 {
		return prefaultAhead
	}
	left := p.runsExpected - min(p.runsStored, p.runsExpected)
	if p.runsStored > 0 {
		left = left * p.pagesStored / p.runsStored
	}
	return min(prefaultAhead, left+prefaultSlack)
}

// expect tells the prefaulter how many page runs the snapshot has, before any
// is stored: it then reads no further than they can reach, so that a small
// init into a large pool does not spend a CPU on pages it will not use.
func (p *prefaulter) expect(runs uint64, from uint64) {
	if p == nil { // an import in place: the region is mapped already
		return
	}
	p.runsExpected = runs
	p.limit.Store(min(p.end, from+p.ahead()))
}

// advance tells the prefaulter the importer stored a run of n pages ending
// before pgno. Cheap enough for every run: it wakes the prefaulter only when
// the limit moved by a quarter of its look-ahead or the end came within reach.
func (p *prefaulter) advance(pgno, n uint64) {
	if p == nil { // an import in place: the region is mapped already
		return
	}
	p.runsStored++
	p.pagesStored += n
	want := min(pgno+p.ahead(), p.end)
	if cur := p.limit.Load(); want <= cur || (want < cur+p.ahead()/4 && want < p.end) {
		return
	}
	p.limit.Store(want)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// close stops the prefaulter and waits for it: the region may be unmapped
// once close returns. Safe to call twice.
func (p *prefaulter) close() {
	if p == nil { // an import in place: the region is mapped already
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *prefaulter) run() {
	defer close(p.done)
	for p.populate != nil {
		limit := p.limit.Load()
		for p.next < limit {
			n := min(limit-p.next, prefaultBatch)
			if p.populate(p.next, n) != nil {
				// Unsupported (or the region is going away): the
				// writes map the pages instead.
				p.populate = nil
				return
			}
			p.next += n
			select {
			case <-p.stop:
				return
			default:
			}
		}
		if p.next >= p.end {
			return
		}
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
	}
}
