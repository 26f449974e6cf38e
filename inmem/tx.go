package inmem

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/seed61e250c8/boardha/logbuf"
)

// MaxValueSize bounds a value so one put stays a single log record that fits a
// replication message. MaxKeySize is 1 KiB for pages of 4 KiB and larger.
const (
	MaxValueSize = 512 << 10
	MaxKeySize   = 1024
)

// maxKey is the key limit for a page size: an entry with an overflow value must
// stay under half a page so splits always succeed.
func maxKey(ps int) int {
	return min(MaxKeySize, (ps-pageHeaderSize)/2-leafEntryHdr-8-slotSize)
}

// Tx is a read or write transaction. Slices returned by Get and cursors point into
// the shared pool and are valid only until the transaction ends. A Tx is used by
// one goroutine.
type Tx struct {
	env      *Env
	data     []byte
	ps       int
	lo       uint64 // first tree page
	npages   uint64
	meta     meta // the snapshot (read) or the working state (write)
	writable bool
	closed   bool
	applying bool  // replica apply: records come from the master, none are generated
	err      error // first error met by a read that could not return one
	dbs      []*DB
	// The first handles live in the Tx: most transactions use one
	// database, and a replica applies a transaction per commit it
	// receives, so that saves two allocations per commit on every board.
	dbInline   [2]DB
	dbPtrs     [2]*DB
	mods       uint64 // bumped by every tree change, so cursors know to re-seek
	nrec       uint32 // records buffered in env.redo
	changed    bool
	catChanged bool // databases created or dropped: the id cache is stale after commit
	unpin      func()
	// imported, in Import.Finish: the import whose pages the walk
	// checks, each present, and a database's tree from what the import
	// recorded of its pages instead of reading them.
	imported *Import
}

// txFreeList keeps the transactions of finished views for later views.
// It holds no more than views ever ran at once, up to maxFreeViews, so a
// burst of concurrent views does not keep its transactions for good.
type txFreeList struct{ txs []*Tx }

const maxFreeViews = 16

// get returns a kept transaction, or a new one when none is kept.
func (l *txFreeList) get() *Tx {
	if n := len(l.txs); n > 0 {
		tx := l.txs[n-1]
		l.txs[n-1] = nil
		l.txs = l.txs[:n-1]
		return tx
	}
	return new(Tx)
}

// put keeps a closed transaction, dropping what it referred to so a kept
// one pins no database handles.
func (l *txFreeList) put(tx *Tx) {
	if len(l.txs) < maxFreeViews {
		*tx = Tx{closed: true}
		l.txs = append(l.txs, tx)
	}
}

// DB is a handle to a named database inside one transaction.
type DB struct {
	tx      *Tx
	name    string
	id      uint32
	root    uint64
	orig    uint64 // root as committed
	dropped bool
}

// Err returns the first corruption error met by a Get or cursor call, which have
// no error result; View and Update return it too.
func (tx *Tx) Err() error { return tx.err }

func (tx *Tx) setErr(err error) {
	if tx.err == nil && err != nil {
		tx.err = err
	}
}

// Writable reports whether tx is a write transaction.
func (tx *Tx) Writable() bool { return tx.writable }

// ID is the transaction id: the snapshot's txid for readers, the id the commit will
// carry for writers.
func (tx *Tx) ID() uint64 { return tx.meta.txid }

func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// catEntry decodes a catalog value: database id and root page.
func catEntry(v []byte) (uint32, uint64, bool) {
	if len(v) != 12 {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(v), binary.LittleEndian.Uint64(v[4:]), true
}

// DB returns the named database, or nil when it does not exist (or on corruption,
// reported by Err).
func (tx *Tx) DB(name string) *DB {
	if tx.closed {
		return nil
	}
	for _, db := range tx.dbs {
		if db.name == name && !db.dropped {
			return db
		}
	}
	if tx.meta.root == 0 {
		return nil // no catalog yet
	}
	v, err := tx.get(tx.meta.root, bytesOf(name))
	if err != nil || v == nil {
		tx.setErr(err)
		return nil
	}
	id, root, ok := catEntry(v)
	if !ok {
		tx.setErr(corrupt(tx.meta.root, fmt.Sprintf("catalog entry for %q has %d bytes", name, len(v))))
		return nil
	}
	return tx.addDB(DB{tx: tx, name: name, id: id, root: root, orig: root})
}

// addDB registers a handle for this transaction. tx.dbs only grows, so an
// inline slot is handed out once.
func (tx *Tx) addDB(d DB) *DB {
	if tx.dbs == nil {
		tx.dbs = tx.dbPtrs[:0]
	}
	var db *DB
	if n := len(tx.dbs); n < len(tx.dbInline) {
		db = &tx.dbInline[n]
	} else {
		db = new(DB)
	}
	*db = d
	tx.dbs = append(tx.dbs, db)
	return db
}

// DBNames lists the databases in name order.
func (tx *Tx) DBNames() []string {
	var names []string
	if tx.closed {
		return nil
	}
	c := tx.cursorOn(tx.meta.root)
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		names = append(names, string(k))
	}
	return names
}

func (tx *Tx) checkWrite() error {
	if tx.closed {
		return ErrTxClosed
	}
	if !tx.writable {
		return ErrReadOnlyTx
	}
	return tx.err
}

// CreateDB creates a database; ErrDBExists if it is there already.
func (tx *Tx) CreateDB(name string) (*DB, error) {
	if err := tx.checkWrite(); err != nil {
		return nil, err
	}
	if len(name) == 0 || len(name) > maxKey(tx.ps) {
		return nil, fmt.Errorf("inmem: database name of %d bytes, want 1..%d: %w", len(name), maxKey(tx.ps), ErrKeyTooLarge)
	}
	if tx.DB(name) != nil {
		return nil, fmt.Errorf("inmem: create %q: %w", name, ErrDBExists)
	}
	if tx.err != nil {
		return nil, tx.err
	}
	db, err := tx.createDB(name, tx.meta.nextDB)
	tx.setErr(err)
	return db, err
}

func (tx *Tx) createDB(name string, id uint32) (*DB, error) {
	pg, _, err := tx.newPage(pageLeaf)
	if err != nil {
		return nil, err
	}
	var v [12]byte
	binary.LittleEndian.PutUint32(v[:], id)
	binary.LittleEndian.PutUint64(v[4:], pg)
	if err := tx.catalogPut(bytesOf(name), v[:]); err != nil {
		return nil, err
	}
	if id >= tx.meta.nextDB {
		tx.meta.nextDB = id + 1
	}
	db := tx.addDB(DB{tx: tx, name: name, id: id, root: pg, orig: pg})
	tx.logOp(logbuf.RecCreateDB, id, bytesOf(name), nil)
	tx.catChanged = true
	return db, nil
}

// catalogPut records a database in the catalog, making the catalog's
// first page if the environment has none yet.
func (tx *Tx) catalogPut(name, entry []byte) error {
	if tx.meta.root == 0 {
		pg, _, err := tx.newPage(pageLeaf)
		if err != nil {
			return err
		}
		tx.meta.root = pg
	}
	return tx.treePut(&tx.meta.root, name, entry)
}

// CreateDBIfNotExists returns the named database, creating it when absent.
func (tx *Tx) CreateDBIfNotExists(name string) (*DB, error) {
	if err := tx.checkWrite(); err != nil {
		return nil, err
	}
	if db := tx.DB(name); db != nil {
		return db, nil
	}
	return tx.CreateDB(name)
}

// DropDB deletes a database and all its pages.
func (tx *Tx) DropDB(name string) error {
	if err := tx.checkWrite(); err != nil {
		return err
	}
	db := tx.DB(name)
	if db == nil {
		if tx.err != nil {
			return tx.err
		}
		return fmt.Errorf("inmem: drop %q: %w", name, ErrDBNotFound)
	}
	err := tx.dropDB(db)
	tx.setErr(err)
	return err
}

func (tx *Tx) dropDB(db *DB) error {
	if err := tx.freeTree(db.root, 0); err != nil {
		return err
	}
	if _, err := tx.treeDelete(&tx.meta.root, bytesOf(db.name)); err != nil {
		return err
	}
	db.dropped = true
	tx.mods++
	tx.logOp(logbuf.RecDropDB, db.id, bytesOf(db.name), nil)
	tx.catChanged = true
	return nil
}

// logOp buffers one redo record (header completed at commit).
func (tx *Tx) logOp(typ uint8, db uint32, k, v []byte) {
	tx.changed = true
	if tx.applying {
		return
	}
	e := tx.env
	start := len(e.redo)
	e.redo = append(e.redo, make([]byte, logbuf.HeaderSize)...)
	e.redo = appendRedoBody(e.redo, db, k, v)
	binary.LittleEndian.PutUint32(e.redo[start:], uint32(len(e.redo)-start))
	e.redo[start+4] = typ
	tx.nrec++
}

// Name is the database's name.
func (db *DB) Name() string { return db.name }

// ID is the database's id, as carried by redo records.
func (db *DB) ID() uint32 { return db.id }

// Get returns the value of k, or nil when absent. The slice aliases the pool.
func (db *DB) Get(k []byte) []byte {
	tx := db.tx
	if tx.closed || db.dropped {
		return nil
	}
	v, err := tx.get(db.root, k)
	if err != nil {
		tx.setErr(err)
		return nil
	}
	return v
}

func (db *DB) checkKV(k, v []byte) error {
	ps := db.tx.ps
	if len(k) == 0 {
		return ErrKeyEmpty
	}
	if len(k) > maxKey(ps) {
		return fmt.Errorf("inmem: key of %d bytes, limit %d: %w", len(k), maxKey(ps), ErrKeyTooLarge)
	}
	if len(v) > MaxValueSize {
		return fmt.Errorf("inmem: value of %d bytes, limit %d: %w", len(v), MaxValueSize, ErrValueTooLarge)
	}
	return nil
}

// Put stores v under k.
func (db *DB) Put(k, v []byte) error {
	tx := db.tx
	if err := tx.checkWrite(); err != nil {
		return err
	}
	if db.dropped {
		return fmt.Errorf("inmem: put into dropped database %q: %w", db.name, ErrDBNotFound)
	}
	if err := db.checkKV(k, v); err != nil {
		return err
	}
	if err := tx.treePut(&db.root, k, v); err != nil {
		tx.setErr(err)
		return err
	}
	tx.mods++
	tx.logOp(logbuf.RecPut, db.id, k, v)
	return nil
}

// Delete removes k; deleting an absent key is not an error.
func (db *DB) Delete(k []byte) error {
	tx := db.tx
	if err := tx.checkWrite(); err != nil {
		return err
	}
	if db.dropped {
		return fmt.Errorf("inmem: delete from dropped database %q: %w", db.name, ErrDBNotFound)
	}
	if len(k) == 0 || len(k) > maxKey(tx.ps) {
		return nil
	}
	found, err := tx.treeDelete(&db.root, k)
	if err != nil {
		tx.setErr(err)
		return err
	}
	if found {
		tx.mods++
		tx.logOp(logbuf.RecDelete, db.id, k, nil)
	}
	return nil
}

// Cursor returns a cursor over the database.
func (db *DB) Cursor() *Cursor {
	c := db.tx.cursorOn(db.root)
	c.db = db
	return c
}
