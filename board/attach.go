package board

import (
	"errors"
	"fmt"

	"github.com/seed61e250c8/boardha/inmem"
)

// Reader reads a board's data from another process on the same board: it
// maps the owning process's shared-memory region read-only and reads keys
// and values in place (zero copy) while the owner keeps committing. Each
// View sees one consistent snapshot.
type Reader struct {
	env   *inmem.ReadEnv
	views viewTxs
}

// Attach opens the named region (Config.ShmName of the owning board: a
// name in /dev/shm or an absolute path) read-only.
func Attach(name string) (*Reader, error) {
	env, err := inmem.AttachReadOnly(name)
	if err != nil {
		return nil, fmt.Errorf("board: attaching to shared memory %q (is the board running with Config.ShmName set?): %w", name, err)
	}
	return &Reader{env: env}, nil
}

// View runs fn on a consistent snapshot. A snapshot held for long delays
// the reuse of pages the owner frees; keep fn short. Once the board has
// closed or replaced the region (an internal init, a restart) or died, View
// fails with ErrOwnerGone: Close the Reader and Attach again.
func (r *Reader) View(fn func(*Tx) error) error {
	err := r.env.View(func(tx *inmem.Tx) error { return r.views.run(tx, fn) })
	if errors.Is(err, inmem.ErrOwnerGone) {
		return fmt.Errorf("%w: %w", ErrOwnerGone, err)
	}
	return err
}

// Close releases the mapping and the reader slot.
func (r *Reader) Close() error { return r.env.Close() }
