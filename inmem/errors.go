package inmem

import (
	"errors"

	"github.com/seed61e250c8/boardha/logbuf"
	"github.com/seed61e250c8/boardha/shm"
)

// Errors. The pool, log and writer-lock errors are the lower layers' sentinels, so
// errors.Is matches both inmem.ErrPoolFull and shm.ErrPoolFull.
var (
	// ErrPoolFull: the page pool has no room for the transaction, which was aborted;
	// earlier commits are intact. Delete data, checkpoint so old snapshots release
	// pages, or size the pool larger.
	ErrPoolFull = shm.ErrPoolFull
	// ErrLogFull: the log buffer cannot take the transaction's records, which was
	// aborted. Checkpoint (so the log can reclaim) or size the log larger.
	ErrLogFull = logbuf.ErrLogFull
	// ErrWriterActive: another live process or transaction holds the writer role.
	ErrWriterActive = shm.ErrWriterActive

	ErrKeyTooLarge   = errors.New("inmem: key too large; keys are limited to MaxKeySize bytes (1 KiB with 4 KiB pages)")
	ErrValueTooLarge = errors.New("inmem: value too large; values are limited to MaxValueSize bytes, split larger data over several keys")
	ErrKeyEmpty      = errors.New("inmem: empty key; keys must be at least one byte")
	ErrDBNotFound    = errors.New("inmem: database not found; create it with Tx.CreateDB first")
	ErrDBExists      = errors.New("inmem: database already exists; use Tx.DB or CreateDBIfNotExists")
	ErrTxClosed      = errors.New("inmem: transaction already committed or aborted; begin a new one")
	ErrReadOnlyTx    = errors.New("inmem: write in a read-only transaction; use Env.Update or Begin(true)")
	ErrCorrupt       = errors.New("inmem: corrupt data in the region; the environment cannot be trusted, rebuild it by internal init")
	ErrClosed        = errors.New("inmem: environment closed; open it again")
	ErrChainMismatch = errors.New("inmem: commit chain differs from the local log; the logs diverged, roll back or internally initialize")
	ErrBadRecords    = errors.New("inmem: malformed record batch; apply only whole transactions in LSN order")
	ErrLayout        = errors.New("inmem: page outside the importing pool's tree area; create the importer with the master's PageSize, PoolSize and LogSize")
	ErrNotCommit     = errors.New("inmem: no commit record at that LSN; pass the LSN a CommitInfo reported")
	ErrBusy          = errors.New("inmem: could not pin a snapshot while the writer kept committing; retry")
	ErrOwnerGone     = errors.New("inmem: the region's owner closed it, replaced it (internal init, restart) or died, so it no longer holds current data; close this attachment and attach again")
	ErrTxOpen        = errors.New("inmem: a write transaction is still open; commit or abort it first")
	ErrBadOptions    = errors.New("inmem: invalid options; fix the configuration")
	ErrImporting     = errors.New("inmem: an internal init is importing a master's pages into this environment; writes are refused until it finishes")
	// ErrNotInPlace: ImportInPlace cannot import into this environment (it
	// holds databases, or its layout or state differs from the snapshot's);
	// import into a new region with NewImport instead.
	ErrNotInPlace = errors.New("inmem: cannot import into this environment in place; use NewImport")
)
