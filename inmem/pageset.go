package inmem

// Walks of a whole snapshot (an export's page list, an import's Finish,
// Check) keep per-page state for every page they reach. In Go maps keyed by
// page number that state was a fifth of an internal init's CPU time on the
// bench's 300 MB group (hashing, and rehashing as the maps grew), and most
// of Finish, which runs after the last page arrived and so adds to the
// init's span. Page numbers are dense (below the pool's page count), so the
// state lives in tables indexed by page number instead, allocated a chunk at
// a time where pages are: a small tree in a large pool costs what the tree
// does, not what the pool would.

const (
	bitChunkShift    = 18 // pages per chunk of pageBits: 2^18 bits, 32 KiB
	sketchChunkShift = 12 // pages per chunk of sketchTable: 4096 sketches, 80 KiB
)

// pageBits is a set of page numbers below a limit (the pool's page count).
type pageBits struct {
	limit  uint64
	chunks []*[1 << (bitChunkShift - 6)]uint64
}

func newPageBits(limit uint64) pageBits {
	return pageBits{limit: limit, chunks: make([]*[1 << (bitChunkShift - 6)]uint64, (limit+1<<bitChunkShift-1)>>bitChunkShift)}
}

// add puts pgno in the set and reports whether it was new. A page number
// at or past the limit is not recorded and reported new: the walk's range
// check that follows refuses it as corrupt, as it refuses any such page.
func (s *pageBits) add(pgno uint64) bool {
	if pgno >= s.limit {
		return true
	}
	c := s.chunks[pgno>>bitChunkShift]
	if c == nil {
		c = new([1 << (bitChunkShift - 6)]uint64)
		s.chunks[pgno>>bitChunkShift] = c
	}
	w, bit := &c[pgno>>6&(1<<(bitChunkShift-6)-1)], uint64(1)<<(pgno&63)
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}

// sketchTable holds an import's page sketches by page number, below a
// limit (the pool's page count).
type sketchTable struct {
	limit  uint64
	chunks []*[1 << sketchChunkShift]pageSketch
}

func newSketchTable(limit uint64) sketchTable {
	return sketchTable{limit: limit, chunks: make([]*[1 << sketchChunkShift]pageSketch, (limit+1<<sketchChunkShift-1)>>sketchChunkShift)}
}

// put stores s as the sketch of pgno, which the caller checked is below
// the limit.
func (t *sketchTable) put(pgno uint64, s pageSketch) {
	c := t.chunks[pgno>>sketchChunkShift]
	if c == nil {
		c = new([1 << sketchChunkShift]pageSketch)
		t.chunks[pgno>>sketchChunkShift] = c
	}
	c[pgno&(1<<sketchChunkShift-1)] = s
}

// get returns the sketch of pgno; ok is false for a page never stored.
func (t *sketchTable) get(pgno uint64) (s pageSketch, ok bool) {
	if pgno >= t.limit {
		return pageSketch{}, false
	}
	c := t.chunks[pgno>>sketchChunkShift]
	if c == nil {
		return pageSketch{}, false
	}
	s = c[pgno&(1<<sketchChunkShift-1)]
	return s, s.run > 0
}
