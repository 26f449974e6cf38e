package shm

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// Allocator hands out runs of pages in [FirstDataPage, NumPages) to the region's writer.
// It lives in the writer's memory, not in the region: after attaching read-write (for
// instance when taking over a dead writer) the layer above calls Rebuild with every page
// it still references.
//
// Freed pages are not reusable at once: a page freed by transaction T may still be read
// by any snapshot older than T, so Free parks it as pending under T and Release moves it
// to the free set once the oldest snapshot still visible is >= T (the LMDB/bbolt rule).
//
// Free space is a bitmap, one bit per page, so adjacent frees coalesce by construction
// and Alloc prefers the lowest pages, which keeps the high-water mark low. Not safe for
// concurrent use: the writer lock serialises its only user.
type Allocator struct {
	r        *Region
	first    uint64   // first allocatable page
	total    uint64   // pages in the region
	free     []uint64 // bit set = page free and reusable
	pendBits []uint64 // bit set = page freed but pending release
	nfree    uint64
	npending uint64
	hint     uint64 // no free page below this word index
	pending  []pendingRun
	phead    int // pending[:phead] already released
	high     uint64
	bad      uint64 // invalid or double frees ignored
	readOnly bool
}

type pendingRun struct {
	txid uint64
	pgno uint64
	n    uint64
}

// AllocStats describes the page pool.
type AllocStats struct {
	TotalPages   uint64 // allocatable pages: NumPages - FirstDataPage
	UsedPages    uint64 // allocated and not freed
	FreePages    uint64 // reusable now
	PendingPages uint64 // freed, waiting for older snapshots to go
	HighWater    uint64 // one past the highest page ever allocated
	BadFrees     uint64 // Free calls ignored: out of range, or of pages not allocated
	PageSize     int
}

// Allocator returns the region's page allocator. On a fresh region every data page is
// free; on an attached one call Rebuild first. On a read-only region Alloc fails with
// ErrReadOnly.
func (r *Region) Allocator() *Allocator {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.alloc == nil {
		r.alloc = newAllocator(r, r.hdr.FirstDataPage, r.hdr.NumPages)
		r.alloc.readOnly = r.readOnly
		if !r.readOnly && !r.closed.Load() {
			r.alloc.high = atomic.LoadUint64(r.word(offHighWater))
		}
		if r.alloc.high < r.alloc.first {
			r.alloc.high = r.alloc.first
		}
	}
	return r.alloc
}

func newAllocator(r *Region, first, total uint64) *Allocator {
	words := (total + 63) / 64
	a := &Allocator{r: r, first: first, total: total, free: make([]uint64, words), pendBits: make([]uint64, words)}
	a.setRange(a.free, first, total-first)
	a.nfree = total - first
	a.hint = first / 64
	a.high = first
	return a
}

func setBit(m []uint64, p uint64)       { m[p/64] |= 1 << (p % 64) }
func clearBit(m []uint64, p uint64)     { m[p/64] &^= 1 << (p % 64) }
func testBit(m []uint64, p uint64) bool { return m[p/64]&(1<<(p%64)) != 0 }
func (a *Allocator) setRange(m []uint64, p, n uint64) {
	for ; n > 0 && p%64 != 0; p, n = p+1, n-1 {
		setBit(m, p)
	}
	for ; n >= 64; p, n = p+64, n-64 {
		m[p/64] = ^uint64(0)
	}
	for ; n > 0; p, n = p+1, n-1 {
		setBit(m, p)
	}
}

func clearRange(m []uint64, p, n uint64) {
	for ; n > 0 && p%64 != 0; p, n = p+1, n-1 {
		clearBit(m, p)
	}
	for ; n >= 64; p, n = p+64, n-64 {
		m[p/64] = 0
	}
	for ; n > 0; p, n = p+1, n-1 {
		clearBit(m, p)
	}
}

// allSet reports whether bits [p, p+n) are all set in m.
func allSet(m []uint64, p, n uint64) bool {
	for ; n > 0 && p%64 != 0; p, n = p+1, n-1 {
		if !testBit(m, p) {
			return false
		}
	}
	for ; n >= 64; p, n = p+64, n-64 {
		if m[p/64] != ^uint64(0) {
			return false
		}
	}
	for ; n > 0; p, n = p+1, n-1 {
		if !testBit(m, p) {
			return false
		}
	}
	return true
}

func anySet(m []uint64, p, n uint64) bool {
	for ; n > 0 && p%64 != 0; p, n = p+1, n-1 {
		if testBit(m, p) {
			return true
		}
	}
	for ; n >= 64; p, n = p+64, n-64 {
		if m[p/64] != 0 {
			return true
		}
	}
	for ; n > 0; p, n = p+1, n-1 {
		if testBit(m, p) {
			return true
		}
	}
	return false
}

// Alloc returns the first page of n contiguous free pages (lowest address first) and
// marks them used. ErrPoolFull, with the request and pool sizes, when no run is long
// enough; the allocator is then unchanged.
func (a *Allocator) Alloc(n int) (uint64, error) {
	if a.readOnly {
		return 0, fmt.Errorf("shm: alloc %d pages: %w", n, ErrReadOnly)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%w: alloc of %d pages", ErrInvalid, n)
	}
	if a.r != nil && a.r.closed.Load() {
		return 0, fmt.Errorf("shm: alloc %d pages: %w", n, ErrClosed)
	}
	need := uint64(n)
	if need <= a.nfree {
		var p uint64
		var ok bool
		if need == 1 {
			p, ok = a.findOne()
		} else {
			p, ok = a.findRun(need)
		}
		if ok {
			clearRange(a.free, p, need)
			a.nfree -= need
			if end := p + need; end > a.high {
				a.high = end
				if a.r != nil && !a.r.closed.Load() {
					atomic.StoreUint64(a.r.word(offHighWater), end)
				}
			}
			return p, nil
		}
	}
	ps := 0
	if a.r != nil {
		ps = int(a.r.hdr.PageSize)
	}
	return 0, fmt.Errorf("%w: need %d contiguous pages (%d bytes); %d pages free, longest free run %d, %d pending release until readers of older snapshots finish; pool of %d pages of %d bytes is fixed at creation",
		ErrPoolFull, n, uint64(n)*uint64(ps), a.nfree, a.longestRun(), a.npending, a.total-a.first, ps)
}

func (a *Allocator) findOne() (uint64, bool) {
	for w := a.hint; w < uint64(len(a.free)); w++ {
		if x := a.free[w]; x != 0 {
			a.hint = w
			return w*64 + uint64(bits.TrailingZeros64(x)), true
		}
	}
	a.hint = uint64(len(a.free))
	return 0, false
}

// findRun finds the lowest run of n free pages, skipping whole full words.
func (a *Allocator) findRun(n uint64) (uint64, bool) {
	var start, run uint64
	for w := a.hint; w < uint64(len(a.free)); w++ {
		x := a.free[w]
		if x == 0 {
			run = 0
			continue
		}
		if x == ^uint64(0) {
			if run == 0 {
				start = w * 64
			}
			run += 64
			if run >= n {
				return start, true
			}
			continue
		}
		for b := uint64(0); b < 64; b++ {
			if x&(1<<b) == 0 {
				run = 0
				continue
			}
			if run == 0 {
				start = w*64 + b
			}
			run++
			if run >= n {
				return start, true
			}
		}
	}
	return 0, false
}

func (a *Allocator) longestRun() uint64 {
	var best, run uint64
	for p := a.first; p < a.total; p++ {
		if testBit(a.free, p) {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return best
}

// Free marks n pages from pgno as freed by transaction txid. They become reusable after
// Release(t) with t >= txid. Out-of-range frees and frees of pages that are already free
// or pending are ignored and counted in Stats().BadFrees: a caller bug must not corrupt
// the pool by handing one page out twice.
func (a *Allocator) Free(pgno uint64, n int, txid uint64) {
	if a.readOnly || n <= 0 || pgno < a.first || pgno >= a.total || uint64(n) > a.total-pgno {
		a.bad++
		return
	}
	cnt := uint64(n)
	if anySet(a.free, pgno, cnt) || anySet(a.pendBits, pgno, cnt) {
		a.bad++
		return
	}
	a.setRange(a.pendBits, pgno, cnt)
	a.npending += cnt
	run := pendingRun{txid: txid, pgno: pgno, n: cnt}
	// Frees arrive in txid order from a single writer; keep the queue sorted anyway so a
	// caller freeing on behalf of an older transaction cannot hold back newer ones.
	i := len(a.pending)
	for i > a.phead && a.pending[i-1].txid > txid {
		i--
	}
	a.pending = append(a.pending, pendingRun{})
	copy(a.pending[i+1:], a.pending[i:])
	a.pending[i] = run
}

// Release makes reusable every pending page freed by a transaction <= oldestVisibleTxid,
// the oldest snapshot any reader (or checkpoint) may still use.
func (a *Allocator) Release(oldestVisibleTxid uint64) {
	for a.phead < len(a.pending) && a.pending[a.phead].txid <= oldestVisibleTxid {
		p := a.pending[a.phead]
		clearRange(a.pendBits, p.pgno, p.n)
		a.setRange(a.free, p.pgno, p.n)
		a.npending -= p.n
		a.nfree += p.n
		if w := p.pgno / 64; w < a.hint {
			a.hint = w
		}
		a.phead++
	}
	// Reuse the queue's backing array instead of letting it creep forward.
	if a.phead == len(a.pending) {
		a.pending, a.phead = a.pending[:0], 0
	} else if a.phead > 1024 && a.phead*2 > len(a.pending) {
		k := copy(a.pending, a.pending[a.phead:])
		a.pending, a.phead = a.pending[:k], 0
	}
}

// Rebuild resets the allocator from the set of pages in use: used yields each in-use run
// (pgno, n); every other data page becomes free, nothing is pending. Runs outside the data
// pages are ignored and counted as bad frees.
func (a *Allocator) Rebuild(used func(yield func(pgno uint64, n int) bool)) {
	clear(a.pendBits)
	clear(a.free)
	a.setRange(a.free, a.first, a.total-a.first)
	a.nfree = a.total - a.first
	a.npending = 0
	a.pending, a.phead = a.pending[:0], 0
	a.hint = a.first / 64
	a.high = a.first
	used(func(pgno uint64, n int) bool {
		if n <= 0 || pgno < a.first || pgno >= a.total || uint64(n) > a.total-pgno {
			a.bad++
			return true
		}
		cnt := uint64(n)
		for p := pgno; p < pgno+cnt; p++ {
			if testBit(a.free, p) {
				clearBit(a.free, p)
				a.nfree--
			}
		}
		a.high = max(a.high, pgno+cnt)
		return true
	})
	if a.r != nil && !a.readOnly && !a.r.closed.Load() {
		atomic.StoreUint64(a.r.word(offHighWater), a.high)
	}
}

// Stats reports the pool's state.
func (a *Allocator) Stats() AllocStats {
	s := AllocStats{
		TotalPages:   a.total - a.first,
		FreePages:    a.nfree,
		PendingPages: a.npending,
		HighWater:    a.high,
		BadFrees:     a.bad,
	}
	s.UsedPages = s.TotalPages - s.FreePages - s.PendingPages
	if a.r != nil {
		s.PageSize = int(a.r.hdr.PageSize)
	}
	return s
}
