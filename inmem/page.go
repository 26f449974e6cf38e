package inmem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Page layout. Every tree page starts with a 32-byte header:
//
//	0 type u8 | 1 flags u8 | 2 n u16 | 4 upper u32 | 8 txid u64 | 16 pgno u64 | 24 used u32 | 28 ovpages u32
//
// Branch and leaf pages are slotted: n little-endian u16 offsets follow the header
// in key order, entries are packed from the end of the page down to upper. Deleting
// an entry leaves a hole that is reclaimed by compaction when an insert needs it;
// used counts entry bytes plus their slots so the free space is known without a scan.
//
// Leaf entry:   flags u8 | 0 u8 | klen u16 | vlen u32 | key | value (or overflow pgno u64)
// Branch entry: klen u16 | child u64 | key
//
// An overflow run is ovpages contiguous pages: the header (type overflow) then the
// value bytes, so a large value is returned as one slice into the pool (zero copy).
//
// txid is the transaction that wrote the page: a write transaction modifies a page
// in place only when txid equals its own id (the page is already its private copy),
// which is the dirty-page map of LMDB without a map.
const (
	pageHeaderSize = 32
	leafEntryHdr   = 8
	branchEntryHdr = 10
	slotSize       = 2

	pageBranch   = 1
	pageLeaf     = 2
	pageOverflow = 3

	leafFlagOverflow = 1

	// maxDepth bounds tree height (far above what a pool can hold) so cursors and
	// paths use fixed arrays and a cyclic corrupt tree cannot recurse forever.
	maxDepth = 24

	minPageSize = 1024
	maxPageSize = 65536
)

// errPage is the internal cause of page decoding failures; public callers see it
// wrapped in ErrCorrupt with the page number.
var errPage = errors.New("malformed page")

func pType(p []byte) uint8     { return p[0] }
func pCount(p []byte) int      { return int(binary.LittleEndian.Uint16(p[2:])) }
func pUpper(p []byte) int      { return int(binary.LittleEndian.Uint32(p[4:])) }
func pTxid(p []byte) uint64    { return binary.LittleEndian.Uint64(p[8:]) }
func pPgno(p []byte) uint64    { return binary.LittleEndian.Uint64(p[16:]) }
func pUsed(p []byte) int       { return int(binary.LittleEndian.Uint32(p[24:])) }
func pOvPages(p []byte) int    { return int(binary.LittleEndian.Uint32(p[28:])) }
func setCount(p []byte, n int) { binary.LittleEndian.PutUint16(p[2:], uint16(n)) }
func setUpper(p []byte, u int) { binary.LittleEndian.PutUint32(p[4:], uint32(u)) }
func setUsed(p []byte, u int)  { binary.LittleEndian.PutUint32(p[24:], uint32(u)) }
func slot(p []byte, i int) int { return int(binary.LittleEndian.Uint16(p[pageHeaderSize+2*i:])) }
func setSlot(p []byte, i, off int) {
	binary.LittleEndian.PutUint16(p[pageHeaderSize+2*i:], uint16(off))
}

// initPage writes an empty page header.
func initPage(p []byte, typ uint8, txid, pgno uint64) {
	clear(p[:pageHeaderSize])
	p[0] = typ
	setUpper(p, len(p))
	binary.LittleEndian.PutUint64(p[8:], txid)
	binary.LittleEndian.PutUint64(p[16:], pgno)
}

// initOverflow writes the header of an overflow run of n pages holding vlen bytes.
func initOverflow(p []byte, txid, pgno uint64, n int, vlen int) {
	clear(p[:pageHeaderSize])
	p[0] = pageOverflow
	binary.LittleEndian.PutUint32(p[4:], uint32(vlen))
	binary.LittleEndian.PutUint64(p[8:], txid)
	binary.LittleEndian.PutUint64(p[16:], pgno)
	binary.LittleEndian.PutUint32(p[28:], uint32(n))
}

// entryAt returns the raw bytes of entry i with every offset and length checked
// against the page, so a corrupt page yields ok=false rather than a panic.
func entryAt(p []byte, i int) (raw []byte, ok bool) {
	off := slot(p, i)
	n := pCount(p)
	if off < pageHeaderSize+slotSize*n || off >= len(p) {
		return nil, false
	}
	var size int
	switch pType(p) {
	case pageLeaf:
		if off+leafEntryHdr > len(p) {
			return nil, false
		}
		klen := int(binary.LittleEndian.Uint16(p[off+2:]))
		if p[off]&leafFlagOverflow != 0 {
			size = leafEntryHdr + klen + 8
		} else {
			size = leafEntryHdr + klen + int(binary.LittleEndian.Uint32(p[off+4:]))
		}
	case pageBranch:
		if off+branchEntryHdr > len(p) {
			return nil, false
		}
		size = branchEntryHdr + int(binary.LittleEndian.Uint16(p[off:]))
	default:
		return nil, false
	}
	if size > len(p)-off {
		return nil, false
	}
	return p[off : off+size], true
}

// keyAt is entryAt reduced to the key, the hot path of searches.
func keyAt(p []byte, i int) ([]byte, bool) {
	raw, ok := entryAt(p, i)
	if !ok {
		return nil, false
	}
	if pType(p) == pageLeaf {
		return raw[leafEntryHdr : leafEntryHdr+int(binary.LittleEndian.Uint16(raw[2:]))], true
	}
	return raw[branchEntryHdr:], true
}

// rawKey returns the key of a raw entry of a page of type typ.
func rawKey(typ uint8, raw []byte) []byte {
	if typ == pageLeaf {
		return raw[leafEntryHdr : leafEntryHdr+int(binary.LittleEndian.Uint16(raw[2:]))]
	}
	return raw[branchEntryHdr:]
}

// childAt returns the child page number of branch entry i.
func childAt(p []byte, i int) (uint64, bool) {
	raw, ok := entryAt(p, i)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint64(raw[2:]), true
}

func setChild(p []byte, i int, child uint64) {
	binary.LittleEndian.PutUint64(p[slot(p, i)+2:], child)
}

// leafValue splits a raw leaf entry into key and value; for an overflow value it
// returns the run's page number and the value length instead.
func leafValue(raw []byte) (k, v []byte, ovpg uint64, vlen int, ovfl bool) {
	klen := int(binary.LittleEndian.Uint16(raw[2:]))
	k = raw[leafEntryHdr : leafEntryHdr+klen]
	vlen = int(binary.LittleEndian.Uint32(raw[4:]))
	if raw[0]&leafFlagOverflow != 0 {
		return k, nil, binary.LittleEndian.Uint64(raw[leafEntryHdr+klen:]), vlen, true
	}
	return k, raw[leafEntryHdr+klen:], 0, vlen, false
}

// encodeLeafEntry appends a leaf entry to dst.
func encodeLeafEntry(dst, k, v []byte, ovpg uint64, vlen int, ovfl bool) []byte {
	var h [leafEntryHdr]byte
	if ovfl {
		h[0] = leafFlagOverflow
	}
	binary.LittleEndian.PutUint16(h[2:], uint16(len(k)))
	binary.LittleEndian.PutUint32(h[4:], uint32(vlen))
	dst = append(dst, h[:]...)
	dst = append(dst, k...)
	if ovfl {
		return binary.LittleEndian.AppendUint64(dst, ovpg)
	}
	return append(dst, v...)
}

// encodeBranchEntry appends a branch entry to dst.
func encodeBranchEntry(dst, k []byte, child uint64) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(k)))
	dst = binary.LittleEndian.AppendUint64(dst, child)
	return append(dst, k...)
}

// search returns the index of the first entry with key >= k and whether it is
// equal. It reads only slots and keys (every offset checked against the page), the
// hot path of Get and Seek.
func search(p []byte, k []byte) (idx int, exact bool, ok bool) {
	n := pCount(p)
	hdr, koff := branchEntryHdr, 0
	if pType(p) == pageLeaf {
		hdr, koff = leafEntryHdr, 2
	}
	minOff := pageHeaderSize + slotSize*n
	if minOff > len(p) {
		return 0, false, false
	}
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		off := int(binary.LittleEndian.Uint16(p[pageHeaderSize+2*m:]))
		if off < minOff || off+hdr > len(p) {
			return 0, false, false
		}
		ks := off + hdr
		ke := ks + int(binary.LittleEndian.Uint16(p[off+koff:]))
		if ke > len(p) {
			return 0, false, false
		}
		switch c := bytes.Compare(p[ks:ke], k); {
		case c < 0:
			lo = m + 1
		case c > 0:
			hi = m
		default:
			return m, true, true
		}
	}
	return lo, false, true
}

// branchIndex returns the child index to descend into for key k: the last entry
// whose key is <= k, or 0 when k is below every separator.
func branchIndex(p []byte, k []byte) (int, bool) {
	i, exact, ok := search(p, k)
	if !ok {
		return 0, false
	}
	if exact {
		return i, true
	}
	if i > 0 {
		i--
	}
	return i, true
}

// freeSpace is what an insert could use after compaction.
func freeSpace(p []byte) int { return len(p) - pageHeaderSize - pUsed(p) }

// insertRaw puts raw as entry i, compacting through scratch when the free bytes
// are fragmented. It reports false when the page is too full.
func insertRaw(p []byte, i int, raw []byte, scratch []byte) bool {
	need := len(raw) + slotSize
	if need > freeSpace(p) {
		return false
	}
	n := pCount(p)
	if pUpper(p)-(pageHeaderSize+slotSize*n) < need {
		compact(p, scratch)
	}
	up := pUpper(p) - len(raw)
	copy(p[up:], raw)
	s := pageHeaderSize + slotSize*i
	copy(p[s+slotSize:pageHeaderSize+slotSize*(n+1)], p[s:pageHeaderSize+slotSize*n])
	setSlot(p, i, up)
	setCount(p, n+1)
	setUpper(p, up)
	setUsed(p, pUsed(p)+need)
	return true
}

// appendRaw adds raw after the last entry of a page being rebuilt (always fits:
// callers size the pages first).
func appendRaw(p []byte, raw []byte) {
	n := pCount(p)
	up := pUpper(p) - len(raw)
	copy(p[up:], raw)
	setSlot(p, n, up)
	setCount(p, n+1)
	setUpper(p, up)
	setUsed(p, pUsed(p)+len(raw)+slotSize)
}

// deleteAt removes entry i. Space is reclaimed at once only when the entry sits at
// upper; otherwise it becomes a hole for compaction.
func deleteAt(p []byte, i int) {
	raw, _ := entryAt(p, i)
	n := pCount(p)
	off := slot(p, i)
	s := pageHeaderSize + slotSize*i
	copy(p[s:], p[s+slotSize:pageHeaderSize+slotSize*n])
	setCount(p, n-1)
	setUsed(p, pUsed(p)-len(raw)-slotSize)
	if off == pUpper(p) {
		setUpper(p, off+len(raw))
	}
	if n == 1 {
		setUpper(p, len(p))
	}
}

// compact repacks the entries of p so all free bytes are contiguous.
func compact(p []byte, scratch []byte) {
	s := scratch[:len(p)]
	copy(s, p)
	n := pCount(p)
	setCount(p, 0)
	setUpper(p, len(p))
	setUsed(p, 0)
	for i := 0; i < n; i++ {
		raw, _ := entryAt(s, i)
		appendRaw(p, raw)
	}
}

// minWireGap is the least unused space appendWirePage leaves out: below it
// a page goes whole, the same on the wire either way.
const minWireGap = 64

// wireSpan reads from the header of p (a page, an overflow run, or the wire
// form of one) where the space that holds nothing lies: [head, up) of a
// branch or leaf page (between its slots and its entries), [head, end) of
// an overflow run (past its value; up is -1). ok is false for other page
// types.
func wireSpan(p []byte) (head, up int, ok bool) {
	switch pType(p) {
	case pageLeaf, pageBranch:
		return pageHeaderSize + slotSize*pCount(p), pUpper(p), true
	case pageOverflow:
		return pageHeaderSize + pUpper(p), -1, true // pUpper: the value's length
	}
	return 0, 0, false
}

// appendWirePage appends p, a page or an overflow run, to dst in the form
// an internal init sends it: without the space that holds nothing (the free
// space between a branch or leaf page's slots and its entries, the tail of
// an overflow run past its value), which is half of a page that split and
// has not filled since, and most of the last page of a value. The bytes
// left out mean nothing; expandWirePage zeroes them.
func appendWirePage(dst, p []byte) []byte {
	head, up, ok := wireSpan(p)
	if !ok {
		return append(dst, p...)
	}
	if up < 0 {
		up = len(p)
	}
	short := head + len(p) - up
	if head > up || up > len(p) || up-head < minWireGap || short%wirePageSize(p) == 0 {
		return append(dst, p...)
	}
	dst = append(dst, p[:head]...)
	return append(dst, p[up:]...)
}

// wirePageSize is the page size p, a page or an overflow run, implies: the
// receiver tells a wire form from whole pages by a length that is not a
// multiple of it.
func wirePageSize(p []byte) int {
	if pType(p) == pageOverflow && pOvPages(p) > 1 {
		return max(1, len(p)/pOvPages(p))
	}
	return max(1, len(p))
}

// expandWirePage fills p, a page or an overflow run, from w, its wire form
// (appendWirePage), zeroing what w left out. It checks only that w's header
// matches its length; the caller validates the page.
func expandWirePage(p, w []byte) error {
	if len(w) < pageHeaderSize {
		return fmt.Errorf("%d bytes, shorter than a page header: %w", len(w), errPage)
	}
	head, up, ok := wireSpan(w)
	if up < 0 {
		up = len(p)
	}
	if !ok || head > up || up > len(p) || len(w) >= len(p) || len(w) != head+len(p)-up {
		return fmt.Errorf("%d bytes of a page of type %d whose header says %d of %d bytes: %w",
			len(w), pType(w), head+len(p)-up, len(p), errPage)
	}
	copy(p, w[:head])
	clear(p[head:up])
	copy(p[up:], w[head:])
	return nil
}

// validatePage checks a branch or leaf page completely: header, slot order,
// entry bounds and key order. It is used when a page enters a write transaction,
// on import and by the fuzzer; readers rely on the per-access checks instead.
func validatePage(p []byte, pgno uint64, pageSize int) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page %d: %d bytes, shorter than a page header: %w", pgno, len(p), errPage)
	}
	switch pType(p) {
	case pageLeaf, pageBranch:
	case pageOverflow:
		return validateOverflow(p, pgno, pageSize)
	default:
		return fmt.Errorf("page %d: unknown page type %d: %w", pgno, pType(p), errPage)
	}
	if len(p) != pageSize {
		return fmt.Errorf("page %d: %d bytes, page size is %d: %w", pgno, len(p), pageSize, errPage)
	}
	if pPgno(p) != pgno {
		return fmt.Errorf("page %d: header says page %d (misplaced page): %w", pgno, pPgno(p), errPage)
	}
	n := pCount(p)
	if pageHeaderSize+slotSize*n > len(p) {
		return fmt.Errorf("page %d: %d entries overflow the page: %w", pgno, n, errPage)
	}
	if pType(p) == pageBranch && n == 0 {
		return fmt.Errorf("page %d: branch page without children: %w", pgno, errPage)
	}
	up := pUpper(p)
	if up < pageHeaderSize+slotSize*n || up > len(p) {
		return fmt.Errorf("page %d: data start %d outside the page: %w", pgno, up, errPage)
	}
	used := 0
	var prev []byte
	for i := 0; i < n; i++ {
		raw, ok := entryAt(p, i)
		if !ok || slot(p, i) < up {
			return fmt.Errorf("page %d: entry %d out of bounds: %w", pgno, i, errPage)
		}
		used += len(raw) + slotSize
		k := rawKey(pType(p), raw)
		if i > 0 && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("page %d: keys out of order at entry %d: %w", pgno, i, errPage)
		}
		if pType(p) == pageLeaf && raw[0]&^leafFlagOverflow != 0 {
			return fmt.Errorf("page %d: entry %d has unknown flags %#x: %w", pgno, i, raw[0], errPage)
		}
		prev = k
	}
	if used != pUsed(p) || used > len(p)-pageHeaderSize {
		return fmt.Errorf("page %d: used bytes %d, entries take %d: %w", pgno, pUsed(p), used, errPage)
	}
	return nil
}

// validateOverflow checks an overflow run given as its full byte range.
func validateOverflow(p []byte, pgno uint64, pageSize int) error {
	if len(p) < pageHeaderSize || pType(p) != pageOverflow {
		return fmt.Errorf("page %d: not an overflow page: %w", pgno, errPage)
	}
	if pPgno(p) != pgno {
		return fmt.Errorf("page %d: header says page %d (misplaced page): %w", pgno, pPgno(p), errPage)
	}
	n := pOvPages(p)
	if n < 1 || n*pageSize != len(p) {
		return fmt.Errorf("page %d: overflow run of %d pages in %d bytes: %w", pgno, n, len(p), errPage)
	}
	if vlen := pUpper(p); vlen > len(p)-pageHeaderSize {
		return fmt.Errorf("page %d: overflow value of %d bytes exceeds its run: %w", pgno, vlen, errPage)
	}
	return nil
}

// overflowPages is the run length needed for a value of vlen bytes.
func overflowPages(vlen, pageSize int) int {
	return (pageHeaderSize + vlen + pageSize - 1) / pageSize
}

// treeShape reads the header of p, a tree page to be copied into q: its
// entry count, the end of its slot array, the start of its entries and
// whether it is a leaf. ok is false when the header cannot describe a sound
// leaf or branch (or q is not a page of the same size).
func treeShape(q, p []byte) (n, lo, pu int, leaf, ok bool) {
	n = pCount(p)
	lo = pageHeaderSize + slotSize*n
	pu = pUpper(p)
	if lo > len(p) || pu < lo || pu > len(p) || len(q) != len(p) {
		return 0, 0, 0, false, false
	}
	switch pType(p) {
	case pageLeaf:
		return n, lo, pu, true, true
	case pageBranch:
		return n, lo, pu, false, n > 0
	}
	return 0, 0, 0, false, false
}

// leafEntrySize is the size of the leaf entry at off (>= 0) in p, or -1
// when its header or its extent leaves the page or its flags are unknown.
// It and branchEntrySize are small enough to inline: the page copies call
// them for every entry of every page a commit changes.
func leafEntrySize(p []byte, off int) int {
	if off+leafEntryHdr > len(p) || p[off]&^leafFlagOverflow != 0 {
		return -1
	}
	sz := leafEntryHdr + int(binary.LittleEndian.Uint16(p[off+2:]))
	if p[off]&leafFlagOverflow != 0 {
		sz += 8
	} else {
		sz += int(binary.LittleEndian.Uint32(p[off+4:]))
	}
	if sz > len(p)-off {
		return -1
	}
	return sz
}

// branchEntrySize is leafEntrySize for a branch entry.
func branchEntrySize(p []byte, off int) int {
	if off+branchEntryHdr > len(p) {
		return -1
	}
	sz := branchEntryHdr + int(binary.LittleEndian.Uint16(p[off:]))
	if sz > len(p)-off {
		return -1
	}
	return sz
}

// copyPacked is rebuildChecked for a page whose entries already lie packed
// at its end in key order, as rebuildChecked writes them: it checks every
// slot and entry extent reading forwards through p, then copies the slots
// and the entries in two moves. A branch page keeps that shape from one
// copy to the next (relinking a child rewrites its entry in place; only a
// split inserts), so the branches on every commit's path, with a hundred
// or more small entries each, take this way. False, with q untouched past
// its header, when p is not so packed (rebuildChecked then rebuilds it
// entry by entry) or is damaged.
func copyPacked(q, p []byte) bool {
	n, lo, pu, leaf, ok := treeShape(q, p)
	if !ok {
		return false
	}
	at := pu // where entry i must start
	for i := 0; i < n; i++ {
		// Entry i is read at its slot's offset, not at the running end of
		// the previous entry: the loads then do not wait for that entry's
		// size, and the misses of a page not in cache overlap.
		off := int(binary.LittleEndian.Uint16(p[pageHeaderSize+2*i:]))
		if off != at {
			return false
		}
		var sz int
		if leaf {
			sz = leafEntrySize(p, off)
		} else {
			sz = branchEntrySize(p, off)
		}
		if sz < 0 {
			return false
		}
		at += sz
	}
	if at != len(p) || len(p)-pu+slotSize*n != pUsed(p) {
		return false
	}
	copy(q[pageHeaderSize:lo], p[pageHeaderSize:lo])
	copy(q[pu:], p[pu:])
	setCount(q, n)
	setUpper(q, pu)
	setUsed(q, pUsed(p))
	return true
}

// rebuildChecked writes p's entries into the empty page q in key order at
// ascending addresses (packed, no holes: a cursor then reads the page
// forwards in memory), checking every slot and entry extent like
// validatePage's bounds checks. q's header (type, txid, pgno) must be
// initialised. False if p is damaged (q is then garbage).
//
// A transaction copies every page it changes, so this is on every commit's
// path (it was the largest single cost of a small one, on the master and
// on every replica): one pass, last entry first, fills q from its end
// down, so each entry's size is checked once and placed at once; entries
// that lie next to each other in p in key order, which after a few
// inserts is nearly all of them, move as one run.
func rebuildChecked(q, p []byte) bool {
	if copyPacked(q, p) {
		return true
	}
	n, lo, pu, leaf, ok := treeShape(q, p)
	if !ok {
		return false
	}
	le := binary.LittleEndian
	at := len(q)
	runSrc, runLen := 0, 0 // the run being gathered: p[runSrc:runSrc+runLen] goes to q[at:]
	for i := n - 1; i >= 0; i-- {
		off := int(le.Uint16(p[pageHeaderSize+2*i:]))
		if off < pu {
			return false
		}
		var sz int
		if leaf {
			sz = leafEntrySize(p, off)
		} else {
			sz = branchEntrySize(p, off)
		}
		if sz < 0 || sz > at-lo {
			return false // beyond the page, or more entry bytes than it holds
		}
		if runLen > 0 && off+sz == runSrc {
			runSrc, runLen = off, runLen+sz
		} else {
			copy(q[at:at+runLen], p[runSrc:runSrc+runLen])
			runSrc, runLen = off, sz
		}
		at -= sz
		le.PutUint16(q[pageHeaderSize+2*i:], uint16(at)) // < page size <= 65536
	}
	copy(q[at:at+runLen], p[runSrc:runSrc+runLen])
	total := len(q) - at
	if total+slotSize*n != pUsed(p) {
		return false
	}
	setCount(q, n)
	setUpper(q, at)
	setUsed(q, total+slotSize*n)
	return true
}
