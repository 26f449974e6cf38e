package inmem

import (
	"encoding/binary"
	"fmt"
)

// pathElem is one level of a root-to-leaf descent: the page and the entry index
// taken (child index in a branch, insert position in the leaf).
type pathElem struct {
	pgno uint64
	idx  int
}

type run struct {
	pgno uint64
	n    int
}

// corrupt builds the error for a page that failed a check.
func corrupt(pgno uint64, what string) error {
	return fmt.Errorf("page %d: %s: %w", pgno, what, ErrCorrupt)
}

// rawPage returns page pgno without content checks (callers check).
func (tx *Tx) rawPage(pgno uint64) ([]byte, error) {
	return treePage(tx.data, tx.ps, tx.lo, tx.npages, pgno)
}

// treePage returns page pgno of a pool whose tree pages are [lo, npages).
func treePage(data []byte, ps int, lo, npages, pgno uint64) ([]byte, error) {
	if pgno < lo || pgno >= npages {
		return nil, corrupt(pgno, fmt.Sprintf("page number outside the tree area [%d,%d)", lo, npages))
	}
	off := pgno * uint64(ps)
	return data[off : off+uint64(ps) : off+uint64(ps)], nil
}

// page returns branch or leaf page pgno with its header checked.
func (tx *Tx) page(pgno uint64) ([]byte, error) {
	p, err := tx.rawPage(pgno)
	if err != nil {
		return nil, err
	}
	if t := pType(p); (t != pageLeaf && t != pageBranch) || pPgno(p) != pgno ||
		pageHeaderSize+slotSize*pCount(p) > len(p) {
		return nil, corrupt(pgno, fmt.Sprintf("not a tree page (type %d, header pgno %d, %d entries)", t, pPgno(p), pCount(p)))
	}
	return p, nil
}

// overflow returns the vlen value bytes of the overflow run at pgno.
func (tx *Tx) overflow(pgno uint64, vlen int) ([]byte, error) {
	p, err := tx.rawPage(pgno)
	if err != nil {
		return nil, err
	}
	n := pOvPages(p)
	if pType(p) != pageOverflow || pPgno(p) != pgno || n < 1 || uint64(n) > tx.npages-pgno ||
		pUpper(p) != vlen || vlen > n*tx.ps-pageHeaderSize {
		return nil, corrupt(pgno, fmt.Sprintf("bad overflow run (type %d, %d pages, value %d/%d bytes)", pType(p), n, pUpper(p), vlen))
	}
	off := pgno*uint64(tx.ps) + pageHeaderSize
	return tx.data[off : off+uint64(vlen) : off+uint64(vlen)], nil
}

// value decodes a raw leaf entry into key and value, following overflow runs.
func (tx *Tx) value(raw []byte) (k, v []byte, err error) {
	k, v, ovpg, vlen, ovfl := leafValue(raw)
	if ovfl {
		v, err = tx.overflow(ovpg, vlen)
	}
	return k, v, err
}

// get looks k up in the tree at root.
func (tx *Tx) get(root uint64, k []byte) ([]byte, error) {
	pgno := root
	for depth := 0; ; depth++ {
		if depth >= maxDepth {
			return nil, corrupt(root, "tree deeper than the depth limit (cycle)")
		}
		p, err := tx.page(pgno)
		if err != nil {
			return nil, err
		}
		if pType(p) == pageLeaf {
			i, exact, ok := search(p, k)
			if !ok {
				return nil, corrupt(pgno, "entry out of bounds")
			}
			if !exact {
				return nil, nil
			}
			raw, ok := entryAt(p, i)
			if !ok {
				return nil, corrupt(pgno, "entry out of bounds")
			}
			_, v, err := tx.value(raw)
			return v, err
		}
		i, ok := branchIndex(p, k)
		if !ok {
			return nil, corrupt(pgno, "entry out of bounds")
		}
		if pgno, ok = childAt(p, i); !ok {
			return nil, corrupt(pgno, "entry out of bounds")
		}
	}
}

// descend fills the writer's path (Env.wpath) from root to the leaf for k
// and reports whether the leaf holds k at wpath[depth-1].idx.
func (tx *Tx) descend(root uint64, k []byte) (depth int, exact bool, err error) {
	pgno := root
	for depth = 0; ; depth++ {
		if depth >= maxDepth {
			return 0, false, corrupt(root, "tree deeper than the depth limit (cycle)")
		}
		p, err := tx.page(pgno)
		if err != nil {
			return 0, false, err
		}
		if pType(p) == pageLeaf {
			i, ex, ok := search(p, k)
			if !ok {
				return 0, false, corrupt(pgno, "entry out of bounds")
			}
			tx.env.wpath[depth] = pathElem{pgno, i}
			return depth + 1, ex, nil
		}
		i, ok := branchIndex(p, k)
		if !ok {
			return 0, false, corrupt(pgno, "entry out of bounds")
		}
		tx.env.wpath[depth] = pathElem{pgno, i}
		if pgno, ok = childAt(p, i); !ok {
			return 0, false, corrupt(pgno, "entry out of bounds")
		}
	}
}

// allocRun takes n contiguous pages for this transaction.
func (tx *Tx) allocRun(n int) (uint64, []byte, error) {
	pgno, err := tx.env.alloc.Alloc(n)
	if err != nil {
		return 0, nil, fmt.Errorf("inmem: allocating %d pages%s: %w", n, tx.env.holder(), err)
	}
	if pgno < tx.lo || pgno+uint64(n) > tx.npages {
		return 0, nil, fmt.Errorf("inmem: allocator returned pages [%d,+%d) outside the tree area: %w", pgno, n, ErrCorrupt)
	}
	tx.env.allocated = append(tx.env.allocated, run{pgno, n})
	off := pgno * uint64(tx.ps)
	return pgno, tx.data[off : off+uint64(n*tx.ps) : off+uint64(n*tx.ps)], nil
}

// freeRun schedules a run for release at commit (dropped on abort: the pages stay
// live in the committed tree).
func (tx *Tx) freeRun(pgno uint64, n int) {
	tx.env.freed = append(tx.env.freed, run{pgno, n})
}

// newPage allocates an empty tree page owned by this transaction.
func (tx *Tx) newPage(typ uint8) (uint64, []byte, error) {
	pgno, p, err := tx.allocRun(1)
	if err != nil {
		return 0, nil, err
	}
	initPage(p, typ, tx.meta.txid, pgno)
	return pgno, p, nil
}

// dirty returns a writable copy of page pgno: the page itself when this
// transaction already owns it, else a validated copy on a new page (the old one is
// freed at commit). This is the copy-once-per-transaction rule.
func (tx *Tx) dirty(pgno uint64) (uint64, []byte, error) {
	p, err := tx.page(pgno)
	if err != nil {
		return 0, nil, err
	}
	if pTxid(p) == tx.meta.txid {
		return pgno, p, nil
	}
	np, q, err := tx.allocRun(1)
	if err != nil {
		return 0, nil, err
	}
	// A checked copy: every entry's bounds are verified on the way (write
	// operations rely on them), and the holes of deletes are packed away.
	initPage(q, pType(p), tx.meta.txid, np)
	if !rebuildChecked(q, p) {
		return 0, nil, corrupt(pgno, "entries out of bounds (page damaged)")
	}
	tx.freeRun(pgno, 1)
	return np, q, nil
}

// wpage returns a page this transaction already made dirty.
func (tx *Tx) wpage(pgno uint64) []byte {
	off := pgno * uint64(tx.ps)
	return tx.data[off : off+uint64(tx.ps) : off+uint64(tx.ps)]
}

// dirtyPath makes path[0:depth] writable top-down, relinking parents and root.
func (tx *Tx) dirtyPath(root *uint64, depth int) error {
	for l := 0; l < depth; l++ {
		old := tx.env.wpath[l].pgno
		np, _, err := tx.dirty(old)
		if err != nil {
			return err
		}
		if np != old {
			if l == 0 {
				*root = np
			} else {
				setChild(tx.wpage(tx.env.wpath[l-1].pgno), tx.env.wpath[l-1].idx, np)
			}
			tx.env.wpath[l].pgno = np
		}
	}
	return nil
}

// usable is the entry space of a page.
func (tx *Tx) usable() int { return tx.ps - pageHeaderSize }

// treePut inserts or replaces k in the tree at *root.
func (tx *Tx) treePut(root *uint64, k, v []byte) error {
	depth, exact, err := tx.descend(*root, k)
	if err != nil {
		return err
	}
	if err := tx.dirtyPath(root, depth); err != nil {
		return err
	}
	leaf := tx.wpage(tx.env.wpath[depth-1].pgno)
	idx := tx.env.wpath[depth-1].idx
	var old []byte
	if exact {
		old, _ = entryAt(leaf, idx)
	}
	// Small values live in the leaf; larger ones on an overflow run so every leaf
	// entry stays under a quarter page and a two-way split always succeeds.
	e := tx.env
	if leafEntryHdr+len(k)+len(v)+slotSize <= tx.usable()/4 {
		if old != nil && old[0]&leafFlagOverflow == 0 && len(old) == leafEntryHdr+len(k)+len(v) {
			copy(old[leafEntryHdr+len(k):], v) // same size: overwrite in place
			return nil
		}
		e.leafBuf = encodeLeafEntry(e.leafBuf[:0], k, v, 0, len(v), false)
	} else {
		n := overflowPages(len(v), tx.ps)
		pg, run, err := tx.allocRun(n)
		if err != nil {
			return err
		}
		initOverflow(run, tx.meta.txid, pg, n, len(v))
		copy(run[pageHeaderSize:], v)
		e.leafBuf = encodeLeafEntry(e.leafBuf[:0], k, nil, pg, len(v), true)
	}
	if old != nil {
		if _, _, ovpg, vlen, ovfl := leafValue(old); ovfl {
			tx.freeRun(ovpg, overflowPages(vlen, tx.ps))
		}
		deleteAt(leaf, idx)
	}
	return tx.insertAt(root, depth-1, idx, e.leafBuf)
}

// insertAt inserts raw as entry idx of the page at path level, splitting upward.
func (tx *Tx) insertAt(root *uint64, level, idx int, raw []byte) error {
	e := tx.env
	for {
		pgno := tx.env.wpath[level].pgno
		p := tx.wpage(pgno)
		if insertRaw(p, idx, raw, e.scratch) {
			return nil
		}
		qpgno, q, err := tx.newPage(pType(p))
		if err != nil {
			return err
		}
		tx.split(p, q, idx, raw)
		sep, _ := keyAt(q, 0)
		if level == 0 {
			rpgno, r, err := tx.newPage(pageBranch)
			if err != nil {
				return err
			}
			e.branchBuf = encodeBranchEntry(e.branchBuf[:0], nil, pgno)
			appendRaw(r, e.branchBuf)
			e.branchBuf = encodeBranchEntry(e.branchBuf[:0], sep, qpgno)
			appendRaw(r, e.branchBuf)
			*root = rpgno
			return nil
		}
		e.branchBuf = encodeBranchEntry(e.branchBuf[:0], sep, qpgno)
		raw = e.branchBuf
		level--
		idx = tx.env.wpath[level].idx + 1
	}
}

// split distributes the entries of p plus raw (as entry idx) over p and the empty
// page q. Appending at the end moves only the new entry right, so sequential
// inserts fill pages completely; otherwise the split balances bytes.
func (tx *Tx) split(p, q []byte, idx int, raw []byte) {
	s := tx.env.scratch[:len(p)]
	copy(s, p)
	n := pCount(s)
	ent := func(j int) []byte {
		switch {
		case j < idx:
			r, _ := entryAt(s, j)
			return r
		case j == idx:
			return raw
		default:
			r, _ := entryAt(s, j-1)
			return r
		}
	}
	m := n
	if idx != n {
		total := 0
		for j := 0; j <= n; j++ {
			total += len(ent(j)) + slotSize
		}
		best, left := total, 0
		for j := 0; j < n; j++ {
			left += len(ent(j)) + slotSize
			worst := max(left, total-left)
			if worst < best {
				best, m = worst, j+1
			}
		}
	}
	initPage(p, pType(s), pTxid(s), pPgno(s))
	for j := 0; j <= n; j++ {
		if j < m {
			appendRaw(p, ent(j))
		} else {
			appendRaw(q, ent(j))
		}
	}
}

// treeDelete removes k from the tree at *root; it reports whether k was present.
func (tx *Tx) treeDelete(root *uint64, k []byte) (bool, error) {
	depth, exact, err := tx.descend(*root, k)
	if err != nil || !exact {
		return false, err
	}
	if err := tx.dirtyPath(root, depth); err != nil {
		return false, err
	}
	leaf := tx.wpage(tx.env.wpath[depth-1].pgno)
	raw, _ := entryAt(leaf, tx.env.wpath[depth-1].idx)
	if _, _, ovpg, vlen, ovfl := leafValue(raw); ovfl {
		tx.freeRun(ovpg, overflowPages(vlen, tx.ps))
	}
	deleteAt(leaf, tx.env.wpath[depth-1].idx)
	return true, tx.rebalance(root, depth)
}

// rebalance merges underfull pages on the path with a sibling when both fit in
// one page, then collapses single-child roots. Pages that cannot merge stay
// underfull (never empty: an empty page always fits into its sibling).
func (tx *Tx) rebalance(root *uint64, depth int) error {
	e := tx.env
	for level := depth - 1; level > 0; level-- {
		p := tx.wpage(tx.env.wpath[level].pgno)
		if pUsed(p) >= tx.usable()/4 {
			break
		}
		parent := tx.wpage(tx.env.wpath[level-1].pgno)
		pi := tx.env.wpath[level-1].idx
		if pCount(parent) < 2 {
			continue
		}
		li, ri := pi-1, pi
		if pi == 0 {
			li, ri = 0, 1
		}
		lpg, _ := childAt(parent, li)
		rpg, _ := childAt(parent, ri)
		lp, err := tx.page(lpg)
		if err != nil {
			return err
		}
		rp, err := tx.page(rpg)
		if err != nil {
			return err
		}
		sep, _ := keyAt(parent, ri)
		extra := 0
		if pType(rp) == pageBranch && pCount(rp) > 0 {
			k0, _ := keyAt(rp, 0)
			extra = len(sep) - len(k0)
		}
		if pUsed(lp)+pUsed(rp)+extra > tx.usable() {
			break
		}
		nl, lw, err := tx.dirty(lpg)
		if err != nil {
			return err
		}
		setChild(parent, li, nl)
		// The right page is read only; if this transaction owned it, it is freed
		// like any other (released after commit).
		if pUsed(lw)+pUsed(rp)+extra > 0 {
			compact(lw, e.scratch)
		}
		for i := 0; i < pCount(rp); i++ {
			r, ok := entryAt(rp, i)
			if !ok {
				return corrupt(rpg, "entry out of bounds")
			}
			if i == 0 && pType(rp) == pageBranch {
				// The first key of a branch page is only a lower bound; in the
				// merged page it must be the parent's separator.
				e.branchBuf = encodeBranchEntry(e.branchBuf[:0], sep, binary.LittleEndian.Uint64(r[2:]))
				r = e.branchBuf
			}
			appendRaw(lw, r)
		}
		tx.freeRun(rpg, 1)
		deleteAt(parent, ri)
	}
	// A branch root with one child is replaced by the child.
	for {
		p := tx.wpage(*root)
		if pType(p) != pageBranch || pCount(p) != 1 {
			return nil
		}
		child, _ := childAt(p, 0)
		if _, err := tx.page(child); err != nil {
			return err
		}
		tx.freeRun(*root, 1)
		*root = child
	}
}

// freeTree schedules every page of the tree at root (and its overflow runs) for
// release; used by DropDB.
func (tx *Tx) freeTree(pgno uint64, depth int) error {
	if depth >= maxDepth {
		return corrupt(pgno, "tree deeper than the depth limit (cycle)")
	}
	p, err := tx.page(pgno)
	if err != nil {
		return err
	}
	for i := 0; i < pCount(p); i++ {
		raw, ok := entryAt(p, i)
		if !ok {
			return corrupt(pgno, "entry out of bounds")
		}
		if pType(p) == pageBranch {
			if err := tx.freeTree(binary.LittleEndian.Uint64(raw[2:]), depth+1); err != nil {
				return err
			}
		} else if _, _, ovpg, vlen, ovfl := leafValue(raw); ovfl {
			tx.freeRun(ovpg, overflowPages(vlen, tx.ps))
		}
	}
	tx.freeRun(pgno, 1)
	return nil
}
