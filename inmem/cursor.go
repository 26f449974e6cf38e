package inmem

import "encoding/binary"

// Cursor walks a database in key order. Keys and values alias the pool and are
// valid until the transaction ends. In a write transaction a cursor survives puts
// and deletes between its calls: it re-seeks from its last key when the tree
// changed. Methods return nil keys at either end (and on corruption, see Tx.Err).
type Cursor struct {
	tx    *Tx
	db    *DB
	root  uint64
	stack [maxDepth]pathElem
	depth int // 0: not positioned
	mods  uint64
	key   []byte // last key returned, kept in write transactions for re-seeking
	leaf  []byte // the leaf page under the cursor, for the in-leaf fast path
}

func (tx *Tx) cursorOn(root uint64) *Cursor {
	return &Cursor{tx: tx, root: root}
}

// noCatalog: a cursor on the catalog of an environment in which no
// database was ever created (root 0) has nothing to visit.
func (c *Cursor) noCatalog() bool { return c.db == nil && c.root == 0 }

func (c *Cursor) treeRoot() uint64 {
	if c.db != nil {
		return c.db.root
	}
	return c.root
}

func (c *Cursor) usable() bool {
	if c.tx.closed || (c.db != nil && c.db.dropped) || c.tx.err != nil || c.noCatalog() {
		c.depth = 0
		return false
	}
	return true
}

// First moves to the smallest key.
func (c *Cursor) First() (k, v []byte) {
	if !c.usable() {
		return nil, nil
	}
	c.depth = 0
	if !c.descendEdge(c.treeRoot(), false) {
		return nil, nil
	}
	return c.settle(true)
}

// Last moves to the largest key.
func (c *Cursor) Last() (k, v []byte) {
	if !c.usable() {
		return nil, nil
	}
	c.depth = 0
	if !c.descendEdge(c.treeRoot(), true) {
		return nil, nil
	}
	return c.settle(false)
}

// Seek moves to the first key >= k.
func (c *Cursor) Seek(k []byte) (key, v []byte) {
	if !c.usable() {
		return nil, nil
	}
	if !c.seek(k) {
		return nil, nil
	}
	return c.settle(true)
}

// fast steps within the current leaf, the common case of a scan: no page lookup.
func (c *Cursor) fast(delta int) (k, v []byte, ok bool) {
	tx := c.tx
	if c.depth == 0 || tx.closed || tx.err != nil || (c.db != nil && c.db.dropped) || (tx.writable && c.mods != tx.mods) {
		return nil, nil, false
	}
	top := &c.stack[c.depth-1]
	i := top.idx + delta
	if i < 0 || i >= pCount(c.leaf) {
		return nil, nil, false
	}
	// Inline leaf decoding (c.leaf is a leaf: settle checked), bounds checked;
	// anything unusual takes the slow path, which reports errors.
	p := c.leaf
	off := int(binary.LittleEndian.Uint16(p[pageHeaderSize+2*i:]))
	if off < pageHeaderSize+slotSize*pCount(p) || off+leafEntryHdr > len(p) || p[off] != 0 {
		return nil, nil, false
	}
	ks := off + leafEntryHdr
	vs := ks + int(binary.LittleEndian.Uint16(p[off+2:]))
	ve := vs + int(binary.LittleEndian.Uint32(p[off+4:]))
	if ve > len(p) || ve < vs {
		return nil, nil, false
	}
	k, v = p[ks:vs:vs], p[vs:ve:ve]
	top.idx = i
	if tx.writable {
		c.key = append(c.key[:0], k...)
	}
	return k, v, true
}

// Next moves to the next key.
func (c *Cursor) Next() (k, v []byte) {
	if k, v, ok := c.fast(1); ok {
		return k, v
	}
	if !c.usable() || c.depth == 0 {
		return nil, nil
	}
	if c.tx.writable && c.mods != c.tx.mods {
		exact := c.seekExact(c.key)
		if c.depth == 0 {
			return nil, nil
		}
		if !exact {
			return c.settle(true)
		}
	}
	if !c.step(true) {
		return nil, nil
	}
	return c.settle(true)
}

// Prev moves to the previous key.
func (c *Cursor) Prev() (k, v []byte) {
	if k, v, ok := c.fast(-1); ok {
		return k, v
	}
	if !c.usable() || c.depth == 0 {
		return nil, nil
	}
	if c.tx.writable && c.mods != c.tx.mods {
		c.seekExact(c.key)
		if c.depth == 0 {
			return nil, nil
		}
	}
	if !c.step(false) {
		return nil, nil
	}
	return c.settle(false)
}

func (c *Cursor) seekExact(k []byte) bool {
	if !c.seek(k) {
		return false
	}
	top := c.stack[c.depth-1]
	p, _ := c.tx.page(top.pgno)
	if top.idx >= pCount(p) {
		return false
	}
	ck, _ := keyAt(p, top.idx)
	return string(ck) == string(k)
}

// seek positions at the first entry >= k (possibly one past a leaf's end).
func (c *Cursor) seek(k []byte) bool {
	tx := c.tx
	c.depth = 0
	pgno := c.treeRoot()
	for {
		if c.depth >= maxDepth {
			tx.setErr(corrupt(pgno, "tree deeper than the depth limit (cycle)"))
			return false
		}
		p, err := tx.page(pgno)
		if err != nil {
			tx.setErr(err)
			c.depth = 0
			return false
		}
		if pType(p) == pageLeaf {
			i, _, ok := search(p, k)
			if !ok {
				tx.setErr(corrupt(pgno, "entry out of bounds"))
				c.depth = 0
				return false
			}
			c.stack[c.depth] = pathElem{pgno, i}
			c.depth++
			return true
		}
		i, ok := branchIndex(p, k)
		var child uint64
		if ok {
			child, ok = childAt(p, i)
		}
		if !ok {
			tx.setErr(corrupt(pgno, "entry out of bounds"))
			c.depth = 0
			return false
		}
		c.stack[c.depth] = pathElem{pgno, i}
		c.depth++
		pgno = child
	}
}

// descendEdge pushes the leftmost (or rightmost) path below pgno.
func (c *Cursor) descendEdge(pgno uint64, right bool) bool {
	tx := c.tx
	for {
		if c.depth >= maxDepth {
			tx.setErr(corrupt(pgno, "tree deeper than the depth limit (cycle)"))
			c.depth = 0
			return false
		}
		p, err := tx.page(pgno)
		if err != nil {
			tx.setErr(err)
			c.depth = 0
			return false
		}
		i := 0
		if right {
			i = pCount(p) - 1
			if pType(p) == pageLeaf {
				i = max(i, 0)
			}
		}
		c.stack[c.depth] = pathElem{pgno, i}
		c.depth++
		if pType(p) == pageLeaf {
			return true
		}
		if i < 0 {
			tx.setErr(corrupt(pgno, "branch page without children"))
			c.depth = 0
			return false
		}
		child, ok := childAt(p, i)
		if !ok {
			tx.setErr(corrupt(pgno, "entry out of bounds"))
			c.depth = 0
			return false
		}
		pgno = child
	}
}

// step moves one entry forward or backward across leaves.
func (c *Cursor) step(fwd bool) bool {
	tx := c.tx
	for level := c.depth - 1; level >= 0; level-- {
		p, err := tx.page(c.stack[level].pgno)
		if err != nil {
			tx.setErr(err)
			c.depth = 0
			return false
		}
		i := c.stack[level].idx
		if fwd {
			i++
		} else {
			i--
		}
		if i < 0 || i >= pCount(p) {
			continue
		}
		c.stack[level].idx = i
		c.depth = level + 1
		if pType(p) == pageLeaf {
			return true
		}
		child, ok := childAt(p, i)
		if !ok {
			tx.setErr(corrupt(c.stack[level].pgno, "entry out of bounds"))
			c.depth = 0
			return false
		}
		return c.descendEdge(child, !fwd)
	}
	c.depth = 0
	return false
}

// settle returns the entry under the cursor, stepping over empty positions (past
// a leaf's end after a seek, or an empty root leaf).
func (c *Cursor) settle(fwd bool) ([]byte, []byte) {
	tx := c.tx
	for c.depth > 0 {
		top := c.stack[c.depth-1]
		p, err := tx.page(top.pgno)
		if err != nil {
			tx.setErr(err)
			break
		}
		if top.idx < 0 || top.idx >= pCount(p) {
			if !c.step(fwd) {
				break
			}
			continue
		}
		raw, ok := entryAt(p, top.idx)
		if !ok || pType(p) != pageLeaf {
			tx.setErr(corrupt(top.pgno, "entry out of bounds"))
			break
		}
		k, v, err := tx.value(raw)
		if err != nil {
			tx.setErr(err)
			break
		}
		if tx.writable {
			c.key = append(c.key[:0], k...)
			c.mods = tx.mods
		}
		c.leaf = p
		return k, v
	}
	c.depth = 0
	return nil, nil
}
