package shm

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// Reader slot layout (64 bytes, one cache line):
//
//	0  owner u64  atomic: pid<<32 | low 32 bits of process start time; 0 = free
//	8  snap  u64  atomic: txid+1 of the snapshot in use; 0 = none
//	16 start u64  full process start time (informational)
const (
	slotOwner = 0
	slotSnap  = 8
	slotStart = 16
)

// ReaderSlot is one reader-table slot held by this process. Set publishes the snapshot
// the reader uses; the writer's OldestReader sees it. Methods are cheap atomics on the
// mapping; a slot must not be used concurrently from several goroutines, nor after its
// region is closed.
type ReaderSlot struct {
	r     *Region
	index int
	owner *uint64
	snap  *uint64
	live  bool
}

// AcquireReader claims a free reader-table slot for this process. When none is free it
// reclaims slots of dead processes and tries again; ErrReaderTableFull if all are live.
//
// The publication race is the caller's to close, as in LMDB: after Set(txid) a reader
// must re-read the current txid and Set again if it moved, because a writer scanning
// between the reader's read of txid and its Set may have missed it.
func (r *Region) AcquireReader() (*ReaderSlot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, fmt.Errorf("shm: acquire reader: %w", ErrClosed)
	}
	if r.table == nil {
		return nil, fmt.Errorf("shm: acquire reader on %s: the region file is not writable by this process, so it cannot register in the reader table: %w",
			r.describe(), ErrReadOnly)
	}
	mine := r.self.word()
	n := int(r.hdr.ReaderSlots)
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < n; i++ {
			owner := r.slotWord(i, slotOwner)
			if atomic.LoadUint64(owner) != 0 || !atomic.CompareAndSwapUint64(owner, 0, mine) {
				continue
			}
			s := &ReaderSlot{r: r, index: i, owner: owner, snap: r.slotWord(i, slotSnap), live: true}
			atomic.StoreUint64(s.snap, 0)
			atomic.StoreUint64(r.slotWord(i, slotStart), r.self.start)
			r.slots[s] = struct{}{}
			return s, nil
		}
		if pass == 0 && r.reclaimDead() == 0 {
			break
		}
	}
	return nil, fmt.Errorf("shm: acquire reader on %s: all %d slots held by live processes: %w", r.describe(), n, ErrReaderTableFull)
}

func (r *Region) slotWord(i, off int) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.table[i*ReaderSlotSize+off]))
}

// reclaimDead frees the slots of processes that are gone and returns how many.
func (r *Region) reclaimDead() int {
	freed := 0
	for i := 0; i < int(r.hdr.ReaderSlots); i++ {
		owner := r.slotWord(i, slotOwner)
		w := atomic.LoadUint64(owner)
		// Asked now, not from the liveness cache: the table is full, and
		// a process that died within the cache's span would keep its
		// slot from the caller.
		if w == 0 || r.self.ownerAlive(w) {
			continue
		}
		r.live.forget(w)
		if r.freeSlot(i, w) {
			freed++
		}
	}
	return freed
}

// freeSlot frees slot i if it is still owned by w. The snapshot is cleared while the
// slot is still owned, so a new owner never inherits it.
func (r *Region) freeSlot(i int, w uint64) bool {
	owner := r.slotWord(i, slotOwner)
	if atomic.LoadUint64(owner) != w {
		return false
	}
	atomic.StoreUint64(r.slotWord(i, slotSnap), 0)
	return atomic.CompareAndSwapUint64(owner, w, 0)
}

// OldestReader returns the smallest snapshot txid published in the reader table, ok
// false if no reader has one. Slots of dead processes that hold a snapshot are
// reclaimed during the scan and do not count. Meant for the writer: it decides which
// freed pages can be reused (Allocator.Release). Works on read-only attachments too
// (reclaiming needs the table writable, which it is unless the file itself is
// read-only to this process).
//
// The writer scans at every commit, so a slot without a snapshot (a process attached
// between reads, as a forwarding agent mostly is) is passed over without asking
// whether its process lives: it holds nothing back, and asking cost a system call per
// such slot per commit (four idle readers made a small commit 5x slower). If its
// process died, AcquireReader reclaims the slot when the table is full.
func (r *Region) OldestReader() (txid uint64, ok bool) {
	if r.table == nil {
		return 0, false
	}
	oldest := ^uint64(0)
	for i := 0; i < int(r.hdr.ReaderSlots); i++ {
		w := atomic.LoadUint64(r.slotWord(i, slotOwner))
		if w == 0 {
			continue
		}
		snap := atomic.LoadUint64(r.slotWord(i, slotSnap))
		if snap == 0 {
			continue
		}
		if !r.live.alive(r.self, w) {
			r.freeSlot(i, w)
			continue
		}
		if snap != 0 && snap-1 < oldest {
			oldest, ok = snap-1, true
		}
	}
	return oldest, ok
}

// ReaderInfo describes one occupied reader slot.
type ReaderInfo struct {
	Slot      int
	PID       int
	StartTime uint64
	Txid      uint64
	HasTxid   bool
}

// Readers lists the occupied reader slots (without reclaiming), for diagnostics.
func (r *Region) Readers() []ReaderInfo {
	var out []ReaderInfo
	if r.table == nil {
		return nil
	}
	for i := 0; i < int(r.hdr.ReaderSlots); i++ {
		w := atomic.LoadUint64(r.slotWord(i, slotOwner))
		if w == 0 {
			continue
		}
		snap := atomic.LoadUint64(r.slotWord(i, slotSnap))
		out = append(out, ReaderInfo{Slot: i, PID: int(wordPID(w)), StartTime: atomic.LoadUint64(r.slotWord(i, slotStart)),
			Txid: snap - 1, HasTxid: snap != 0})
	}
	return out
}

// Index returns the slot's position in the reader table.
func (s *ReaderSlot) Index() int { return s.index }

// Set publishes txid as the snapshot this reader uses (txid < 2^64-1).
func (s *ReaderSlot) Set(txid uint64) {
	if !s.live {
		return
	}
	if txid == ^uint64(0) {
		txid-- // keep 0 free to mean "no snapshot"
	}
	atomic.StoreUint64(s.snap, txid+1)
}

// Clear withdraws the published snapshot; the slot stays held.
func (s *ReaderSlot) Clear() {
	if s.live {
		atomic.StoreUint64(s.snap, 0)
	}
}

// Release frees the slot. Further Set/Clear/Release calls are no-ops.
func (s *ReaderSlot) Release() {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	s.releaseLocked()
}

func (s *ReaderSlot) releaseLocked() {
	if !s.live {
		return
	}
	s.live = false
	delete(s.r.slots, s)
	s.r.freeSlot(s.index, s.r.self.word())
}

// WriterGone reports whether the region's writer has let go of it (closed
// it, or replaced it with a region built to take its place) or its process
// died: what the region holds is then no longer its owner's current data,
// and a reader that goes on reading it serves a frozen copy. The process
// check is cached for livenessTTL, so a reader may call it at every read.
func (r *Region) WriterGone() bool {
	w := atomic.LoadUint64(r.word(offWriterLock))
	switch {
	case w == 0:
		return true
	case w == r.self.word():
		return false
	}
	now := time.Now().UnixNano()
	if w == r.writerSeen.Load() && now-r.writerSeenAt.Load() < int64(livenessTTL) {
		return false
	}
	if !r.live.alive(r.self, w) {
		return true
	}
	r.writerSeenAt.Store(now)
	r.writerSeen.Store(w)
	return false
}
