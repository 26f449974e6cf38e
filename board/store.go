package board

import (
	"errors"
	"fmt"

	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/logbuf"
	"github.com/seed61e250c8/boardha/rep"
)

// envStore adapts the board's environment to rep.Storage and does the
// checkpoint and rollback work rep hands the driver:
//   - the master takes a checkpoint candidate (inmem.Env.Checkpoint: snapshot
//     pinned, RecCheckpoint logged) every CheckpointKiB of log and promotes it
//     (the log may reclaim what precedes it, the previous snapshot is
//     released) only once Ready.CheckpointOK says its ack policy made it
//     durable, so replicas never roll back below a checkpoint under QUORUM;
//   - a replica checkpoints when the master's RecCheckpoint arrives (inmem's
//     checkpoint hook, called during ApplyEncoded at exactly that state);
//   - a rollback restores the checkpoint snapshot and redoes the log up to
//     the target (inmem.Env.Rollback); below the checkpoint rep asks for an
//     internal init instead.
//
// Only the loop goroutine uses it.
type envStore struct {
	env     *inmem.Env
	kbytes  int
	snap    *inmem.Snapshot // promoted checkpoint (the boot state at first)
	cand    *inmem.Snapshot // master: taken, not yet durable
	candAt  uint64          // the last commit before cand: durable once perm covers it
	ckptLSN uint64
	// usedAtCkpt: pages in use right after the last promotion.
	usedAtCkpt uint64
	commits    []uint64 // VerifyPoints scratch
	count      uint64   // checkpoints promoted
}

func newEnvStore(env *inmem.Env, kbytes int) (*envStore, error) {
	s := &envStore{kbytes: kbytes}
	return s, s.reset(env)
}

// reset points the store at env: at boot, and when an internal init swaps
// in the imported environment.
func (s *envStore) reset(env *inmem.Env) error {
	s.release()
	s.env = env
	snap, err := env.PinSnapshot()
	if err != nil {
		return fmt.Errorf("board: pinning the initial snapshot: %w", err)
	}
	s.promote(snap)
	env.SetCheckpointHook(func(sn *inmem.Snapshot, _ logbuf.Record) {
		if s.cand != nil {
			s.cand.Release()
			s.cand = nil
		}
		s.promote(sn)
	})
	return nil
}

func (s *envStore) promote(sn *inmem.Snapshot) {
	if s.snap != nil {
		s.snap.Release()
	}
	s.snap, s.ckptLSN = sn, sn.LSN()
	s.count++
	s.env.Log().Retain(s.ckptLSN)
}

func (s *envStore) release() {
	if s.cand != nil {
		s.cand.Release()
		s.cand = nil
	}
	if s.snap != nil {
		s.snap.Release()
		s.snap = nil
	}
}

// maybeCheckpoint is the master's kilobyte policy; durable is
// Ready.CheckpointOK. A checkpoint can only describe the current state (its
// record sits at the LSN it describes), so the candidate is taken when due
// and promoted once durable.
func (s *envStore) maybeCheckpoint(durable uint64) error {
	if s.cand == nil {
		if !s.due() {
			return nil
		}
		// The checkpoint record is not a commit (never acked itself): the
		// candidate is durable once the commit before it is.
		last := s.env.LastCommit().LSN
		sn, _, err := s.env.Checkpoint()
		if err != nil {
			return err
		}
		s.cand, s.candAt = sn, last
	}
	if durable < s.candAt {
		return nil
	}
	s.promote(s.cand)
	s.cand = nil
	// Not in promote: the checkpoint hook runs under inmem's writer lock,
	// which PageStats takes too. Only the master needs the figure.
	s.usedAtCkpt = s.env.PageStats().UsedPages
	return nil
}

// due says a checkpoint is needed: CheckpointKiB of log since the last one,
// or pool pressure. The pages each commit copies stay allocated while the
// checkpoint snapshot is pinned (about 3 pages per small commit), so with
// many small commits the garbage can outgrow the pool long before the log
// reaches CheckpointKiB; a new checkpoint lets it be reused. So: checkpoint
// too once a quarter of the pages free at the last checkpoint are used.
func (s *envStore) due() bool {
	since := s.env.Log().End() - s.ckptLSN
	if since >= uint64(s.kbytes)<<10 {
		return true
	}
	ps := s.env.PageStats()
	return since > 0 && ps.UsedPages > s.usedAtCkpt && ps.UsedPages-s.usedAtCkpt > (ps.TotalPages-min(s.usedAtCkpt, ps.TotalPages))/4
}

// rollback restores the checkpoint and redoes the log up to lsn.
func (s *envStore) rollback(lsn uint64) error {
	if lsn < s.ckptLSN {
		return fmt.Errorf("board: rollback to LSN %d is below the checkpoint at %d; internal init required", lsn, s.ckptLSN)
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
	// The records may alias the ring and be overwritten: copy them out.
	recs, next, err := s.env.Log().ReadEncoded(from, maxBytes, nil)
	if err != nil {
		return dst, from, goneOr(err)
	}
	return append(dst, recs...), next, nil
}

// VerifyPoints walks the commit records below before and picks the newest,
// then 1, 2, 4, ... commits further back.
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
