package shm

import (
	"fmt"
	"sync/atomic"
)

// LockWriter takes the region's writer lock for this handle. The lock word in the header
// holds the holder's pid and process start time. A holder that is gone (no such process,
// a zombie, or a reused pid with a different start time) is taken over; a live holder —
// another process, or another handle in this process — is ErrWriterActive naming its pid.
// Calling it again on the handle that holds the lock is a no-op.
func (r *Region) LockWriter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return fmt.Errorf("shm: lock writer: %w", ErrClosed)
	}
	if r.readOnly {
		return fmt.Errorf("shm: lock writer on %s: %w", r.describe(), ErrReadOnly)
	}
	if r.holdsLock {
		return nil
	}
	lock := r.word(offWriterLock)
	mine := r.self.word()
	for {
		cur := atomic.LoadUint64(lock)
		if cur == 0 {
			if atomic.CompareAndSwapUint64(lock, 0, mine) {
				r.tookOver = 0
				break
			}
			continue
		}
		if cur == mine {
			return fmt.Errorf("shm: lock writer on %s: held by this process (pid %d) through another handle: %w",
				r.describe(), r.self.pid, ErrWriterActive)
		}
		if r.self.ownerAlive(cur) {
			return fmt.Errorf("shm: lock writer on %s: held by live process pid %d: %w", r.describe(), wordPID(cur), ErrWriterActive)
		}
		// The CAS from the exact dead word makes concurrent takeovers race safely: one wins,
		// the others see the winner's live word on the next round.
		if atomic.CompareAndSwapUint64(lock, cur, mine) {
			r.tookOver = wordPID(cur)
			atomic.AddUint64(r.word(offTakeovers), 1)
			break
		}
	}
	atomic.StoreUint64(r.word(offWriterPID), uint64(r.self.pid))
	atomic.StoreUint64(r.word(offWriterStart), r.self.start)
	r.holdsLock = true
	return nil
}

// TookOver returns the pid of the dead writer the last successful LockWriter took the
// lock from, or 0 if the lock was free. A takeover means the previous writer may have
// died mid-transaction: the layer above must recover (e.g. Allocator.Rebuild).
func (r *Region) TookOver() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int(r.tookOver)
}

// UnlockWriter releases the writer lock held by this handle (ErrWriterNotHeld otherwise).
func (r *Region) UnlockWriter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return fmt.Errorf("shm: unlock writer: %w", ErrClosed)
	}
	if !r.holdsLock {
		return fmt.Errorf("shm: unlock writer on %s: %w", r.describe(), ErrWriterNotHeld)
	}
	r.holdsLock = false
	if !atomic.CompareAndSwapUint64(r.word(offWriterLock), r.self.word(), 0) {
		return fmt.Errorf("shm: unlock writer on %s: lock word no longer ours (pid %d holds it): %w",
			r.describe(), wordPID(atomic.LoadUint64(r.word(offWriterLock))), ErrWriterNotHeld)
	}
	return nil
}

// HoldsWriter reports whether this handle holds the writer lock.
func (r *Region) HoldsWriter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holdsLock
}
