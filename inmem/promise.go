package inmem

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// promiseOffset is where the election promise lives in the region's user
// area, after the layout record: one 64-bit word, the value in the low half
// and its complement in the high half, so that a damaged word is told from
// a promise (a zero word, as in a new region, means none).
const promiseOffset = 64

// Promised returns the election promise stored in the region: the highest
// election this site cast a binding vote in (rep.Node.Promised). A process
// that takes over the region after a crash passes it back to the
// replication layer, so that it does not vote twice in one election.
func (e *Env) Promised() (uint32, error) {
	w := e.promiseWord()
	if w == nil {
		return 0, ErrClosed
	}
	v := atomic.LoadUint64(w)
	if v == 0 {
		return 0, nil
	}
	lo, hi := uint32(v), uint32(v>>32)
	if hi != ^lo {
		return 0, fmt.Errorf("election promise word %#x is damaged (halves do not match): %w", v, ErrCorrupt)
	}
	return lo, nil
}

// SetPromised stores the election promise in the region. It is a single
// store to shared memory: once it returns, the promise survives the death
// of this process.
func (e *Env) SetPromised(egen uint32) error {
	w := e.promiseWord()
	if w == nil {
		return ErrClosed
	}
	atomic.StoreUint64(w, uint64(^egen)<<32|uint64(egen))
	return nil
}

func (e *Env) promiseWord() *uint64 {
	ua := e.reg.UserArea()
	if len(ua) < promiseOffset+8 {
		return nil
	}
	// The user area starts page-aligned in the mapping, so the word is
	// 8-byte aligned for the atomic operations.
	return (*uint64)(unsafe.Pointer(&ua[promiseOffset]))
}
