package board

import "errors"

// The sentinel errors of the board API. Every error a Board method returns
// that callers are expected to act on wraps exactly one of these, so
// errors.Is works through any added context. Each message says what happened
// and what the caller should do about it.
var (
	// ErrNotMaster: the call needs the master (Update, ViewLeased) and this
	// board is a replica or has no master yet. Use Apply to forward the
	// write, or wait for an EventMaster / EventNewMaster.
	ErrNotMaster = errors.New("board: this board is not the master; forward the write with Apply or retry on the master")

	// ErrLeaseExpired: the master does not hold unexpired lease grants from
	// a majority, so it cannot answer authoritatively (it may have been
	// partitioned away). Retry after the group settles or read with View.
	ErrLeaseExpired = errors.New("board: master lease expired, an authoritative read is not safe; retry once the group has a master with valid leases")

	// ErrLockout: the board is synchronising with a new master (verify,
	// rollback or internal init); operations are locked out until it is
	// done. Retry shortly or wait for EventStartupDone.
	ErrLockout = errors.New("board: locked out while synchronising with the master; retry after the board finishes catching up")

	// ErrHandleDead: a rollback removed transactions this handle had seen;
	// results obtained earlier may no longer exist. Re-read your state.
	ErrHandleDead = errors.New("board: state seen earlier was rolled back by a master change; discard cached results and re-read")

	// ErrOwnerGone: the board whose shared memory a Reader maps closed it,
	// replaced it (an internal init builds the new region under the same
	// name) or died; the Reader would only show a copy that no longer
	// changes. Close it and Attach again.
	ErrOwnerGone = errors.New("board: the board closed or replaced the shared memory this Reader maps (restart, internal init) or died; Close the Reader and Attach again")

	// ErrUnavail: no master could be reached (or no reply arrived) before
	// the deadline. Retry later; check Stat for the election state.
	ErrUnavail = errors.New("board: replication group unavailable (no reachable master); retry later or check the group with Stat")

	// ErrJoinFailure: this board needs an internal init to catch up but
	// NoAutoInit is set. Restart the board with empty memory or clear
	// NoAutoInit.
	ErrJoinFailure = errors.New("board: cannot join the group without an internal init and NoAutoInit is set; restart with empty memory or allow auto init")

	// ErrDupMaster: another board claims mastership in the same gen; this
	// board stepped down and an election follows. Retry the write on the
	// winner.
	ErrDupMaster = errors.New("board: duplicate master detected, this board stepped down; retry once a new master is elected")

	// ErrPoolFull: the page pool is exhausted; the transaction was aborted
	// and nothing partial was committed. Delete data or raise PoolSize.
	ErrPoolFull = errors.New("board: page pool full, transaction aborted; delete data or raise Config.PoolSize")

	// ErrLogFull: the in-memory log has no reclaimable space (a checkpoint
	// or a lagging replica still needs it); the transaction was aborted.
	// Retry after replicas catch up, or raise Config.LogSize.
	ErrLogFull = errors.New("board: log buffer full, transaction aborted; retry after replicas catch up or raise Config.LogSize")

	// ErrClosed: the Board was closed (or never started). Open a new one.
	ErrClosed = errors.New("board: board is closed; open a new Board")

	// ErrInvalidConfig: Open rejected the Config; the wrapping message
	// names the field and its allowed range.
	ErrInvalidConfig = errors.New("board: invalid configuration")

	// ErrNotStarted: the call needs a started board; call Start first.
	ErrNotStarted = errors.New("board: board not started; call Start first")
)
