package board

import (
	"errors"
	"fmt"
	"sync"

	"github.com/seed61e250c8/boardha/inmem"
)

// Tx is a transaction on the board's environment: read-only in View,
// ViewLeased and Reader.View, writable in Update. Slices returned by Get and
// cursors alias the page pool and are valid only until fn returns; copy what
// must live longer. A Tx must not be used from another goroutine or after
// fn returns.
type Tx struct {
	tx       *inmem.Tx
	writable bool
}

// viewTxs keeps the Tx wrappers of finished views for later ones: an
// agent views at every lookup, and inmem reuses its transactions, so the
// wrapper would be the view's only allocation.
type viewTxs struct{ pool sync.Pool }

// run calls fn with a wrapper of tx, which it takes back when fn returns.
func (v *viewTxs) run(tx *inmem.Tx, fn func(*Tx) error) error {
	t, _ := v.pool.Get().(*Tx)
	if t == nil {
		t = new(Tx)
	}
	t.tx = tx
	defer func() {
		t.tx = nil // a Tx kept past fn no longer reaches the pool
		v.pool.Put(t)
	}()
	return fn(t)
}

// Writable reports whether the transaction can write.
func (tx *Tx) Writable() bool { return tx.writable }

// Bucket returns the named database. It is never nil: in a read transaction
// a database that does not exist reads as empty; in a write transaction
// Put creates it.
func (tx *Tx) Bucket(name string) *Bucket {
	return &Bucket{tx: tx, name: name, db: tx.tx.DB(name)}
}

// Buckets lists the databases in the environment, sorted.
func (tx *Tx) Buckets() []string { return tx.tx.DBNames() }

// ContentHash is an order-independent hash over every database in the
// transaction's view: two boards with equal hashes hold the same data.
func (tx *Tx) ContentHash() (uint64, error) { return tx.tx.ContentHash() }

// DeleteBucket drops a database and everything in it; a missing database is
// not an error.
func (tx *Tx) DeleteBucket(name string) error {
	if tx.tx.DB(name) == nil {
		return nil
	}
	return mapErr(tx.tx.DropDB(name))
}

// Bucket is one database seen through a transaction.
type Bucket struct {
	tx   *Tx
	name string
	db   *inmem.DB // nil until the database exists
}

// Name is the database name.
func (b *Bucket) Name() string { return b.name }

// Get returns key's value, or nil if absent. The slice aliases the page
// pool: valid until the transaction ends, never to be modified.
func (b *Bucket) Get(key []byte) []byte {
	if b.db == nil {
		return nil
	}
	return b.db.Get(key)
}

// Put sets key to value, creating the database if needed.
func (b *Bucket) Put(key, value []byte) error {
	if b.db == nil {
		db, err := b.tx.tx.CreateDBIfNotExists(b.name)
		if err != nil {
			return mapErr(fmt.Errorf("creating database %q: %w", b.name, err))
		}
		b.db = db
	}
	return mapErr(b.db.Put(key, value))
}

// Delete removes key; an absent key or database is not an error.
func (b *Bucket) Delete(key []byte) error {
	if b.db == nil {
		if !b.tx.writable {
			return mapErr(inmem.ErrReadOnlyTx)
		}
		return nil
	}
	return mapErr(b.db.Delete(key))
}

// Cursor iterates the database in key order; on a missing database every
// move returns nil keys.
func (b *Bucket) Cursor() *Cursor {
	if b.db == nil {
		return &Cursor{}
	}
	return &Cursor{c: b.db.Cursor()}
}

// Cursor walks a database in key order. Each move returns the key and value
// there, or nil, nil past either end. Slices alias the page pool.
type Cursor struct {
	c *inmem.Cursor
}

// First moves to the first key.
func (c *Cursor) First() (k, v []byte) {
	if c.c == nil {
		return nil, nil
	}
	return c.c.First()
}

// Last moves to the last key.
func (c *Cursor) Last() (k, v []byte) {
	if c.c == nil {
		return nil, nil
	}
	return c.c.Last()
}

// Seek moves to the first key >= k.
func (c *Cursor) Seek(k []byte) (key, v []byte) {
	if c.c == nil {
		return nil, nil
	}
	return c.c.Seek(k)
}

// Next moves to the next key.
func (c *Cursor) Next() (k, v []byte) {
	if c.c == nil {
		return nil, nil
	}
	return c.c.Next()
}

// Prev moves to the previous key.
func (c *Cursor) Prev() (k, v []byte) {
	if c.c == nil {
		return nil, nil
	}
	return c.c.Prev()
}

// mapErr makes the lower layers' resource errors match the board sentinels
// too, so callers can test errors.Is(err, board.ErrPoolFull) and still see
// inmem's message with the sizes.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrPoolFull), errors.Is(err, ErrLogFull):
		return err
	case errors.Is(err, inmem.ErrPoolFull):
		return fmt.Errorf("%w: %w", ErrPoolFull, err)
	case errors.Is(err, inmem.ErrLogFull):
		return fmt.Errorf("%w: %w", ErrLogFull, err)
	}
	return err
}
