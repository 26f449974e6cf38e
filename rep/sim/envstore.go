//go:build simrep

package sim

import (
	"errors"
	"fmt"

	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
	"github.com/seed61e250c8/boardha/rep"
)

// envStore adapts one site's inmem environment to rep.Storage and performs
// the checkpoint and rollback work rep hands to the driver: the master
// checkpoints (inmem.Checkpoint: snapshot pinned, RecCheckpoint logged) every
// KBytes of log, but only at an LSN its ack policy made durable
// (Ready.CheckpointOK); replicas checkpoint when the master's RecCheckpoint
// arrives (inmem's checkpoint hook); a rollback restores the checkpoint
// snapshot and redoes the log up to the target (inmem.Env.Rollback).
type envStore struct {
	env     *inmem.Env
	kbytes  int
	snap    *inmem.Snapshot // the promoted checkpoint (LSN of the base state at boot)
	cand    *inmem.Snapshot // master: a checkpoint taken, not yet durable
	ckptLSN uint64
	commits []uint64 // scratch for VerifyPoints

	checkpoints *int // counts checkpoints taken, master and replica alike
}

func newEnvStore(env *inmem.Env, kbytes int, count *int) (*envStore, error) {
	s := &envStore{kbytes: kbytes, checkpoints: count}
	return s, s.reset(env)
}

// reset points the store at a new environment (after internal init the
// imported environment replaces the old one under the same node).
func (s *envStore) reset(env *inmem.Env) error {
	s.close()
	s.env = env
	snap, err := env.PinSnapshot()
	if err != nil {
		return fmt.Errorf("pin the initial snapshot: %w", err)
	}
	s.promote(snap)
	env.SetCheckpointHook(func(sn *inmem.Snapshot, rec logbuf.Record) {
		// The master's checkpoint record reached this replica: checkpoint
		// here at the same state so rollbacks and exports start from it.
		if s.cand != nil {
			s.cand.Release()
			s.cand = nil
		}
		s.promote(sn)
		*s.checkpoints++
	})
	return nil
}

func (s *envStore) promote(sn *inmem.Snapshot) {
	if s.snap != nil {
		s.snap.Release()
	}
	s.snap = sn
	s.ckptLSN = sn.LSN()
	s.env.Log().Retain(s.ckptLSN)
}

func (s *envStore) close() {
	if s.cand != nil {
		s.cand.Release()
		s.cand = nil
	}
	if s.snap != nil {
		s.snap.Release()
		s.snap = nil
	}
}

// maybeCheckpoint is the master's kilobyte policy. A checkpoint can only be
// taken of the current state (its record must sit at the LSN it describes),
// so the master takes a candidate every KBytes of log and promotes it (lets
// the log reclaim what precedes it, releases the previous snapshot) only once
// its ack policy made it durable: replicas then never have to roll back
// below it under QUORUM or stronger.
func (s *envStore) maybeCheckpoint(durable uint64) (bool, error) {
	if s.cand != nil && durable >= s.cand.LSN() {
		s.promote(s.cand)
		s.cand = nil
		*s.checkpoints++
		return true, nil
	}
	if s.cand != nil || s.env.Log().End()-s.ckptLSN < uint64(s.kbytes)<<10 {
		return false, nil
	}
	sn, _, err := s.env.Checkpoint()
	if err != nil {
		return false, err
	}
	s.cand = sn
	return false, nil
}

// rollback restores the checkpoint and redoes the log up to lsn.
func (s *envStore) rollback(lsn uint64) error {
	if lsn < s.ckptLSN {
		return fmt.Errorf("rollback to %d below the checkpoint at %d: internal init required", lsn, s.ckptLSN)
	}
	if s.cand != nil && lsn < s.cand.LSN() {
		s.cand.Release()
		s.cand = nil
	}
	return s.env.Rollback(s.snap, lsn)
}

func toRep(ci inmem.CommitInfo) rep.CommitInfo {
	return rep.CommitInfo{LSN: ci.LSN, End: ci.End, Gen: ci.Gen, Txn: ci.Txn, Chain: ci.Chain}
}

func goneOr(err error) error {
	if errors.Is(err, logbuf.ErrLogGone) {
		return fmt.Errorf("%w: %w", rep.ErrLogGone, err)
	}
	return err
}

func (s *envStore) EndLSN() uint64             { return s.env.Log().End() }
func (s *envStore) Gen() uint32                { return s.env.Gen() }
func (s *envStore) LastCommit() rep.CommitInfo { return toRep(s.env.LastCommit()) }
func (s *envStore) CheckpointLSN() uint64      { return s.ckptLSN }

func (s *envStore) CommitAt(lsn uint64) (rep.CommitInfo, error) {
	ci, err := s.env.CommitAt(lsn)
	if err != nil {
		return rep.CommitInfo{}, goneOr(err)
	}
	return toRep(ci), nil
}

func (s *envStore) ReadLog(from uint64, maxBytes int, dst []byte) ([]byte, uint64, error) {
	// recs may alias the ring (valid until overwritten): copy them out now.
	recs, next, err := s.env.Log().ReadEncoded(from, maxBytes, nil)
	if err != nil {
		return dst, from, goneOr(err)
	}
	return append(dst, recs...), next, nil
}

// VerifyPoints walks the log's commit records below before and picks the
// newest, then 1, 2, 4, ... commits further back.
func (s *envStore) VerifyPoints(before uint64, max int, dst []rep.CommitInfo) ([]rep.CommitInfo, error) {
	log := s.env.Log()
	s.commits = s.commits[:0]
	it := log.Iter(log.Begin())
	for it.Next() {
		r := it.Record()
		if r.LSN >= before {
			break
		}
		if r.Type == logbuf.RecCommit {
			s.commits = append(s.commits, r.LSN)
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, logbuf.ErrLogGone) {
		return dst, err
	}
	step, got := 1, 0
	for i := len(s.commits) - 1; i >= 0 && got < max; i -= step {
		ci, err := s.env.CommitAt(s.commits[i])
		if err != nil {
			if errors.Is(err, logbuf.ErrLogGone) {
				break
			}
			return dst, err
		}
		dst = append(dst, toRep(ci))
		got++
		if got > 1 {
			step *= 2
		}
	}
	return dst, nil
}

func (s *envStore) Snapshot() (rep.Snapshot, error) {
	if s.snap == nil {
		return nil, rep.ErrNoSnapshot
	}
	return s.snap, nil
}

var _ rep.Storage = (*envStore)(nil)
