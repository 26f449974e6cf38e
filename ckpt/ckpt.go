// Package ckpt takes kilobyte-triggered checkpoints of an inmem environment.
//
// A checkpoint pins a copy-on-write snapshot and appends a RecCheckpoint record at
// the snapshot's LSN. It is first a candidate; it is promoted — the previous
// checkpoint's snapshot released and the log allowed to reclaim everything before
// it — only once the caller reports the LSN durable (the master passes what its ack
// policy made durable, so replicas never need to roll back below a checkpoint).
// Replicas do not write checkpoint records: the master's record, applied through
// inmem.Env.ApplyEncoded, pins the replica's snapshot at exactly that LSN, and
// Observe (or a durable LSN past it) promotes it.
//
// Rollback to an LSN at or after the checkpoint restores the checkpoint snapshot and
// redoes the log up to that LSN; below it the board must be internally initialized.
package ckpt

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
)

// ErrBelowCheckpoint: the rollback target precedes the checkpoint, whose older log
// may already be overwritten.
var ErrBelowCheckpoint = errors.New("ckpt: rollback target is below the last checkpoint; internal init required (copy a snapshot from the master)")

// Policy says when to checkpoint: after KBytes KiB of log since the last
// checkpoint, or after Interval (if > 0) when any log was written.
type Policy struct {
	KBytes   int
	Interval time.Duration
}

// Stats counts checkpoint activity.
type Stats struct {
	Candidates uint64 // snapshots pinned as candidates (own or observed)
	Promoted   uint64
	Replaced   uint64 // candidates dropped for a newer one before promotion
	Rollbacks  uint64
	Missed     uint64 // Observe calls for a record this board has no snapshot for
}

// Checkpointer manages one environment's checkpoints. Its methods may be called
// from any goroutine; the environment's writer lock orders them with commits.
type Checkpointer struct {
	env *inmem.Env
	p   Policy

	mu          sync.Mutex
	master      bool
	promoted    *inmem.Snapshot
	promotedLSN uint64
	cand        *inmem.Snapshot
	candLSN     uint64
	lastLSN     uint64 // LSN of the newest checkpoint taken (candidate or promoted)
	lastEnd     uint64 // log end right after it (past its own record)
	lastTime    time.Time
	stats       Stats

	// The apply hook runs under the environment's writer lock, so it only drops
	// the snapshot here; other methods collect it (no lock-order cycle).
	hmu      sync.Mutex
	incoming *inmem.Snapshot
}

// New starts checkpointing env. The current state becomes the initial checkpoint
// (rollback below it needs internal init). The checkpointer acts as master (it
// writes checkpoint records from Maybe) until SetMaster(false).
func New(env *inmem.Env, p Policy) *Checkpointer {
	c := &Checkpointer{env: env, p: p, master: true}
	if s, err := env.PinSnapshot(); err == nil {
		c.promoted, c.promotedLSN, c.lastLSN = s, s.LSN(), s.LSN()
		env.RetainLog(s.LSN())
	}
	env.SetCheckpointHook(c.hook)
	return c
}

// SetMaster switches between writing checkpoint records (master) and following
// the master's (replica).
func (c *Checkpointer) SetMaster(master bool) {
	c.mu.Lock()
	c.master = master
	c.mu.Unlock()
}

func (c *Checkpointer) hook(s *inmem.Snapshot, _ logbuf.Record) {
	c.hmu.Lock()
	old := c.incoming
	c.incoming = s
	c.hmu.Unlock()
	old.Release()
}

// collect moves a snapshot from the apply hook into the candidate slot; c.mu held.
func (c *Checkpointer) collect() {
	c.hmu.Lock()
	s := c.incoming
	c.incoming = nil
	c.hmu.Unlock()
	if s != nil {
		c.setCandidate(s)
	}
}

func (c *Checkpointer) setCandidate(s *inmem.Snapshot) {
	if c.cand != nil {
		c.cand.Release()
		c.stats.Replaced++
	}
	c.cand, c.candLSN, c.lastLSN = s, s.LSN(), s.LSN()
	c.stats.Candidates++
}

// promote makes the candidate the checkpoint; c.mu held.
func (c *Checkpointer) promote() {
	c.promoted.Release()
	c.promoted, c.promotedLSN = c.cand, c.candLSN
	c.cand = nil
	c.stats.Promoted++
	c.env.RetainLog(c.promotedLSN)
}

// Maybe takes a candidate checkpoint (master only) when the policy says so, and
// promotes the candidate once durableLSN reaches it. It reports whether a
// checkpoint was promoted.
func (c *Checkpointer) Maybe(now time.Time, durableLSN uint64) (bool, error) {
	c.mu.Lock()
	// A candidate durable now is promoted before a newer one (a checkpoint
	// record a replica applied since) replaces it: replacing it first would,
	// under a stream that brings a record between every two calls, never
	// promote anything, and the first checkpoint would keep the log and its
	// snapshot's pages for good.
	c.hmu.Lock()
	newer := c.incoming != nil
	c.hmu.Unlock()
	early := newer && c.cand != nil && durableLSN >= c.candLSN
	if early {
		c.promote()
	}
	c.collect()
	take := false
	if c.master {
		end := c.env.Log().End()
		if c.lastTime.IsZero() {
			c.lastTime = now
		}
		due := c.p.KBytes > 0 && end-c.lastLSN >= uint64(c.p.KBytes)<<10
		due = due || c.p.Interval > 0 && now.Sub(c.lastTime) >= c.p.Interval && end > max(c.lastLSN, c.lastEnd)
		// One candidate at a time: replacing a pending one whenever K KiB more
		// arrive would never promote anything under a steady ack lag.
		take = due && c.cand == nil
	}
	c.mu.Unlock()
	if take {
		// Outside c.mu: Checkpoint takes the writer lock (see hmu).
		s, _, err := c.env.Checkpoint()
		if err != nil {
			return false, fmt.Errorf("ckpt: taking a checkpoint: %w", err)
		}
		c.mu.Lock()
		c.setCandidate(s)
		c.lastTime = now
		c.lastEnd = c.env.Log().End()
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cand != nil && durableLSN >= c.candLSN {
		c.promote()
		return true, nil
	}
	return early, nil
}

// Observe tells a replica that the master's checkpoint record rec (already
// applied here) is in effect: the snapshot pinned when it was applied is promoted.
func (c *Checkpointer) Observe(rec logbuf.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collect()
	if rec.Type != logbuf.RecCheckpoint || rec.LSN <= c.promotedLSN && c.promoted != nil {
		return
	}
	if c.cand == nil || c.candLSN != rec.LSN {
		c.stats.Missed++
		return
	}
	c.promote()
}

// LSN is the promoted checkpoint's LSN.
func (c *Checkpointer) LSN() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.promotedLSN
}

// Snapshot is the promoted checkpoint's snapshot (for internal init export); it
// stays pinned until the next promotion or Close.
func (c *Checkpointer) Snapshot() *inmem.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.promoted
}

// Stats returns the counters.
func (c *Checkpointer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// RollbackTo returns the environment to its state at lsn: the newest checkpoint
// at or before lsn is restored and the log redone up to lsn (whole transactions),
// then truncated there. Below the promoted checkpoint: ErrBelowCheckpoint.
func (c *Checkpointer) RollbackTo(lsn uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collect()
	if c.promoted == nil || lsn < c.promotedLSN {
		return fmt.Errorf("ckpt: rollback to LSN %d, checkpoint at %d: %w", lsn, c.promotedLSN, ErrBelowCheckpoint)
	}
	s := c.promoted
	if c.cand != nil {
		if c.candLSN <= lsn {
			s = c.cand
		} else {
			// Its record is about to be truncated away.
			c.cand.Release()
			c.cand = nil
		}
	}
	if err := c.env.Rollback(s, lsn); err != nil {
		return fmt.Errorf("ckpt: rollback to LSN %d from checkpoint %d: %w", lsn, s.LSN(), err)
	}
	c.lastLSN = max(c.promotedLSN, c.candLSN)
	if c.cand == nil {
		c.lastLSN = c.promotedLSN
	}
	c.lastEnd = min(c.lastEnd, lsn)
	c.stats.Rollbacks++
	return nil
}

// Close releases the pinned snapshots and detaches from the environment.
func (c *Checkpointer) Close() {
	c.env.SetCheckpointHook(nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collect()
	c.cand.Release()
	c.promoted.Release()
	c.cand, c.promoted = nil, nil
}
