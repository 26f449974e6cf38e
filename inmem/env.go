// Package inmem is boardha's in-memory environment: named databases, each a
// copy-on-write B+tree on a shm page pool (the LMDB/bbolt shape), with a redo log
// in logbuf for replication.
//
// One writer at a time (an in-process mutex plus the region's writer lock); readers
// pin a snapshot and never block. Commit writes the transaction's redo records and
// a commit record to the log, then flips one of two checksummed meta pages. Pages a
// commit replaces are reused only once no snapshot can see them: in-process readers
// and pinned snapshots (checkpoints) are tracked here, readers in other processes in
// the region's reader table.
//
// Caveats (as in bbolt/LMDB): slices returned by reads alias the pool and are valid
// only inside their transaction; a long reader delays page reuse; Close must not be
// called while transactions are open.
package inmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/seed61e250c8/boardha/logbuf"
	"github.com/seed61e250c8/boardha/shm"
)

// Options configure Create (and NewImport).
type Options struct {
	Name       string      // region name ("" = private anonymous memory)
	PoolSize   int64       // bytes of tree pages; 0 = 64 MiB
	PageSize   int         // 0 = 4096
	LogSize    int         // bytes of the in-region log buffer; 0 = 4 MiB
	Mode       os.FileMode // of a named region; 0 = 0600
	Now        func() time.Time
	MaxReaders int // reader table slots for other processes; 0 = shm's default
}

const (
	defaultPoolSize = 64 << 20
	defaultLogSize  = 4 << 20
	commitRecLen    = logbuf.HeaderSize + commitBodyLen
)

func (o Options) withDefaults() (Options, error) {
	if o.PoolSize == 0 {
		o.PoolSize = defaultPoolSize
	}
	if o.PageSize == 0 {
		o.PageSize = shm.DefaultPageSize
	}
	if o.LogSize == 0 {
		o.LogSize = defaultLogSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ps := o.PageSize
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return o, fmt.Errorf("inmem: page size %d, want a power of two in [%d,%d]: %w", ps, minPageSize, maxPageSize, ErrBadOptions)
	}
	if o.PoolSize < int64(16*ps) {
		return o, fmt.Errorf("inmem: pool of %d bytes, want at least 16 pages (%d): %w", o.PoolSize, 16*ps, ErrBadOptions)
	}
	if o.LogSize < 64<<10 {
		return o, fmt.Errorf("inmem: log of %d bytes, want at least 64 KiB: %w", o.LogSize, ErrBadOptions)
	}
	return o, nil
}

// CommitInfo describes one commit record.
type CommitInfo struct {
	LSN   uint64 // LSN of the commit record
	End   uint64 // log end after it
	Gen   uint32
	Txn   uint64
	Chain uint64
}

type pendingRun struct {
	run
	txid uint64
}

// Env is one board's environment on a shm region.
type Env struct {
	opt    Options
	reg    *shm.Region
	alloc  *shm.Allocator
	log    *logbuf.Log
	lay    layout
	data   []byte
	ps     int
	npages uint64
	lo     uint64 // first tree page (after meta pages and log)
	// populating maps the rest of an imported (lazy) region in the
	// background; Close and destroy stop it before unmapping.
	populating *prefaulter

	wmu sync.Mutex // the writer
	// Scratch of the writer (under wmu): publish's meta encoding and
	// CommitAt's record read, which escape to the heap as locals.
	metaBuf   [metaSize]byte
	commitBuf [commitRecLen]byte
	closed    atomic.Bool
	gen       atomic.Uint32
	// importing: an Import in place owns the tree area (ImportInPlace);
	// writers get ErrImporting. Under wmu.
	importing bool

	readMu  sync.Mutex
	cur     meta           // last committed meta; written under wmu+readMu
	readers map[uint64]int // in-process snapshots (readers, pins) by txid
	// views holds the transactions of finished views for the next ones
	// (under readMu): a forwarding agent views at every lookup, and a Tx
	// made for each was the view's one allocation.
	views txFreeList

	// Writer state, guarded by wmu.
	last      CommitInfo
	pending   []pendingRun // freed runs waiting for snapshots to move past txid
	pendHead  int
	idName    map[uint32]string
	idValid   bool
	redo      []byte
	freed     []run
	allocated []run
	// applyTx is the transaction ApplyEncoded applies with, reused from
	// one apply to the next (beginApply): no code outside it ever holds
	// one, and a replica applies a transaction per commit it receives.
	applyTx *Tx
	// updateTx is the transaction Update runs fn in, reused the same way:
	// fn may not keep it.
	updateTx *Tx
	// wpath is the write transaction's path from the root to the leaf it
	// changes (Tx.descend): only the writer descends to change a tree, so
	// the path lives here rather than in every Tx (384 bytes a read
	// transaction no longer allocates).
	wpath     [maxDepth]pathElem
	scratch   []byte
	leafBuf   []byte
	branchBuf []byte
	ckptHook  func(s *Snapshot, rec logbuf.Record)
	// recheck holds freed runs only snapshots newer than the oldest could
	// see (see retire); snapScratch the live snapshots' txids.
	recheck     []pendingRun
	snapScratch []uint64
}

// Create makes a new region and formats the meta pages, the log and an empty catalog.
func Create(opt Options) (*Env, error) {
	e, err := createRegion(opt, false)
	if err != nil {
		return nil, err
	}
	// Transaction 1 is the empty environment. It has no catalog page
	// (root 0; the first CreateDB makes one), so its snapshot refers to
	// no tree page at all: an internal init can write a master's pages
	// into the pool while views of the empty state go on (ImportInPlace).
	m := meta{pageSize: uint32(e.ps), nextDB: 1, txid: 1, numPages: e.npages, lsn: e.log.End()}
	e.publish(m)
	e.last = lastFromMeta(m)
	return e, nil
}

// createRegion makes and lays out a region: meta pages and the log at fixed pages
// right after the shm header, so a master and an importer with the same options
// agree on where tree pages may live.
func createRegion(opt Options, lazy bool) (*Env, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	ps := opt.PageSize
	logPages := (opt.LogSize + ps - 1) / ps
	reg, err := shm.Create(opt.Name, shm.Options{PageSize: ps, Size: opt.PoolSize + int64(logPages+2)*int64(ps),
		Mode: opt.Mode, MaxReaders: opt.MaxReaders, Lazy: lazy})
	if err != nil {
		return nil, fmt.Errorf("inmem: create region %q: %w", opt.Name, err)
	}
	e := newEnv(reg, opt)
	if err := reg.LockWriter(); err != nil {
		e.destroy()
		return nil, fmt.Errorf("inmem: create %q: %w", opt.Name, err)
	}
	f := reg.FirstDataPage()
	e.lay = layout{meta: [2]uint64{f, f + 1}, logPgno: f + 2, logPages: uint64(logPages), pageSize: uint32(ps)}
	e.lo = f + 2 + uint64(logPages)
	if e.lo+8 > e.npages {
		e.destroy()
		return nil, fmt.Errorf("inmem: region of %d pages leaves no room for trees after %d log pages: %w", e.npages, logPages, ErrBadOptions)
	}
	e.alloc.Rebuild(e.reserved)
	area, err := reg.Pages(e.lay.logPgno, logPages)
	if err == nil {
		e.log, err = logbuf.Format(area, 0, logbuf.Options{Now: opt.Now})
	}
	if err != nil {
		e.destroy()
		return nil, fmt.Errorf("inmem: format log: %w", err)
	}
	clear(e.data[f*uint64(ps) : (f+2)*uint64(ps)])
	e.lay.encode(reg.UserArea())
	return e, nil
}

func newEnv(reg *shm.Region, opt Options) *Env {
	ps := reg.PageSize()
	return &Env{
		opt: opt, reg: reg, alloc: reg.Allocator(), data: reg.Data(), ps: ps, npages: reg.NumPages(),
		readers: make(map[uint64]int), scratch: make([]byte, ps), idName: make(map[uint32]string),
	}
}

func (e *Env) reserved(yield func(pgno uint64, n int) bool) {
	if yield(e.lay.meta[0], 1) && yield(e.lay.meta[1], 1) {
		yield(e.lay.logPgno, int(e.lay.logPages))
	}
}

// destroy releases a half-built environment.
func (e *Env) destroy() {
	e.stopBackground()
	if e.reg.HoldsWriter() {
		_ = e.reg.UnlockWriter()
	}
	_ = e.reg.Close()
	if e.opt.Name != "" {
		_ = shm.Remove(e.opt.Name)
	}
}

// Open attaches read-write to an existing region, taking over from a dead writer:
// the committed tree is what the newest valid meta page says; complete transactions
// in the log after it are redone, anything after the last complete one is dropped.
func Open(name string) (*Env, error) {
	reg, err := shm.Attach(name, shm.ReadWrite)
	if err != nil {
		return nil, fmt.Errorf("inmem: open %q: %w", name, err)
	}
	if err := reg.LockWriter(); err != nil {
		_ = reg.Close()
		return nil, fmt.Errorf("inmem: open %q: %w", name, err)
	}
	e := newEnv(reg, Options{Name: name, PageSize: reg.PageSize(), Now: time.Now})
	fail := func(err error) (*Env, error) {
		_ = reg.UnlockWriter()
		_ = reg.Close()
		return nil, fmt.Errorf("inmem: open %q: %w", name, err)
	}
	if e.lay, err = decodeLayout(reg.UserArea(), e.npages); err != nil {
		return fail(err)
	}
	if int(e.lay.pageSize) != e.ps {
		return fail(fmt.Errorf("layout page size %d, region's %d: %w", e.lay.pageSize, e.ps, ErrCorrupt))
	}
	e.lo = e.lay.logPgno + e.lay.logPages
	cur, other, both, err := readMetas(e.data, e.ps, e.lay, new([metaSize]byte))
	if err != nil {
		return fail(err)
	}
	area, err := reg.Pages(e.lay.logPgno, int(e.lay.logPages))
	if err != nil {
		return fail(err)
	}
	if e.log, err = logbuf.Open(area, logbuf.Options{Now: time.Now}); err != nil {
		return fail(err)
	}
	// Pages of the older meta may still be read by other processes: keep them
	// until readers move on.
	tx := e.newTx(false)
	used := make(map[uint64]int)
	if err := tx.walk(cur, false, func(pg uint64, n int) error { used[pg] = n; return nil }); err != nil {
		return fail(err)
	}
	// Keep the previous commit's own pages too (a reader may still use it), but
	// only if its tree checks out completely and overlaps nothing live: a writer
	// that died mid-transaction may already have reused some of them.
	var older []run
	if both {
		live := make(map[uint64]struct{}, len(used))
		for pg, n := range used {
			for i := range uint64(n) {
				live[pg+i] = struct{}{}
			}
		}
		var cand []run
		err := tx.walk(other, true, func(pg uint64, n int) error {
			if _, ok := used[pg]; ok {
				return nil
			}
			for i := range uint64(n) {
				if _, clash := live[pg+i]; clash {
					return fmt.Errorf("page %d of the older meta overlaps the live tree: %w", pg+i, ErrCorrupt)
				}
			}
			cand = append(cand, run{pg, n})
			return nil
		})
		if err == nil {
			older = cand
			for _, r := range cand {
				used[r.pgno] = r.n
			}
		}
	}
	e.alloc.Rebuild(func(yield func(uint64, int) bool) {
		e.reserved(yield)
		for pg, n := range used {
			if !yield(pg, n) {
				return
			}
		}
	})
	for _, r := range older {
		e.pending = append(e.pending, pendingRun{r, cur.txid})
	}
	e.cur = cur
	e.gen.Store(cur.gen)
	e.last = lastFromMeta(cur)
	if err := e.recover(); err != nil {
		return fail(err)
	}
	return e, nil
}

// recover redoes whole transactions logged after the meta's LSN (a writer died
// between appending and flipping the meta) and truncates a torn tail.
func (e *Env) recover() error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	end := e.log.End()
	if e.cur.lsn == end {
		return nil
	}
	if e.cur.lsn > end || e.cur.lsn < e.log.Begin() {
		return fmt.Errorf("meta LSN %d outside the log [%d,%d): %w", e.cur.lsn, e.log.Begin(), end, ErrCorrupt)
	}
	return e.redoRange(e.cur.lsn, end)
}

// readMetas returns the newest valid meta and, with both, the other one,
// valid too. Each page is copied into buf before it is checked (the
// writer may be rewriting the older one meanwhile): a reader passes its
// own, so that a view allocates nothing.
func readMetas(data []byte, ps int, lay layout, buf *[metaSize]byte) (cur, other meta, both bool, err error) {
	var m [2]meta
	var errs [2]error
	for i := range 2 {
		off := lay.meta[i] * uint64(ps)
		crc := atomic.LoadUint32((*uint32)(unsafe.Pointer(&data[off+124])))
		copy(buf[:124], data[off:off+124])
		binary.LittleEndian.PutUint32(buf[124:], crc)
		m[i], errs[i] = decodeMeta(buf[:])
		if errs[i] == nil && int(m[i].pageSize) != ps {
			errs[i] = fmt.Errorf("meta page size %d, region's %d: %w", m[i].pageSize, ps, ErrCorrupt)
		}
	}
	switch {
	case errs[0] != nil && errs[1] != nil:
		return meta{}, meta{}, false, fmt.Errorf("no valid meta page (%v; %v): %w", errs[0], errs[1], ErrCorrupt)
	case errs[0] != nil:
		return m[1], meta{}, false, nil
	case errs[1] != nil:
		return m[0], meta{}, false, nil
	case m[0].txid >= m[1].txid:
		return m[0], m[1], true, nil
	default:
		return m[1], m[0], true, nil
	}
}

func lastFromMeta(m meta) CommitInfo {
	if m.commitLSN == 0 && m.lastTxn == 0 {
		return CommitInfo{End: m.lsn, Gen: m.gen, Chain: m.chain}
	}
	return CommitInfo{LSN: m.commitLSN, End: m.commitLSN + commitRecLen, Gen: m.gen, Txn: m.lastTxn, Chain: m.chain}
}

// Close releases the region (and the writer lock). Transactions must be finished.
func (e *Env) Close() error {
	if !e.wmu.TryLock() {
		return fmt.Errorf("inmem: close with a write transaction open: %w", ErrTxOpen)
	}
	defer e.wmu.Unlock()
	if e.closed.Swap(true) {
		return nil
	}
	e.stopBackground()
	var errs []error
	if e.reg.HoldsWriter() {
		errs = append(errs, e.reg.UnlockWriter())
	}
	errs = append(errs, e.reg.Close())
	return errors.Join(errs...)
}

// stopBackground stops the goroutine that maps an imported region's pages
// (Import.Finish) and waits for it: the region is about to be unmapped.
func (e *Env) stopBackground() {
	if e.populating != nil {
		e.populating.close()
	}
}

// Remove closes the environment and deletes its named region.
func (e *Env) Remove() error {
	err := e.Close()
	if e.opt.Name != "" {
		if rerr := shm.Remove(e.opt.Name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Name is the region name ("" for private).
func (e *Env) Name() string { return e.opt.Name }

// Region exposes the underlying region (stats, reader table).
func (e *Env) Region() *shm.Region { return e.reg }

// Log returns the environment's log.
func (e *Env) Log() *logbuf.Log { return e.log }

// SetGen sets the gen stamped on records written from now on.
func (e *Env) SetGen(gen uint32) { e.gen.Store(gen) }

// Gen returns the current gen.
func (e *Env) Gen() uint32 { return e.gen.Load() }

// LastCommit describes the last commit applied to the tree.
func (e *Env) LastCommit() CommitInfo {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return e.last
}

// PageStats reports the pool allocator's state.
func (e *Env) PageStats() shm.AllocStats {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return e.alloc.Stats()
}

func (e *Env) newTx(writable bool) *Tx {
	tx := new(Tx)
	e.initTx(tx, writable)
	return tx
}

// initTx makes tx a fresh transaction of e.
func (e *Env) initTx(tx *Tx, writable bool) {
	*tx = Tx{env: e, data: e.data, ps: e.ps, lo: e.lo, npages: e.npages, writable: writable}
}

// Begin starts a transaction. A write transaction waits for the previous writer
// of this Env; readers never wait for the writer.
func (e *Env) Begin(writable bool) (*Tx, error) {
	if !writable {
		return e.beginRead(false)
	}
	e.wmu.Lock()
	if err := e.writable(); err != nil {
		e.wmu.Unlock()
		return nil, err
	}
	return e.beginWrite(new(Tx)), nil
}

// beginRead starts a read transaction on the current snapshot, pinning
// it; a view's (view) is one a finished view left (endView).
func (e *Env) beginRead(view bool) (*Tx, error) {
	e.readMu.Lock()
	defer e.readMu.Unlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	var tx *Tx
	if view {
		tx = e.views.get()
	} else {
		tx = new(Tx)
	}
	e.initTx(tx, false)
	tx.meta = e.cur
	e.readers[tx.meta.txid]++
	return tx, nil
}

// writable says whether a writer may start; wmu is held.
func (e *Env) writable() error {
	switch {
	case e.closed.Load():
		return ErrClosed
	case e.importing:
		return ErrImporting
	}
	return nil
}

// beginWrite makes tx, new or reused, the write transaction; wmu is held.
func (e *Env) beginWrite(tx *Tx) *Tx {
	e.releasePending()
	e.initTx(tx, true)
	return e.startWrite(tx)
}

// beginApply starts the write transaction of a replica's apply in the
// reused applyTx; wmu is held.
func (e *Env) beginApply() *Tx {
	tx := e.beginWrite(reusedTx(&e.applyTx))
	tx.applying = true
	return tx
}

// reusedTx returns the transaction *kept holds, or a new one it keeps
// there when there is none or the one kept was left open; wmu is held.
func reusedTx(kept **Tx) *Tx {
	tx := *kept
	if tx == nil || !tx.closed {
		tx = new(Tx)
		*kept = tx
	}
	return tx
}

// startWrite makes tx the write transaction on the current snapshot.
func (e *Env) startWrite(tx *Tx) *Tx {
	tx.meta = e.cur
	tx.meta.txid++
	e.redo, e.freed, e.allocated = e.redo[:0], e.freed[:0], e.allocated[:0]
	return tx
}

// holder says, for a full pool's error, who holds the oldest snapshot still
// read, which keeps every page freed after it from reuse, and how many
// pages that is: an attached process (its pid) or this one (a view or a
// pinned snapshot, the checkpoint's among them). Empty when no snapshot is
// older than the newest. wmu is held.
func (e *Env) holder() string {
	held := e.heldPages()
	e.readMu.Lock()
	cur, own := e.cur.txid, e.cur.txid
	for t := range e.readers {
		own = min(own, t)
	}
	e.readMu.Unlock()
	pid, foreign := 0, cur
	for _, r := range e.reg.Readers() {
		if r.HasTxid && r.Txid < foreign {
			pid, foreign = r.PID, r.Txid
		}
	}
	switch {
	case pid != 0 && foreign <= own:
		return fmt.Sprintf(" (%d pages are held for the oldest snapshot still read, %d transactions behind, by attached process %d: a reader stuck in a view keeps every page freed since)", held, cur-foreign, pid)
	case own < cur:
		return fmt.Sprintf(" (%d pages are held for the oldest snapshot still read, %d transactions behind, in this process: a long view or a pinned snapshot such as a checkpoint waiting to become durable)", held, cur-own)
	}
	return ""
}

// heldPages counts the freed pages kept for snapshots that may still read
// them (pending and recheck). wmu is held.
func (e *Env) heldPages() uint64 {
	var held uint64
	for _, p := range e.pending[e.pendHead:] {
		held += uint64(p.n)
	}
	for _, p := range e.recheck {
		held += uint64(p.n)
	}
	return held
}

// oldest is the oldest snapshot anyone may still read.
func (e *Env) oldest() uint64 {
	e.readMu.Lock()
	o := e.cur.txid
	for t := range e.readers {
		o = min(o, t)
	}
	e.readMu.Unlock()
	if t, ok := e.reg.OldestReader(); ok {
		o = min(o, t)
	}
	return o
}

// releasePending hands back to the allocator the freed runs no snapshot can see.
func (e *Env) releasePending() {
	e.releaseRecheck()
	if e.pendHead == len(e.pending) {
		return
	}
	o := e.oldest()
	n := 0
	for e.pendHead < len(e.pending) && e.pending[e.pendHead].txid <= o {
		r := e.pending[e.pendHead]
		e.alloc.Free(r.pgno, r.n, 0)
		e.pendHead++
		n++
	}
	if n > 0 {
		e.alloc.Release(0)
	}
	if e.pendHead == len(e.pending) {
		e.pending, e.pendHead = e.pending[:0], 0
	} else if e.pendHead > 1024 && e.pendHead*2 > len(e.pending) {
		k := copy(e.pending, e.pending[e.pendHead:])
		e.pending, e.pendHead = e.pending[:k], 0
	}
}

// retire disposes of the runs the transaction txid (just published) freed.
//
// A page version written by transaction A and freed by F is visible exactly
// to the snapshots with A <= txid < F. The LMDB rule waits until the oldest
// snapshot has passed F; with a checkpoint pinned, that keeps every page
// freed since the checkpoint from reuse, so a board cycles through fresh,
// cold pages between checkpoints. Here a run no live snapshot can see is
// released at once: with the checkpoint's snapshot older than A, the pages
// a stream of small commits copies and frees are reused while still in the
// cache. A run the oldest snapshot can see waits in pending for it to go, as
// before; one only newer snapshots (short reads) can see waits in recheck,
// looked at again before each write transaction.
//
// The snapshots are read after the publication: a reader that begins from
// now on gets txid and cannot see what txid freed. Readers in other
// processes are not told apart (one reader slot covers a process's nested
// snapshots, whose txids it does not publish): any of them older than txid
// keeps every run pending.
func (e *Env) retire(txid uint64) {
	if len(e.freed) == 0 {
		return
	}
	snaps, foreign, foreignAny := e.liveSnapshots()
	oldest := txid
	for _, t := range snaps {
		oldest = min(oldest, t)
	}
	released := false
	for _, r := range e.freed {
		pr := pendingRun{r, txid}
		switch {
		case (foreignAny && foreign < txid) || e.visibleTo(pr, oldest):
			e.pending = append(e.pending, pr)
		case e.visibleToAny(pr, snaps):
			e.recheck = append(e.recheck, pr)
		default:
			e.alloc.Free(r.pgno, r.n, 0)
			released = true
		}
	}
	if released {
		e.alloc.Release(0)
	}
}

// liveSnapshots returns the txids of the in-process snapshots, and the
// oldest snapshot of a reader in another process if there is one.
func (e *Env) liveSnapshots() (snaps []uint64, foreign uint64, foreignAny bool) {
	e.readMu.Lock()
	snaps = e.snapScratch[:0]
	for t := range e.readers {
		snaps = append(snaps, t)
	}
	e.readMu.Unlock()
	e.snapScratch = snaps
	foreign, foreignAny = e.reg.OldestReader()
	return snaps, foreign, foreignAny
}

// releaseRecheck frees the runs in recheck that no snapshot can see any more.
func (e *Env) releaseRecheck() {
	if len(e.recheck) == 0 {
		return
	}
	snaps, foreign, foreignAny := e.liveSnapshots()
	kept := e.recheck[:0]
	released := false
	for _, pr := range e.recheck {
		if (foreignAny && foreign < pr.txid) || e.visibleToAny(pr, snaps) {
			kept = append(kept, pr)
			continue
		}
		e.alloc.Free(pr.pgno, pr.n, 0)
		released = true
	}
	e.recheck = kept
	if released {
		e.alloc.Release(0)
	}
}

// visibleToAny reports whether a snapshot in snaps may see the freed run.
func (e *Env) visibleToAny(pr pendingRun, snaps []uint64) bool {
	for _, s := range snaps {
		if e.visibleTo(pr, s) {
			return true
		}
	}
	return false
}

// visibleTo reports whether the snapshot with txid snap may see the freed
// run: it is at or after the transaction that wrote the run (its header's
// txid; a run its freeing transaction also wrote was never visible) and
// before the one that freed it.
func (e *Env) visibleTo(pr pendingRun, snap uint64) bool {
	if pr.pgno < e.lo || pr.pgno >= e.npages {
		return true // not a tree page: leave it to the oldest-snapshot rule
	}
	off := pr.pgno * uint64(e.ps)
	born := pTxid(e.data[off : off+uint64(e.ps)])
	if born > pr.txid {
		return true // a header from the future: do not trust it
	}
	return born <= snap && snap < pr.txid
}

// release ends a read transaction.
func (tx *Tx) release() {
	if tx.closed {
		return
	}
	tx.closed = true
	if tx.unpin != nil {
		tx.unpin()
		return
	}
	e := tx.env
	e.readMu.Lock()
	e.unpinLocked(tx.meta.txid)
	e.readMu.Unlock()
}

func (e *Env) unpinLocked(txid uint64) {
	if e.readers[txid] <= 1 {
		delete(e.readers, txid)
	} else {
		e.readers[txid]--
	}
}

// Update runs fn in a write transaction and commits it unless fn fails.
// The Tx is valid only until fn returns: a later Update reuses it.
func (e *Env) Update(fn func(*Tx) error) (CommitInfo, error) {
	e.wmu.Lock()
	if err := e.writable(); err != nil {
		e.wmu.Unlock()
		return CommitInfo{}, err
	}
	// The master's group commit is one Update per batch: reusing the
	// transaction keeps that path free of allocations, as the replica's
	// apply is (applyTx).
	tx := e.beginWrite(reusedTx(&e.updateTx))
	defer tx.Abort() // a panicking fn must not leave the writer locked
	if err := fn(tx); err != nil {
		tx.Abort()
		return CommitInfo{}, err
	}
	return tx.Commit()
}

// View runs fn in a read transaction on the current snapshot. The Tx is
// valid only until fn returns: a later view reuses it.
func (e *Env) View(fn func(*Tx) error) error {
	tx, err := e.beginRead(true)
	if err != nil {
		return err
	}
	defer e.endView(tx)
	if err := fn(tx); err != nil {
		return err
	}
	return tx.err
}

// endView closes a view's transaction and keeps it for the next view.
func (e *Env) endView(tx *Tx) {
	e.readMu.Lock()
	if !tx.closed { // else fn ended it early (Abort), which unpinned
		tx.closed = true
		e.unpinLocked(tx.meta.txid)
	}
	e.views.put(tx)
	e.readMu.Unlock()
}

// Abort ends the transaction without committing. Safe to call twice.
func (tx *Tx) Abort() {
	if tx.closed {
		return
	}
	if !tx.writable {
		tx.release()
		return
	}
	tx.env.abortWrite(tx)
	tx.env.wmu.Unlock()
}

// abortWrite drops the transaction's pages; wmu stays held.
func (e *Env) abortWrite(tx *Tx) {
	for _, r := range e.allocated {
		e.alloc.Free(r.pgno, r.n, 0)
	}
	if len(e.allocated) > 0 {
		e.alloc.Release(0)
	}
	e.redo, e.freed, e.allocated = e.redo[:0], e.freed[:0], e.allocated[:0]
	e.idValid = false
	tx.closed = true
}

// Commit appends the transaction's redo and commit records to the log and flips
// the meta page. On any error the transaction is aborted and nothing is visible.
// A write transaction that changed nothing logs nothing and returns LastCommit.
func (tx *Tx) Commit() (CommitInfo, error) {
	if tx.closed {
		return CommitInfo{}, ErrTxClosed
	}
	if !tx.writable {
		tx.release()
		return CommitInfo{}, ErrReadOnlyTx
	}
	e := tx.env
	defer e.wmu.Unlock()
	info, err := e.commitLocal(tx)
	if err != nil {
		e.abortWrite(tx)
		return CommitInfo{}, err
	}
	return info, nil
}

func (e *Env) commitLocal(tx *Tx) (CommitInfo, error) {
	if tx.err != nil {
		return CommitInfo{}, tx.err
	}
	if err := tx.flushCatalog(); err != nil {
		return CommitInfo{}, err
	}
	if !tx.changed {
		e.abortWrite(tx)
		return e.last, nil
	}
	info, err := e.appendTxn(tx)
	if err != nil {
		return CommitInfo{}, err
	}
	e.finish(tx, info, info.End)
	return info, nil
}

// flushCatalog records changed database roots in the catalog tree.
func (tx *Tx) flushCatalog() error {
	var v [12]byte
	for _, db := range tx.dbs {
		if db.dropped || db.root == db.orig {
			continue
		}
		binary.LittleEndian.PutUint32(v[:], db.id)
		binary.LittleEndian.PutUint64(v[4:], db.root)
		if err := tx.catalogPut(bytesOf(db.name), v[:]); err != nil {
			return err
		}
		db.orig = db.root
	}
	return nil
}

// appendTxn completes the buffered redo records (gen, txn, LSN, crc), adds the
// commit record with the chain, and appends them to the log in one piece.
func (e *Env) appendTxn(tx *Tx) (CommitInfo, error) {
	le := binary.LittleEndian
	lsn := e.log.End()
	if lsn != e.cur.lsn {
		return CommitInfo{}, fmt.Errorf("inmem: log end %d differs from the tree's LSN %d (log changed behind the environment): %w", lsn, e.cur.lsn, ErrCorrupt)
	}
	gen := e.gen.Load()
	chain := e.cur.chain
	start := len(e.redo)
	e.redo = append(e.redo, make([]byte, commitRecLen)...)
	c := e.redo[start:]
	le.PutUint32(c, commitRecLen)
	c[4] = logbuf.RecCommit
	appendCommitBody(c[logbuf.HeaderSize:logbuf.HeaderSize], tx.nrec, 0)
	b := e.redo
	var commitLSN uint64
	for off := 0; off < len(b); {
		n := int(le.Uint32(b[off:]))
		r := b[off : off+n]
		if r[4] == logbuf.RecCommit {
			commitLSN = lsn
			le.PutUint64(r[logbuf.HeaderSize+8:], chain)
		}
		le.PutUint32(r[8:], gen)
		le.PutUint32(r[12:], 0)
		le.PutUint64(r[16:], tx.meta.txid)
		le.PutUint64(r[24:], lsn)
		crc := crc32.Checksum(r, castagnoli)
		le.PutUint32(r[12:], crc)
		if r[4] != logbuf.RecCommit {
			chain = chainNext(chain, crc)
		}
		lsn += uint64(n)
		off += n
	}
	if err := e.log.AppendEncoded(b); err != nil {
		return CommitInfo{}, fmt.Errorf("inmem: commit of %d records (%d bytes): %w", tx.nrec+1, len(b), err)
	}
	return CommitInfo{LSN: commitLSN, End: lsn, Gen: gen, Txn: tx.meta.txid, Chain: chain}, nil
}

// finish publishes the transaction's tree as of a commit whose record ends at end.
func (e *Env) finish(tx *Tx, info CommitInfo, end uint64) {
	m := tx.meta
	m.lsn, m.commitLSN, m.chain, m.lastTxn, m.gen = end, info.LSN, info.Chain, info.Txn, info.Gen
	e.publish(m)
	e.retire(m.txid)
	e.last = info
	if tx.catChanged {
		e.idValid = false
	}
	e.redo, e.freed, e.allocated = e.redo[:0], e.freed[:0], e.allocated[:0]
	tx.closed = true
}

// publish writes m to its meta page (txid%2) and makes it the current snapshot.
func (e *Env) publish(m meta) {
	m.pageSize = uint32(e.ps)
	m.numPages = e.npages
	off := e.lay.meta[m.txid%2] * uint64(e.ps)
	b := &e.metaBuf
	m.encode(b[:])
	// The checksum word goes last with an atomic store: a release barrier, so a
	// reader in another process that sees a valid meta also sees the pages it
	// points to (readMetas loads it first, with acquire semantics).
	page := e.data[off : off+metaSize]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&page[124])), 0)
	copy(page[:124], b[:124])
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&page[124])), binary.LittleEndian.Uint32(b[124:]))
	e.readMu.Lock()
	e.cur = m
	e.readMu.Unlock()
}

// RetainLog lets the log reclaim records before lsn (a promoted checkpoint),
// ordered with commits by the writer lock.
func (e *Env) RetainLog(lsn uint64) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if !e.closed.Load() {
		e.log.Retain(lsn)
	}
}

// Stats describes the environment.
type Stats struct {
	Pages        shm.AllocStats // the pool allocator; its UsedPages include PendingPages below (held here, not in shm)
	PendingPages uint64         // freed pages waiting for older snapshots to be released
	Snapshots    int            // in-process readers and pinned snapshots
	Txid         uint64         // last committed transaction id
	OldestTxid   uint64         // oldest snapshot still visible (any process)
}

// Stats reports pool usage and snapshot pinning.
func (e *Env) Stats() Stats {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	var st Stats
	st.Pages = e.alloc.Stats()
	st.PendingPages = e.heldPages()
	st.OldestTxid = e.oldest()
	e.readMu.Lock()
	for _, n := range e.readers {
		st.Snapshots += n
	}
	st.Txid = e.cur.txid
	e.readMu.Unlock()
	return st
}
