package inmem

import "sync/atomic"

// prefaultAhead is how far (in pages) the prefaulter reads beyond the highest
// page an import has stored: 256 MiB of 4 KiB pages, far enough that it never
// waits for the importer's progress during a large init (8192 pages made it
// wait for wake-ups: 449 MB/s against 499 unbounded, five alternated runs of
// the bench's init). Import.ExpectRuns narrows it to what is still to come.
const prefaultAhead = 65536

// prefaultSlack is read beyond the pages still expected: page numbers of a
// snapshot are not dense, so the rest of it spans more pages than it has.
const prefaultSlack = 1024

// prefaultBatch is how many pages one pass of the prefaulter reads before it
// looks at its stop signal again.
const prefaultBatch = 256

// prefaulter reads one byte of every page of an import's fresh region, in page
// order, ahead of the pages the importer stores, on a goroutine of its own;
// the region being lazy (shm.Options.Lazy), it first maps each batch of pages
// (Region.Populate). After the import, a second one (startPopulate), without
// reading, maps the rest of the region in the background, as creating it with
// MAP_POPULATE would have.
//
// Why: on the virtual machines the boards are tested on, the first access of
// this process to a page of a freshly created region costs 5–7 µs (a 4 KiB
// page; measured after MAP_POPULATE, after MADV_POPULATE_WRITE and after the
// kernel itself read the page through process_vm_readv: none of them take the
// cost away), and an access that reads pays it as well as one that writes.
// Paid inline by the importer's copy it was about half of an internal init's
// time; read ahead, it runs on the other CPU while the importer waits for the
// master's next window. Mapping the whole region at creation took another
// 0.1–0.8 s for a 640 MiB pool before the first page could be requested; mapped
// a batch at a time ahead of the reads, it costs the pages the import stores
// and overlaps the transfer. Reading or mapping never changes a page, so the
// prefaulter and the importer need no coordination beyond the limit. The
// master sends pages in ascending page order (Snapshot.PageList), so reading
// in page order stays ahead of the copy.
type prefaulter struct {
	data     []byte
	ps       uint64
	populate func(pgno, n uint64) error // maps pages before they are read; nil after it failed
	touch    bool                       // read the pages (the import), or only map them
	next     uint64                     // next page; the prefaulter's goroutine only
	limit    atomic.Uint64              // handle the pages below this
	kick     chan struct{}              // limit moved
	stop     chan struct{}
	done     chan struct{}
	sum      byte // what the reads saw, kept so that they are not optimised away

	// The importer's side (advance, expect): page runs and pages stored so
	// far, and the runs the snapshot has (0: unknown).
	runsStored, pagesStored, runsExpected uint64
}

// startPrefault maps (with populate, if not nil) and reads pages [from, end)
// of data (pages of ps bytes), at first those below from+prefaultAhead;
// advance moves the limit.
func startPrefault(data []byte, ps int, from, end uint64, populate func(pgno, n uint64) error) *prefaulter {
	return startPager(data, ps, from, end, min(end, from+prefaultAhead), populate, true)
}

// startPopulate maps pages [from, end) with populate in the background,
// without reading them.
func startPopulate(data []byte, ps int, from, end uint64, populate func(pgno, n uint64) error) *prefaulter {
	return startPager(data, ps, from, end, end, populate, false)
}

func startPager(data []byte, ps int, from, end, limit uint64, populate func(pgno, n uint64) error, touch bool) *prefaulter {
	p := &prefaulter{data: data[:end*uint64(ps)], ps: uint64(ps), next: from, populate: populate, touch: touch,
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
	p.runsExpected = runs
	p.limit.Store(min(uint64(len(p.data))/p.ps, from+p.ahead()))
}

// advance tells the prefaulter the importer stored a run of n pages ending
// before pgno. Cheap enough for every run: it wakes the prefaulter only when
// the limit moved by a quarter of its look-ahead or the end came within reach.
func (p *prefaulter) advance(pgno, n uint64) {
	p.runsStored++
	p.pagesStored += n
	end := uint64(len(p.data)) / p.ps
	want := min(pgno+p.ahead(), end)
	if cur := p.limit.Load(); want <= cur || (want < cur+p.ahead()/4 && want < end) {
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
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *prefaulter) run() {
	defer close(p.done)
	for {
		limit := p.limit.Load()
		for p.next < limit {
			n := min(limit-p.next, prefaultBatch)
			if p.populate != nil && p.populate(p.next, n) != nil {
				// Unsupported (or the region is going away): the
				// reads, or the writes, map the pages instead.
				p.populate = nil
			}
			if p.touch {
				p.sum += touchPages(p.data[p.next*p.ps:(p.next+n)*p.ps], int(p.ps))
			}
			p.next += n
			select {
			case <-p.stop:
				return
			default:
			}
		}
		if p.next*p.ps >= uint64(len(p.data)) {
			return
		}
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
	}
}
