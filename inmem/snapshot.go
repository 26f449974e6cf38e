package inmem

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
)

// Snapshot is a pinned committed state: its pages are not reused until Release.
// Checkpoints and internal init use it.
type Snapshot struct {
	e    *Env
	m    meta
	done atomic.Bool
}

// PinSnapshot pins the current committed state.
func (e *Env) PinSnapshot() (*Snapshot, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	return e.pin(), nil
}

func (e *Env) pin() *Snapshot {
	e.readMu.Lock()
	s := &Snapshot{e: e, m: e.cur}
	e.readers[s.m.txid]++
	e.readMu.Unlock()
	return s
}

// Release unpins the snapshot. Safe to call twice.
func (s *Snapshot) Release() {
	if s == nil || s.done.Swap(true) {
		return
	}
	s.e.readMu.Lock()
	s.e.unpinLocked(s.m.txid)
	s.e.readMu.Unlock()
}

// Clone pins the snapshot's state once more, for a reader that may outlive
// s (a walk on another goroutine while the checkpoint that holds s moves
// on): its pages are not reused until both are released. Nil if s is
// already released.
func (s *Snapshot) Clone() *Snapshot {
	s.e.readMu.Lock()
	defer s.e.readMu.Unlock()
	if s.done.Load() {
		return nil
	}
	s.e.readers[s.m.txid]++
	return &Snapshot{e: s.e, m: s.m}
}

// LSN is the log position the snapshot reflects: redo from here reproduces later states.
func (s *Snapshot) LSN() uint64 { return s.m.lsn }

// Txid is the snapshot's transaction id.
func (s *Snapshot) Txid() uint64 { return s.m.txid }

// Meta returns the snapshot's encoded meta page (for NewImport).
func (s *Snapshot) Meta() []byte {
	b := make([]byte, metaSize)
	s.m.encode(b)
	return b
}

// View runs fn on the snapshot's content.
func (s *Snapshot) View(fn func(*Tx) error) error {
	if s.done.Load() {
		return fmt.Errorf("inmem: view of a released snapshot: %w", ErrTxClosed)
	}
	tx := s.e.newTx(false)
	tx.meta = s.m
	tx.unpin = func() {}
	defer tx.release()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.err
}

// PageRun is one exported unit: a tree page (N=1) or an overflow run.
type PageRun struct {
	Pgno uint64
	N    int
}

// PageRuns lists every page run reachable from the snapshot (catalog, trees,
// overflow runs), checking each page on the way.
func (s *Snapshot) PageRuns() ([]PageRun, error) {
	var out []PageRun
	if s.done.Load() {
		return nil, fmt.Errorf("inmem: pages of a released snapshot: %w", ErrTxClosed)
	}
	tx := s.e.newTx(false)
	err := tx.walk(s.m, true, func(pg uint64, n int) error {
		out = append(out, PageRun{pg, n})
		return nil
	})
	return out, err
}

// PageList lists the first page of every run reachable from the snapshot, in
// ascending order; ReadPage of one returns the whole run. Nil if the snapshot is
// released or corrupt (see PageRuns for the error). The order lets an importer
// fill its fresh region front to back, behind its prefaulter.
func (s *Snapshot) PageList() []uint64 {
	runs, err := s.PageRuns()
	if err != nil {
		return nil
	}
	out := make([]uint64, len(runs))
	for i, r := range runs {
		out[i] = r.Pgno
	}
	slices.Sort(out)
	return out
}

// ReadPage appends page pgno (the whole run for an overflow run) to dst[:0],
// in the form Import.PutPage takes: without the space that holds nothing
// (appendWirePage), so a half-full page travels as half a page and a value
// run as its value.
func (s *Snapshot) ReadPage(pgno uint64, dst []byte) ([]byte, error) {
	p, err := s.page(pgno)
	if err != nil {
		return nil, err
	}
	e := s.e
	n := 1
	if pType(p) == pageOverflow {
		n = pOvPages(p)
		if n < 1 || uint64(n) > e.npages-pgno {
			return nil, corrupt(pgno, fmt.Sprintf("overflow run of %d pages", n))
		}
	}
	off := pgno * uint64(e.ps)
	return appendWirePage(dst[:0], e.data[off:off+uint64(n*e.ps)]), nil
}

// page returns page pgno of the pool the snapshot pins. A master reads
// every page of an export through it: no transaction is made per page.
func (s *Snapshot) page(pgno uint64) ([]byte, error) {
	if s.done.Load() {
		return nil, fmt.Errorf("inmem: read of a released snapshot: %w", ErrTxClosed)
	}
	return treePage(s.e.data, s.e.ps, s.e.lo, s.e.npages, pgno)
}

// PageTxid returns the transaction that wrote page pgno of the snapshot
// (its header's txid). Pages are never changed once committed, so a page
// of a later snapshot of the same environment written no later than an
// earlier snapshot's txid is, byte for byte, the page that snapshot held
// at that number: a resumed internal init keeps those (Import.Keep).
func (s *Snapshot) PageTxid(pgno uint64) (uint64, error) {
	p, err := s.page(pgno)
	if err != nil {
		return 0, err
	}
	return pTxid(p), nil
}

// DBInfo describes one database in a snapshot.
type DBInfo struct {
	Name string
	ID   uint32
	Root uint64
}

// CheckpointInfo is the body of a RecCheckpoint record.
type CheckpointInfo struct {
	Txid        uint64
	LSN         uint64
	CatalogRoot uint64
	DBs         []DBInfo
}

// Info describes the snapshot (the checkpoint record body).
func (s *Snapshot) Info() (CheckpointInfo, error) {
	ci := CheckpointInfo{Txid: s.m.txid, LSN: s.m.lsn, CatalogRoot: s.m.root}
	err := s.View(func(tx *Tx) error {
		c := tx.cursorOn(tx.meta.root)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			id, root, ok := catEntry(v)
			if !ok {
				return corrupt(tx.meta.root, "bad catalog entry")
			}
			ci.DBs = append(ci.DBs, DBInfo{Name: string(k), ID: id, Root: root})
		}
		return nil
	})
	return ci, err
}

// AppendCheckpointBody encodes a checkpoint record body:
//
//	txid u64 | lsn u64 | catalog root u64 | n u32 | n × (id u32 | root u64 | nameLen u16 | name)
func AppendCheckpointBody(dst []byte, ci CheckpointInfo) []byte {
	le := binary.LittleEndian
	dst = le.AppendUint64(dst, ci.Txid)
	dst = le.AppendUint64(dst, ci.LSN)
	dst = le.AppendUint64(dst, ci.CatalogRoot)
	dst = le.AppendUint32(dst, uint32(len(ci.DBs)))
	for _, d := range ci.DBs {
		dst = le.AppendUint32(dst, d.ID)
		dst = le.AppendUint64(dst, d.Root)
		dst = le.AppendUint16(dst, uint16(len(d.Name)))
		dst = append(dst, d.Name...)
	}
	return dst
}

// DecodeCheckpointBody parses a checkpoint record body (fuzzed: any input gives a
// value or an error).
func DecodeCheckpointBody(b []byte) (CheckpointInfo, error) {
	var ci CheckpointInfo
	le := binary.LittleEndian
	if len(b) < 28 {
		return ci, fmt.Errorf("inmem: checkpoint body of %d bytes, need 28: %w", len(b), ErrCorrupt)
	}
	ci.Txid, ci.LSN, ci.CatalogRoot = le.Uint64(b), le.Uint64(b[8:]), le.Uint64(b[16:])
	n := int(le.Uint32(b[24:]))
	b = b[28:]
	if n > len(b)/14 {
		return ci, fmt.Errorf("inmem: checkpoint body claims %d databases in %d bytes: %w", n, len(b), ErrCorrupt)
	}
	ci.DBs = make([]DBInfo, 0, n)
	for i := 0; i < n; i++ {
		if len(b) < 14 {
			return ci, fmt.Errorf("inmem: checkpoint body truncated at database %d: %w", i, ErrCorrupt)
		}
		d := DBInfo{ID: le.Uint32(b), Root: le.Uint64(b[4:])}
		nl := int(le.Uint16(b[12:]))
		if len(b) < 14+nl {
			return ci, fmt.Errorf("inmem: checkpoint body truncated in name %d: %w", i, ErrCorrupt)
		}
		d.Name = string(b[14 : 14+nl])
		ci.DBs = append(ci.DBs, d)
		b = b[14+nl:]
	}
	if len(b) != 0 {
		return ci, fmt.Errorf("inmem: %d trailing bytes after checkpoint body: %w", len(b), ErrCorrupt)
	}
	return ci, nil
}

// walk calls fn for every page run reachable from m, each exactly once (a page
// reached twice is corruption). With validate, every page is checked completely.
func (tx *Tx) walk(m meta, validate bool, fn func(pgno uint64, n int) error) error {
	if m.root == 0 {
		return nil // no catalog yet
	}
	seen := newPageBits(tx.npages)
	return tx.walkTree(m.root, 0, true, validate, &seen, fn)
}

func (tx *Tx) walkTree(pgno uint64, depth int, catalog, validate bool, seen *pageBits, fn func(uint64, int) error) error {
	if depth >= maxDepth {
		return corrupt(pgno, "tree deeper than the depth limit (cycle)")
	}
	if !seen.add(pgno) {
		return corrupt(pgno, "page referenced twice")
	}
	if tx.imported != nil && tx.imported.run(pgno) == 0 {
		return fmt.Errorf("inmem: import: page %d reachable from the snapshot is missing: %w", pgno, ErrCorrupt)
	}
	p, err := tx.page(pgno)
	if err != nil {
		return err
	}
	if validate {
		if err := validatePage(p, pgno, tx.ps); err != nil {
			return fmt.Errorf("inmem: %w: %w", ErrCorrupt, err)
		}
	}
	if err := fn(pgno, 1); err != nil {
		return err
	}
	for i := 0; i < pCount(p); i++ {
		raw, ok := entryAt(p, i)
		if !ok {
			return corrupt(pgno, "entry out of bounds")
		}
		if pType(p) == pageBranch {
			if err := tx.walkTree(binary.LittleEndian.Uint64(raw[2:]), depth+1, catalog, validate, seen, fn); err != nil {
				return err
			}
			continue
		}
		k, v, ovpg, vlen, ovfl := leafValue(raw)
		if catalog {
			id, root, ok := catEntry(v)
			if ovfl || !ok {
				return corrupt(pgno, fmt.Sprintf("catalog entry %q malformed", k))
			}
			_ = id
			var err error
			if tx.imported != nil {
				err = tx.imported.walkSketch(root, 0, seen, fn)
			} else {
				err = tx.walkTree(root, 0, false, validate, seen, fn)
			}
			if err != nil {
				return err
			}
			continue
		}
		if ovfl {
			if !seen.add(ovpg) {
				return corrupt(ovpg, "overflow run referenced twice")
			}
			if tx.imported != nil && tx.imported.run(ovpg) == 0 {
				return fmt.Errorf("inmem: import: overflow run %d reachable from the snapshot is missing: %w", ovpg, ErrCorrupt)
			}
			if _, err := tx.overflow(ovpg, vlen); err != nil {
				return err
			}
			if err := fn(ovpg, overflowPages(vlen, tx.ps)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Import builds an environment from a master's snapshot pages (internal init).
type Import struct {
	e       *Env
	m       meta
	done    bool
	inPlace bool        // into an existing, empty environment (ImportInPlace)
	pf      *prefaulter // maps the fresh region ahead of PutPage; stopped by Finish and Abort
	// cp writes the pages into the region; pages holds what Finish needs
	// of each to check the trees without reading them (pageCopier).
	cp    *pageCopier
	pages sketchTable
	refs  sketchRefs
}

// NewImport creates the importing environment's region (opt as for Create, with
// the master's PageSize, PoolSize and LogSize so page numbers fit) for the
// snapshot whose encoded meta is given.
func NewImport(opt Options, metaBytes []byte) (*Import, error) {
	m, err := decodeMeta(metaBytes)
	if err != nil {
		return nil, fmt.Errorf("inmem: import: %w", err)
	}
	if opt.PageSize == 0 {
		opt.PageSize = int(m.pageSize)
	}
	if opt.PageSize != int(m.pageSize) {
		return nil, fmt.Errorf("inmem: import: page size %d, snapshot's %d: %w", opt.PageSize, m.pageSize, ErrLayout)
	}
	// Lazy: the prefaulter maps the pages ahead of the import instead of
	// creation mapping the whole pool first (see prefaulter).
	e, err := createRegion(opt, true)
	if err != nil {
		return nil, err
	}
	return &Import{e: e, m: m, pf: startPrefault(e.lo, e.npages, e.reg.Populate),
		cp: newPageCopier(e.data, e.ps), pages: newSketchTable(e.npages)}, nil
}

// ImportInPlace starts an import of the snapshot whose encoded meta is
// given into e itself, which must be empty: no database was ever created
// in it (a board restarted with empty memory), so its snapshots refer to
// no tree page and the master's pages can land in its pool while views of
// the empty state, in this process or attached ones, go on. Writes to e
// fail with ErrImporting until Finish, which publishes the imported state
// as a commit would (a view sees the empty state or the whole import), or
// Abort, which leaves e empty. Unlike NewImport it needs no second region
// as large as the pool, and pays no first touch of fresh memory.
//
// It returns ErrNotInPlace when e cannot take the import: it holds
// databases, has another page size or a smaller pool than the snapshot
// needs, or its own transaction id is not behind the snapshot's.
func (e *Env) ImportInPlace(metaBytes []byte) (*Import, error) {
	m, err := decodeMeta(metaBytes)
	if err != nil {
		return nil, fmt.Errorf("inmem: import: %w", err)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.writable(); err != nil {
		return nil, fmt.Errorf("inmem: import in place: %w", err)
	}
	switch {
	case e.cur.root != 0 || e.pendHead < len(e.pending) || len(e.recheck) > 0:
		return nil, fmt.Errorf("inmem: import in place: the environment holds databases: %w", ErrNotInPlace)
	case int(m.pageSize) != e.ps:
		return nil, fmt.Errorf("inmem: import in place: page size %d, snapshot's %d: %w", e.ps, m.pageSize, ErrNotInPlace)
	case m.numPages > e.npages:
		return nil, fmt.Errorf("inmem: import in place: pool of %d pages, snapshot's %d: %w", e.npages, m.numPages, ErrNotInPlace)
	case m.txid <= e.cur.txid:
		// Readers take the newest meta. (Of the same parity, it is at
		// least two on, so the empty state Finish may republish one txid
		// on stays the older; see publishInPlace.)
		return nil, fmt.Errorf("inmem: import in place: snapshot txid %d not past this environment's %d: %w", m.txid, e.cur.txid, ErrNotInPlace)
	}
	e.importing = true
	return &Import{e: e, m: m, inPlace: true, cp: newPageCopier(e.data, e.ps), pages: newSketchTable(e.npages)}, nil
}

// InPlace reports whether the import writes into an existing environment
// (ImportInPlace) rather than a region of its own.
func (im *Import) InPlace() bool { return im.inPlace }

// Txid is the transaction id of the snapshot being imported.
func (im *Import) Txid() uint64 { return im.m.txid }

// Resume makes the import one of a later snapshot of the same master
// (whose encoded meta is given), keeping the pages stored so far: the
// master's checkpoint moved before the copy was whole, and the pages the
// two snapshots share need not travel again. Each page of the new
// snapshot is then either stored (PutPage) or kept (Keep): a page the
// master wrote no later than the earlier snapshot's txid (Txid) at a page
// number this import already holds it at. Finish checks the new
// snapshot's trees as usual.
func (im *Import) Resume(metaBytes []byte) error {
	if im.done {
		return fmt.Errorf("inmem: resume of a finished import: %w", ErrTxClosed)
	}
	m, err := decodeMeta(metaBytes)
	if err != nil {
		return fmt.Errorf("inmem: resume import: %w", err)
	}
	e := im.e
	switch {
	case int(m.pageSize) != e.ps || m.numPages > e.npages:
		return fmt.Errorf("inmem: resume import: snapshot of %d pages of %d bytes into %d of %d: %w", m.numPages, m.pageSize, e.npages, e.ps, ErrLayout)
	case m.txid < im.m.txid:
		return fmt.Errorf("inmem: resume import: snapshot txid %d older than the import's %d: %w", m.txid, im.m.txid, ErrLayout)
	}
	if err := im.cp.flush(); err != nil {
		return err
	}
	im.m = m
	return nil
}

// Keep takes page pgno of the snapshot as the one this import already
// stored there, from the snapshot it resumed (see Resume); ErrCorrupt if
// it stored none (the master judged from the txids, the importer checks
// it has the page).
func (im *Import) Keep(pgno uint64) error {
	if im.done {
		return fmt.Errorf("inmem: import already finished: %w", ErrTxClosed)
	}
	if pgno < im.e.lo || pgno >= im.e.npages || im.run(pgno) == 0 {
		return fmt.Errorf("inmem: import: page %d to keep was not stored: %w", pgno, ErrCorrupt)
	}
	return nil
}

// ExpectRuns tells the import how many page runs the master will send (the
// length of its Snapshot.PageList; a hint): its prefaulter then maps no
// further ahead than they can reach. Call it before the first PutPage.
func (im *Import) ExpectRuns(n int) {
	if n > 0 && !im.done {
		im.pf.expect(uint64(n), im.e.lo)
	}
}

// PutPage stores one exported unit (a page, or a whole overflow run, as
// Snapshot.ReadPage gives it) at the same page number as on the master,
// after checking it.
func (im *Import) PutPage(pgno uint64, data []byte) error {
	e := im.e
	if im.done {
		return fmt.Errorf("inmem: import already finished: %w", ErrTxClosed)
	}
	if len(data) == 0 {
		return fmt.Errorf("inmem: import page %d: no bytes; the master sends whole pages or their wire form: %w", pgno, ErrCorrupt)
	}
	if len(data)%e.ps != 0 {
		return im.putWirePage(pgno, data) // not whole pages: the wire form
	}
	n := len(data) / e.ps
	if pgno < e.lo || pgno >= e.npages || uint64(n) > e.npages-pgno {
		return fmt.Errorf("inmem: import page %d (+%d) outside the tree pages [%d,%d): %w", pgno, n, e.lo, e.npages, ErrLayout)
	}
	if err := validatePage(data, pgno, e.ps); err != nil {
		return fmt.Errorf("inmem: import: %w: %w", ErrCorrupt, err)
	}
	dst, err := im.cp.slot(pgno, n)
	if err != nil {
		return err
	}
	if dst != nil {
		copy(dst, data)
	} else if err := im.cp.write(pgno, data); err != nil {
		return err
	}
	im.sketch(pgno, data, n)
	im.pf.advance(pgno+uint64(n), uint64(n))
	return nil
}

// putWirePage stores a page or overflow run sent without the space that
// holds nothing (appendWirePage). It is expanded in place and then checked;
// a bad one is cleared again.
func (im *Import) putWirePage(pgno uint64, data []byte) error {
	e := im.e
	n := 1
	if len(data) >= pageHeaderSize && pType(data) == pageOverflow {
		if n = pOvPages(data); n < 1 {
			return fmt.Errorf("inmem: import page %d: value run of %d pages: %w", pgno, n, ErrCorrupt)
		}
	}
	if pgno < e.lo || pgno >= e.npages || uint64(n) > e.npages-pgno {
		return fmt.Errorf("inmem: import page %d (+%d) outside the tree pages [%d,%d): %w", pgno, n, e.lo, e.npages, ErrLayout)
	}
	p, err := im.cp.slot(pgno, n)
	if err != nil {
		return err
	}
	inBatch := p != nil
	if !inBatch {
		// A value run larger than a batch (rare): expanded in place, its
		// first touch paid here, rather than in a buffer as large as a
		// header may claim.
		off := pgno * uint64(e.ps)
		p = e.data[off : off+uint64(n*e.ps)]
	}
	undo := func() {
		if inBatch {
			im.cp.drop(n)
		} else {
			clear(p)
		}
	}
	if err := expandWirePage(p, data); err != nil {
		undo()
		return fmt.Errorf("inmem: import page %d: %w: %w", pgno, ErrCorrupt, err)
	}
	if err := validatePage(p, pgno, e.ps); err != nil {
		undo()
		return fmt.Errorf("inmem: import: %w: %w", ErrCorrupt, err)
	}
	im.sketch(pgno, p, n)
	im.pf.advance(pgno+uint64(n), uint64(n))
	return nil
}

// Finish checks that every page reachable from the snapshot arrived, rebuilds the
// allocator, publishes the meta and resets the log to the snapshot's LSN, ready
// for ApplyEncoded of the log after it.
func (im *Import) Finish() (*Env, error) {
	e := im.e
	if im.done {
		return nil, fmt.Errorf("inmem: import already finished: %w", ErrTxClosed)
	}
	im.pf.close()
	if err := im.cp.flush(); err != nil {
		return nil, err
	}
	tx := e.newTx(false)
	tx.imported = im
	var runs []run
	err := tx.walk(im.m, true, func(pg uint64, n int) error {
		if got := im.run(pg); got != n {
			return fmt.Errorf("inmem: import: page %d (%d pages) missing or of another size (%d): %w", pg, n, got, ErrCorrupt)
		}
		runs = append(runs, run{pg, n})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if im.inPlace {
		// Held from here: the walk above read only what PutPage
		// recorded, so Stat and the like did not wait for it.
		e.wmu.Lock()
		defer e.wmu.Unlock()
	}
	im.done = true
	e.alloc.Rebuild(func(yield func(uint64, int) bool) {
		e.reserved(yield)
		for _, r := range runs {
			if !yield(r.pgno, r.n) {
				return
			}
		}
	})
	if im.inPlace {
		e.importing = false
		e.idValid = false
		e.pending, e.pendHead, e.recheck = e.pending[:0], 0, e.recheck[:0]
		e.log.Reset(im.m.lsn)
		e.publishInPlace(im.m)
	} else {
		// The log and meta pages (below the trees), then what the
		// prefaulter did not reach: mapped in the background for the
		// commits to come, as a region created eagerly is. Mapping a
		// mapped page costs little.
		e.populating = startPopulate(e.reg.FirstDataPage(), e.npages, e.reg.Populate)
		e.log.Reset(im.m.lsn)
		e.publish(im.m)
	}
	e.gen.Store(im.m.gen)
	e.last = lastFromMeta(im.m)
	return e, nil
}

// publishInPlace publishes an imported meta over the empty state's. publish
// writes meta slot txid%2; were that the slot of the current meta, a reader
// reading it while it is rewritten would find it torn and the other slot
// stale or blank. The empty state is then first republished one txid on,
// into the other slot (m, of the same parity and newer, is newer still).
func (e *Env) publishInPlace(m meta) {
	if m.txid%2 == e.cur.txid%2 {
		empty := e.cur
		empty.txid++
		e.publish(empty)
	}
	e.publish(m)
}

// Abort discards the import: its region, or for an import in place the
// pages it wrote, which the empty environment never refers to.
func (im *Import) Abort() {
	if im.done {
		return
	}
	im.done = true
	im.pf.close()
	if im.inPlace {
		im.e.wmu.Lock()
		im.e.importing = false
		im.e.wmu.Unlock()
		return
	}
	im.e.destroy()
}
