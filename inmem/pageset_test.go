package inmem

import (
	"math/rand/v2"
	"testing"
)

// TestPageBitsLikeAMap: the chunked set answers as a map of page numbers
// would, across chunk boundaries, for numbers past the limit (never
// recorded, always new) and at the last page.
func TestPageBitsLikeAMap(t *testing.T) {
	for _, limit := range []uint64{1, 63, 64, 1 << bitChunkShift, 1<<bitChunkShift + 1, 3<<bitChunkShift + 17} {
		s := newPageBits(limit)
		ref := map[uint64]bool{}
		r := rand.New(rand.NewPCG(limit, 7))
		try := func(pg uint64) {
			t.Helper()
			want := pg >= limit || !ref[pg]
			if got := s.add(pg); got != want {
				t.Fatalf("limit %d: add(%d) = %v, want %v", limit, pg, got, want)
			}
			if pg < limit {
				ref[pg] = true
			}
		}
		for _, pg := range []uint64{0, limit - 1, limit, limit + 1, ^uint64(0), 0, limit - 1} {
			try(pg)
		}
		for range 4000 {
			try(r.Uint64N(limit + 100))
		}
		for pg := range ref {
			try(pg) // each a second time: no longer new
		}
	}
}

// TestSketchTable: stored sketches come back, pages never stored and page
// numbers past the limit do not, and an empty pool allocates no chunk.
func TestSketchTable(t *testing.T) {
	const limit = 3<<sketchChunkShift + 5
	tb := newSketchTable(limit)
	if _, ok := tb.get(7); ok {
		t.Fatal("a page never stored was found")
	}
	for _, c := range tb.chunks {
		if c != nil {
			t.Fatal("a lookup allocated a chunk")
		}
	}
	stored := map[uint64]pageSketch{}
	for i, pg := range []uint64{0, 1<<sketchChunkShift - 1, 1 << sketchChunkShift, limit - 1} {
		s := pageSketch{typ: pageLeaf, run: uint32(i + 1), vlen: uint32(i), off: uint32(10 * i), n: 2}
		tb.put(pg, s)
		stored[pg] = s
	}
	for pg := uint64(0); pg < limit+3; pg++ {
		got, ok := tb.get(pg)
		want, wantOK := stored[pg]
		if ok != wantOK || got != want {
			t.Fatalf("get(%d) = %+v, %v; want %+v, %v", pg, got, ok, want, wantOK)
		}
	}
	if _, ok := tb.get(^uint64(0)); ok {
		t.Fatal("a page number past the limit was found")
	}
}
