package rep

// Storage is the read-only view of the local environment that the protocol
// needs. The node never writes through it: every change is handed to the
// driver in Ready, and the node re-reads Storage in Advance to learn what the
// driver actually did (so a failed apply is noticed, never assumed).
//
// Implementations must be deterministic for a given environment state: the
// simulator replays runs from a seed.
type Storage interface {
	// EndLSN is the LSN just past the last record in the local log.
	EndLSN() uint64
	// Gen is the environment's current generation.
	Gen() uint32
	// LastCommit describes the newest commit record (zero if none ever).
	LastCommit() CommitInfo
	// CommitAt returns the commit record at lsn; errors.Is(err, ErrLogGone) if
	// lsn is older than the log holds; any other error if lsn is not a commit.
	CommitAt(lsn uint64) (CommitInfo, error)
	// ReadLog appends whole encoded records starting at from, at most maxBytes
	// (at least one record if from < EndLSN), to dst; next is the LSN after them.
	// errors.Is(err, ErrLogGone) if from is older than the log holds.
	ReadLog(from uint64, maxBytes int, dst []byte) (recs []byte, next uint64, err error)
	// VerifyPoints appends up to max commit points with LSN < before, newest
	// first, spaced increasingly far apart (1, 2, 4, ... commits back), to dst.
	VerifyPoints(before uint64, max int, dst []CommitInfo) ([]CommitInfo, error)
	// CheckpointLSN is the LSN of the last promoted checkpoint: rolling back
	// below it needs internal init.
	CheckpointLSN() uint64
	// Snapshot returns the pinned checkpoint snapshot to export for internal
	// init (ErrNoSnapshot if none).
	Snapshot() (Snapshot, error)
}

// Snapshot is a consistent, pinned page image at a checkpoint.
type Snapshot interface {
	LSN() uint64
	Meta() []byte
	PageList() []uint64
	ReadPage(pgno uint64, dst []byte) ([]byte, error)
	// Txid identifies the snapshot's state among this master's; 0 if the
	// storage cannot tell which pages two snapshots share (then a resumed
	// init keeps none).
	Txid() uint64
	// PageTxid is the transaction that wrote page pgno. A page of a later
	// snapshot written no later than an earlier snapshot's Txid is the
	// page that snapshot held at that number.
	PageTxid(pgno uint64) (uint64, error)
}
