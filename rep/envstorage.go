package rep

import (
	"errors"
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
)

// EnvStorage adapts one site's inmem environment and its ckpt.Checkpointer
// to Storage, and performs a node's Ready against them, so every driver (the
// board runtime, the simulator) does the environment work the same way:
//
//   - internal init: Begin starts an inmem.Import from the snapshot meta,
//     Pages are stored, Finish swaps the imported environment in (with a new
//     Checkpointer whose first checkpoint is the imported state);
//   - RollbackTo restores the checkpoint snapshot and redoes the log up to
//     the target (ckpt.RollbackTo; below the checkpoint it fails and the node
//     falls back to internal init);
//   - Apply appends whole transactions through ApplyEncoded; a checkpoint
//     record among them pins a candidate checkpoint at exactly the master's
//     LSN, promoted like the master's once it is durable;
//   - NewGen sets the generation and appends the RecNewGen commit;
//   - a master takes checkpoints by the ckpt.Policy; every site promotes a
//     checkpoint only once Ready.CheckpointOK (what the master's ack policy
//     made durable) covers it, so no site rolls back below a checkpoint under
//     QUORUM or stronger.
//
// It is not safe for concurrent use; the driver serialises it with the node.
type EnvStorage struct {
	env     *inmem.Env
	ck      *ckpt.Checkpointer
	policy  ckpt.Policy
	opt     inmem.Options
	now     func() time.Time
	imp     *inmem.Import
	commits []uint64 // scratch for VerifyPoints
	scratch []byte
}

// ErrInitOrder: the node handed out pages or a finish without a begin.
var ErrInitOrder = errors.New("rep: internal init pages or finish without a begin; the init restarts")

// NewEnvStorage wraps env with a new Checkpointer (its current state is the
// first checkpoint). opt creates the environment an internal init imports
// into (the group's page, pool and log sizes; opt.Now, if set, is the clock
// for the policy's Interval). The caller keeps owning env (see Apply for
// when it is replaced) and calls Close.
func NewEnvStorage(env *inmem.Env, opt inmem.Options, policy ckpt.Policy) *EnvStorage {
	s := &EnvStorage{opt: opt, policy: policy, now: opt.Now}
	if s.now == nil {
		s.now = time.Now
	}
	s.reset(env)
	return s
}

// Env returns the current environment (it changes after an internal init).
func (s *EnvStorage) Env() *inmem.Env { return s.env }

// Checkpointer returns the current environment's checkpointer.
func (s *EnvStorage) Checkpointer() *ckpt.Checkpointer { return s.ck }

func (s *EnvStorage) reset(env *inmem.Env) {
	if s.ck != nil {
		s.ck.Close()
	}
	s.env = env
	s.ck = ckpt.New(env, s.policy)
}

// Close releases the checkpoints and any import in progress (not the
// environment, which the caller owns).
func (s *EnvStorage) Close() {
	if s.ck != nil {
		s.ck.Close()
		s.ck = nil
	}
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
	s.ck.SetMaster(master)
	if in := rd.Init; in != nil {
		if err := s.initStep(in, &res); err != nil {
			return res, err
		}
	}
	if rd.HasRollback {
		if err := s.ck.RollbackTo(rd.RollbackTo); err != nil {
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
	if rd.CheckpointOK > 0 {
		// A master takes checkpoints by the policy; master and replica alike
		// promote one (a replica's was pinned where the master's record
		// arrived) once it is durable.
		ok, err := s.ck.Maybe(s.now(), rd.CheckpointOK)
		if err != nil {
			return res, fmt.Errorf("rep: checkpoint (durable up to %d): %w", rd.CheckpointOK, err)
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
	s.reset(env)
	res.Replaced = old
	return nil
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
func (s *EnvStorage) CheckpointLSN() uint64  { return s.ck.LSN() }

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
	sn := s.ck.Snapshot()
	if sn == nil {
		return nil, ErrNoSnapshot
	}
	return sn, nil
}

var _ Storage = (*EnvStorage)(nil)
