package board

import (
	"time"

	"github.com/seed61e250c8/boardha/shm"
)

// A process attached to the board's region (Attach) that stays in one view
// keeps every page freed after its snapshot from reuse, and the pool fills:
// the writes fail with ErrPoolFull long after the reader got stuck. Stat
// shows the readers; readerWatch also says so in the log while there is
// still time, once per stuck snapshot.
// readerWatchEvery is how often the board looks at its readers; a snapshot
// held for Config.ReaderHoldWarn is then found within a second of it.
const readerWatchEvery = time.Second

// readerWatch remembers, for each attached process reading, the snapshot
// it read at the last look and since when.
type readerWatch struct {
	next time.Duration // when to look again
	held map[int]heldSnapshot
}

type heldSnapshot struct {
	txid   uint64
	since  time.Duration
	warned bool
}

// stuckReader is an attached process found holding one snapshot for the
// watch's threshold or more.
type stuckReader struct {
	pid  int
	txid uint64
	held time.Duration
}

// observe takes the reader table as it is at now and returns the readers
// whose snapshot has been held for warnAfter since this watch first saw
// it, each once. A reader that moved to another snapshot or let go starts
// over.
func (w *readerWatch) observe(now, warnAfter time.Duration, readers []shm.ReaderInfo) []stuckReader {
	if len(readers) == 0 {
		w.held = nil
		return nil
	}
	var stuck []stuckReader
	seen := make(map[int]heldSnapshot, len(readers))
	for _, r := range readers {
		if !r.HasTxid {
			continue
		}
		h, ok := w.held[r.PID]
		if !ok || h.txid != r.Txid {
			h = heldSnapshot{txid: r.Txid, since: now}
		}
		if !h.warned && now-h.since >= warnAfter {
			h.warned = true
			stuck = append(stuck, stuckReader{pid: r.PID, txid: r.Txid, held: now - h.since})
		}
		seen[r.PID] = h
	}
	w.held = seen
	return stuck
}
