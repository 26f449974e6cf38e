package inmem

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// rebuildTwoPass is the previous rebuildChecked (sizes first, then the
// copy in key order), kept as the reference the one-pass version must
// match byte for byte, and in what it refuses. It shares none of the page
// copy's helpers on purpose: a mistake in them would show here.
func rebuildTwoPass(q, p []byte) bool {
	n := pCount(p)
	lo := pageHeaderSize + slotSize*n
	pu := pUpper(p)
	if lo > len(p) || pu < lo || pu > len(p) || len(q) != len(p) {
		return false
	}
	le := binary.LittleEndian
	leaf := pType(p) == pageLeaf
	if !leaf && (pType(p) != pageBranch || n == 0) {
		return false
	}
	size := func(off int) int {
		if leaf {
			if off < pu || off+leafEntryHdr > len(p) || p[off]&^leafFlagOverflow != 0 {
				return -1
			}
			s := leafEntryHdr + int(le.Uint16(p[off+2:]))
			if p[off]&leafFlagOverflow != 0 {
				s += 8
			} else {
				s += int(le.Uint32(p[off+4:]))
			}
			if s > len(p)-off {
				return -1
			}
			return s
		}
		if off < pu || off+branchEntryHdr > len(p) {
			return -1
		}
		s := branchEntryHdr + int(le.Uint16(p[off:]))
		if s > len(p)-off {
			return -1
		}
		return s
	}
	total := 0
	for i := 0; i < n; i++ {
		sz := size(int(le.Uint16(p[pageHeaderSize+2*i:])))
		if sz < 0 {
			return false
		}
		total += sz
		le.PutUint16(q[pageHeaderSize+2*i:], uint16(sz)) // < page size <= 65536
	}
	if total+slotSize*n != pUsed(p) || lo+total > len(p) {
		return false
	}
	up := len(q) - total
	at := up
	runSrc, runDst, runLen := 0, 0, 0
	for i := 0; i < n; i++ {
		off := int(le.Uint16(p[pageHeaderSize+2*i:]))
		sz := int(le.Uint16(q[pageHeaderSize+2*i:]))
		if runLen > 0 && off == runSrc+runLen {
			runLen += sz
		} else {
			copy(q[runDst:runDst+runLen], p[runSrc:runSrc+runLen])
			runSrc, runDst, runLen = off, at, sz
		}
		le.PutUint16(q[pageHeaderSize+2*i:], uint16(at))
		at += sz
	}
	copy(q[runDst:runDst+runLen], p[runSrc:runSrc+runLen])
	setCount(q, n)
	setUpper(q, up)
	setUsed(q, total+slotSize*n)
	return true
}

// rebuildBoth runs both rebuilds of p and fails t if they differ.
func rebuildBoth(t testing.TB, p []byte, what string) bool {
	t.Helper()
	q1, q2 := make([]byte, len(p)), make([]byte, len(p))
	initPage(q1, pType(p), 7, 3)
	initPage(q2, pType(p), 7, 3)
	ok1, ok2 := rebuildChecked(q1, p), rebuildTwoPass(q2, p)
	if ok1 != ok2 {
		t.Fatalf("%s: one-pass rebuild says %v, two-pass %v", what, ok1, ok2)
	}
	if ok1 && !bytes.Equal(q1, q2) {
		t.Fatalf("%s: one-pass and two-pass rebuilds differ", what)
	}
	return ok1
}

// TestRebuildMatchesTwoPass: on every page of a tree shaped by random puts
// and deletes (holes, overflow values, branches), and on thousands of
// damaged copies of them, the one-pass rebuild writes what the two-pass one
// did and refuses what it refused.
func TestRebuildMatchesTwoPass(t *testing.T) {
	const ps = 1024
	e, err := Create(Options{PageSize: ps, PoolSize: 8 << 20, LogSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	_, err = e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		for i := range 3000 {
			k := fmt.Appendf(nil, "k%05d", rng.IntN(2000))
			if i%5 == 4 {
				_ = db.Delete(k)
				continue
			}
			if err := db.Put(k, bytes.Repeat([]byte{byte(i)}, rng.IntN(40)+rng.IntN(2)*900)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]byte
	_ = e.View(func(tx *Tx) error {
		return tx.walk(tx.meta, false, func(pg uint64, n int) error {
			if p, _ := tx.rawPage(pg); pType(p) == pageLeaf || pType(p) == pageBranch {
				pages = append(pages, append([]byte(nil), p...))
			}
			return nil
		})
	})
	if len(pages) < 20 {
		t.Fatalf("only %d tree pages to compare", len(pages))
	}
	// Their rebuilt copies too: packed in key order, the shape copyPacked
	// takes (and damage to it, the shape it must refuse or hand on).
	packed := 0
	for _, p := range pages[:len(pages):len(pages)] {
		q := make([]byte, len(p))
		initPage(q, pType(p), 5, 9)
		if rebuildTwoPass(q, p) {
			pages = append(pages, q)
			if copyPacked(make([]byte, len(q)), q) {
				packed++
			}
		}
	}
	if packed == 0 {
		t.Fatal("no rebuilt page took the packed copy")
	}
	refused := 0
	for i, p := range pages {
		if !rebuildBoth(t, p, fmt.Sprintf("page %d", i)) {
			t.Fatalf("page %d of a sound tree refused", i)
		}
		for j := range 200 {
			d := append([]byte(nil), p...)
			for range 1 + rng.IntN(3) {
				d[rng.IntN(len(d))] = byte(rng.Uint32())
			}
			if !rebuildBoth(t, d, fmt.Sprintf("page %d damage %d", i, j)) {
				refused++
			}
		}
	}
	t.Logf("%d pages (%d packed), %d damaged copies refused of %d", len(pages), packed, refused, 200*len(pages))
}

// BenchmarkRebuild copies a full 4 KiB leaf of 16-byte keys and 100-byte
// values (the commit benchmarks' shape), one pass against the two-pass
// reference.
func BenchmarkRebuild(b *testing.B) {
	e, err := Create(Options{PageSize: 4096, PoolSize: 4 << 20, LogSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	_, err = e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		for i := range 30 {
			if err := db.Put(fmt.Appendf(nil, "key-%011d", i*7919%30), make([]byte, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var leaf []byte
	_ = e.View(func(tx *Tx) error {
		return tx.walk(tx.meta, false, func(pg uint64, n int) error {
			if p, _ := tx.rawPage(pg); pType(p) == pageLeaf && pCount(p) == 30 {
				leaf = append([]byte(nil), p...)
			}
			return nil
		})
	})
	if leaf == nil {
		b.Fatal("no leaf of 30 entries")
	}
	// The same leaf rebuilt (packed in key order, as a page copied once
	// before is), and a packed branch of 16-byte keys like the ones above
	// a tree of such leaves.
	packedLeaf := make([]byte, len(leaf))
	initPage(packedLeaf, pageLeaf, 2, 2)
	if !rebuildTwoPass(packedLeaf, leaf) {
		b.Fatal("rebuild refused")
	}
	branch := make([]byte, len(leaf))
	initPage(branch, pageBranch, 2, 3)
	at := len(branch)
	n := 0
	for ; ; n++ {
		sz := branchEntryHdr + 16
		if pageHeaderSize+slotSize*(n+1) > at-sz {
			break
		}
		at -= sz
		binary.LittleEndian.PutUint16(branch[pageHeaderSize+2*n:], uint16(at))
	}
	// Entries were placed from the end down: renumber so that entry i
	// lies at ascending addresses (key order), then fill them in.
	for i := 0; i < n/2; i++ {
		a, z := branch[pageHeaderSize+2*i:], branch[pageHeaderSize+2*(n-1-i):]
		x, y := binary.LittleEndian.Uint16(a), binary.LittleEndian.Uint16(z)
		binary.LittleEndian.PutUint16(a, y)
		binary.LittleEndian.PutUint16(z, x)
	}
	for i := 0; i < n; i++ {
		off := int(binary.LittleEndian.Uint16(branch[pageHeaderSize+2*i:]))
		binary.LittleEndian.PutUint16(branch[off:], 16)
		binary.LittleEndian.PutUint64(branch[off+2:], uint64(100+i))
		copy(branch[off+branchEntryHdr:], fmt.Appendf(nil, "key-%012d", i))
	}
	setCount(branch, n)
	setUpper(branch, at)
	setUsed(branch, len(branch)-at+slotSize*n)
	if !copyPacked(make([]byte, len(branch)), branch) {
		b.Fatal("the packed branch was not taken as packed")
	}
	for _, page := range []struct {
		name string
		p    []byte
	}{{"leaf", leaf}, {"packed-leaf", packedLeaf}, {fmt.Sprintf("packed-branch-%d", n), branch}} {
		for _, v := range []struct {
			name string
			fn   func(q, p []byte) bool
		}{{"one-pass", rebuildChecked}, {"two-pass", rebuildTwoPass}} {
			b.Run(page.name+"/"+v.name, func(b *testing.B) {
				q := make([]byte, len(page.p))
				for b.Loop() {
					initPage(q, pType(page.p), 2, 2)
					if !v.fn(q, page.p) {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
