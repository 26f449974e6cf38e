package inmem

import (
	"fmt"
	"sync"

	"github.com/seed61e250c8/boardha/shm"
)

// ReadEnv is a read-only attachment to another process's environment: View reads
// keys and values in place in the shared mapping (zero copy). The process holds one
// slot of the region's reader table; the writer does not reuse pages a published
// snapshot can see, and a killed reader's slot is reclaimed by pid check.
type ReadEnv struct {
	reg    *shm.Region
	slot   *shm.ReaderSlot
	lay    layout
	data   []byte
	ps     int
	npages uint64
	lo     uint64

	mu      sync.Mutex
	active  int
	closed  bool
	metaBuf [metaSize]byte // readMetas' copy of a meta page, under mu
	views   txFreeList     // finished views' transactions, under mu
}

// AttachReadOnly maps the named region read-only and registers a reader slot.
func AttachReadOnly(name string) (*ReadEnv, error) {
	reg, err := shm.Attach(name, shm.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("inmem: attach %q read-only: %w", name, err)
	}
	r := &ReadEnv{reg: reg, data: reg.Data(), ps: reg.PageSize(), npages: reg.NumPages()}
	fail := func(err error) (*ReadEnv, error) {
		if r.slot != nil {
			r.slot.Release()
		}
		_ = reg.Close()
		return nil, fmt.Errorf("inmem: attach %q read-only: %w", name, err)
	}
	if r.lay, err = decodeLayout(reg.UserArea(), r.npages); err != nil {
		return fail(err)
	}
	if int(r.lay.pageSize) != r.ps {
		return fail(fmt.Errorf("layout page size %d, region's %d: %w", r.lay.pageSize, r.ps, ErrCorrupt))
	}
	r.lo = r.lay.logPgno + r.lay.logPages
	if _, _, _, err := readMetas(r.data, r.ps, r.lay, &r.metaBuf); err != nil {
		return fail(err)
	}
	if r.slot, err = reg.AcquireReader(); err != nil {
		return fail(err)
	}
	return r, nil
}

// newest reads the current meta, retrying once: the writer may be rewriting the
// older meta page, never both.
func (r *ReadEnv) newest() (meta, error) {
	m, _, _, err := readMetas(r.data, r.ps, r.lay, &r.metaBuf)
	if err != nil {
		m, _, _, err = readMetas(r.data, r.ps, r.lay, &r.metaBuf)
	}
	return m, err
}

// View runs fn on the newest committed snapshot. The LMDB protocol: publish the
// snapshot's txid in the reader slot, then check the meta did not move meanwhile
// (else the writer may have missed the slot and reused its pages). Once the
// region's owner has closed or replaced it, or died, View fails with ErrOwnerGone
// rather than show a copy that no longer changes.
func (r *ReadEnv) View(fn func(*Tx) error) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.reg.WriterGone() {
		// Checked at every view: a forwarding agent must not go on
		// serving a frozen copy after its board replaced its memory.
		r.mu.Unlock()
		return fmt.Errorf("inmem: view of %s: %w", r.reg.Name(), ErrOwnerGone)
	}
	var m meta
	var err error
	if r.active == 0 {
		// The error is made only if every attempt failed: a reader in a
		// forwarding agent views at every lookup, and formatting it
		// up front was seven of the view's nine allocations.
		settled := false
		for range 1000 {
			var again meta
			if m, err = r.newest(); err == nil {
				r.slot.Set(m.txid)
				again, err = r.newest()
			}
			if err != nil || again.txid == m.txid {
				settled = true
				break
			}
		}
		if !settled {
			err = fmt.Errorf("inmem: the writer committed during each of 1000 snapshot attempts; retry: %w", ErrBusy)
		}
	} else {
		// A slot already published for an older snapshot protects every newer one.
		m, err = r.newest()
	}
	if err != nil {
		if r.active == 0 {
			r.slot.Clear()
		}
		r.mu.Unlock()
		return err
	}
	r.active++
	tx := r.views.get()
	*tx = Tx{data: r.data, ps: r.ps, lo: r.lo, npages: r.npages, meta: m, unpin: noUnpin}
	r.mu.Unlock()
	defer r.endView(tx)
	if err := fn(tx); err != nil {
		return err
	}
	return tx.err
}

// noUnpin is an attached view's unpin: its slot is cleared by endView.
func noUnpin() {}

// endView ends a view: the last running one clears the reader slot, and
// unmaps the region if Close came meanwhile.
func (r *ReadEnv) endView(tx *Tx) {
	tx.closed = true
	r.mu.Lock()
	r.views.put(tx)
	r.active--
	if r.active == 0 {
		r.slot.Clear()
		if r.closed {
			// Close came while this view ran and left the mapping to
			// the last view; its error has no caller to go to.
			_ = r.release()
		}
	}
	r.mu.Unlock()
}

// ContentHash is Env.ContentHash on the newest snapshot.
func (r *ReadEnv) ContentHash() (uint64, error) {
	var h uint64
	err := r.View(func(tx *Tx) error {
		var err error
		h, err = tx.ContentHash()
		return err
	})
	return h, err
}

// Close releases the reader slot and the mapping. Views started after it
// fail with ErrClosed. Views still running in other goroutines (an agent
// that closes its attachment on ErrOwnerGone while others read) keep the
// mapping until the last of them returns, which releases it: unmapping
// under them would crash the process.
func (r *ReadEnv) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.active > 0 {
		return nil
	}
	return r.release()
}

// release gives up the reader slot and the mapping; r.mu is held.
func (r *ReadEnv) release() error {
	r.slot.Release()
	return r.reg.Close()
}
