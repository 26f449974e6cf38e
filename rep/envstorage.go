//go:build repenv

package rep

import (
	"errors"
	"fmt"

	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
)

// EnvStorage adapts one site's inmem environment to Storage and performs a
// node's Ready against it, so every driver (the board runtime, the
// simulator) does the environment work the same way:
//
//   - internal init: Begin starts an inmem.Import from the snapshot meta,
//     Pages are stored, Finish swaps the imported environment in;
//   - RollbackTo restores the checkpoint snapshot and redoes the log up to
//     the target (below the checkpoint is an error: the node then inits);
//   - Apply appends whole transactions through ApplyEncoded;
//   - NewGen sets the generation and appends the RecNewGen commit;
//   - checkpoints: a master checkpoints every CheckpointKBytes of log, and
//     only when everything it holds is durable by its ack policy
//     (Ready.CheckpointOK); a replica checkpoints where the master's
//     RecCheckpoint record arrives (inmem's checkpoint hook), so both hold
//     the same checkpoints and a rollback never goes below a durable point.
//
// It is not safe for concurrent use; the driver serialises it with the node.
type EnvStorage struct {
	env     *inmem.Env
	opt     inmem.Options
	kbytes  int
	snap    *inmem.Snapshot // the promoted checkpoint
	ckptLSN uint64
	// cand is a checkpoint taken but not yet durable: promoted once the ack
	// policy covers candCommit, the last commit it includes.
	cand       *inmem.Snapshot
	candCommit uint64
	imp        *inmem.Import
	commits    []uint64 // scratch for VerifyPoints
	scratch    []byte

	// Checkpoints counts checkpoints taken (master) or observed (replica).
	Checkpoints uint64
}

// ErrInitOrder: the node handed out pages or a finish without a begin.
var ErrInitOrder = errors.New("rep: internal init pages or finish without a begin; the init restarts")

// NewEnvStorage wraps env. opt is used to create the environment an internal
// init imports into (same page, pool and log sizes as the group's); the
// caller keeps owning env (see Apply for when it is replaced).
func NewEnvStorage(env *inmem.Env, opt inmem.Options, checkpointKBytes int) (*EnvStorage, error) {
	if checkpointKBytes <= 0 {
		checkpointKBytes = 1024
	}
	s := &EnvStorage{opt: opt, kbytes: checkpointKBytes}
	if err := s.reset(env); err != nil {
		return nil, err
	}
	return s, nil
}

// Env returns the current environment (it changes after an internal init).
func (s *EnvStorage) Env() *inmem.Env { return s.env }

// reset points the storage at env and pins its current state as the
// checkpoint to restore and export.
func (s *EnvStorage) reset(env *inmem.Env) error {
	s.releaseSnap()
	s.env = env
	snap, err := env.PinSnapshot()
	if err != nil {
		return fmt.Errorf("rep: pin the initial checkpoint snapshot: %w", err)
	}
	s.promote(snap)
	env.SetCheckpointHook(func(sn *inmem.Snapshot, _ logbuf.Record) {
		s.promote(sn)
		s.Checkpoints++
	})
	return nil
}

func (s *EnvStorage) promote(sn *inmem.Snapshot) {
	if s.snap != nil {
		s.snap.Release()
	}
	s.snap = sn
	s.ckptLSN = sn.LSN()
	s.env.Log().Retain(s.ckptLSN)
}

func (s *EnvStorage) releaseSnap() {
	if s.snap != nil {
		s.snap.Release()
		s.snap = nil
	}
	if s.cand != nil {
		s.cand.Release()
		s.cand = nil
	}
}

// Close releases the pinned snapshot and any import in progress (not the
// environment, which the caller owns).
func (s *EnvStorage) Close() {
	s.releaseSnap()
	if s.imp != nil {
		s.imp.Abort()
		s.imp = nil
	}
}

// ApplyResult says what Apply changed beyond the environment's content.
type ApplyResult struct {
	// Replaced is the environment an internal init replaced; the caller
	// closes it once nothing uses it any more. Env() is the new one.
	Replaced *inmem.Env
	// NewGen is the RecNewGen commit appended for Ready.NewGen.
	NewGen    inmem.CommitInfo
	HasNewGen bool
	// Checkpointed reports a master checkpoint taken for CheckpointOK.
	Checkpointed bool
}

// Apply performs rd's environment work in the order the node requires:
// Init, RollbackTo, Apply, NewGen, then (master) a checkpoint if due. It
// stops at the first failure and returns it; the node notices in Advance
// (it re-reads the storage) and recovers, so the driver still calls Advance.
func (s *EnvStorage) Apply(rd *Ready, master bool) (ApplyResult, error) {
	var res ApplyResult
	if in := rd.Init; in != nil {
		if err := s.initStep(in, &res); err != nil {
			return res, err
		}
	}
	if rd.HasRollback {
		if rd.RollbackTo < s.ckptLSN {
			return res, fmt.Errorf("rep: rollback to %d below the checkpoint at %d: %w", rd.RollbackTo, s.ckptLSN, ErrLogGone)
		}
		if err := s.env.Rollback(s.snap, rd.RollbackTo); err != nil {
			return res, fmt.Errorf("rep: rollback to %d: %w", rd.RollbackTo, err)
		}
	}
	if len(rd.Apply) > 0 {
		if _, err := s.env.ApplyEncoded(rd.Apply); err != nil {
			return res, fmt.Errorf("rep: apply %d bytes of log at %d: %w", len(rd.Apply), s.env.Log().End(), err)
		}
	}
	if rd.NewGen != 0 {
		s.env.SetGen(rd.NewGen)
		ci, err := s.env.AppendNewGen(rd.NewGen)
		if err != nil {
			return res, fmt.Errorf("rep: append the new-generation record for gen %d: %w", rd.NewGen, err)
		}
		res.NewGen, res.HasNewGen = ci, true
	}
	if master && rd.CheckpointOK > 0 {
		ok, err := s.MaybeCheckpoint(rd.CheckpointOK)
		if err != nil {
			return res, err
		}
		res.Checkpointed = ok
	}
	return res, nil
}

func (s *EnvStorage) initStep(in *InitAction, res *ApplyResult) error {
	if in.Begin {
		if s.imp != nil {
			s.imp.Abort()
		}
		im, err := inmem.NewImport(s.opt, in.Meta)
		if err != nil {
			s.imp = nil
			return fmt.Errorf("rep: begin internal init from checkpoint %d: %w", in.CkptLSN, err)
		}
		s.imp = im
	}
	if s.imp == nil {
		if len(in.Pages) > 0 || in.Finish {
			return ErrInitOrder
		}
		return nil
	}
	for _, p := range in.Pages {
		if err := s.imp.PutPage(p.Pgno, p.Data); err != nil {
			return fmt.Errorf("rep: internal init page %d: %w", p.Pgno, err)
		}
	}
	if !in.Finish {
		return nil
	}
	env, err := s.imp.Finish()
	s.imp = nil
	if err != nil {
		return fmt.Errorf("rep: finish internal init at checkpoint %d: %w", in.CkptLSN, err)
	}
	old := s.env
	if err := s.reset(env); err != nil {
		return err
	}
	res.Replaced = old
	return nil
}

// MaybeCheckpoint is the master's kilobyte policy: once CheckpointKBytes of
// log passed since the last checkpoint it takes a candidate (snapshot pinned,
// RecCheckpoint logged), and promotes it to be the checkpoint that rollbacks
// restore and internal inits export only when durable (the ack policy's
// permanent LSN) covers it, so replicas never roll back below it under
// QUORUM or stronger. It reports whether a checkpoint was promoted.
func (s *EnvStorage) MaybeCheckpoint(durable uint64) (bool, error) {
	if s.cand == nil {
		end := s.env.Log().End()
		if end-s.ckptLSN < uint64(s.kbytes)<<10 {
			return false, nil
		}
		last := s.env.LastCommit().LSN
		sn, _, err := s.env.Checkpoint()
		if err != nil {
			return false, fmt.Errorf("rep: checkpoint at %d: %w", end, err)
		}
		s.cand, s.candCommit = sn, last
	}
	if durable < s.candCommit {
		return false, nil
	}
	sn := s.cand
	s.cand = nil
	s.promote(sn)
	s.Checkpoints++
	return true, nil
}

func goneOr(err error) error {
	if errors.Is(err, logbuf.ErrLogGone) {
		return fmt.Errorf("%w: %w", ErrLogGone, err)
	}
	return err
}

// Storage.

func (s *EnvStorage) EndLSN() uint64         { return s.env.Log().End() }
func (s *EnvStorage) Gen() uint32            { return s.env.Gen() }
func (s *EnvStorage) LastCommit() CommitInfo { return s.env.LastCommit() }
func (s *EnvStorage) CheckpointLSN() uint64  { return s.ckptLSN }

func (s *EnvStorage) CommitAt(lsn uint64) (CommitInfo, error) {
	ci, err := s.env.CommitAt(lsn)
	if err != nil {
		return CommitInfo{}, goneOr(err)
	}
	return ci, nil
}

func (s *EnvStorage) ReadLog(from uint64, maxBytes int, dst []byte) ([]byte, uint64, error) {
	// A range that wraps the ring is copied into scratch; a contiguous one
	// comes back in place (never keep that slice: it is the log itself).
	if cap(s.scratch) < maxBytes {
		s.scratch = make([]byte, 0, maxBytes)
	}
	recs, next, err := s.env.Log().ReadEncoded(from, maxBytes, s.scratch[:0])
	if err != nil {
		return dst, from, goneOr(err)
	}
	return append(dst, recs...), next, nil
}

// VerifyPoints walks the commit records below before and picks the newest,
// then 1, 2, 4, ... commits further back.
func (s *EnvStorage) VerifyPoints(before uint64, max int, dst []CommitInfo) ([]CommitInfo, error) {
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
		return dst, fmt.Errorf("rep: scan the log for verify points: %w", err)
	}
	step := 1
	for i := len(s.commits) - 1; i >= 0 && len(dst) < max; i -= step {
		ci, err := s.env.CommitAt(s.commits[i])
		if err != nil {
			if errors.Is(err, logbuf.ErrLogGone) {
				break
			}
			return dst, fmt.Errorf("rep: verify point at %d: %w", s.commits[i], err)
		}
		dst = append(dst, ci)
		step *= 2
	}
	return dst, nil
}

func (s *EnvStorage) Snapshot() (Snapshot, error) {
	if s.snap == nil {
		return nil, ErrNoSnapshot
	}
	return s.snap, nil
}

var _ Storage = (*EnvStorage)(nil)
