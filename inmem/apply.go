package inmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/seed61e250c8/boardha/logbuf"
)

// ApplyEncoded applies whole transactions received from the master (encoded log
// records in LSN order, starting at this log's end) through the same tree code as
// local writes, and appends the records to the local log unchanged, so both logs
// hold the same bytes at the same LSNs. A RecCheckpoint between transactions is
// appended as is (and handed to the checkpoint hook). The batch is validated first:
// a malformed batch, an LSN gap or a trailing partial transaction applies nothing.
// A failure in a later transaction (pool full) leaves the earlier ones applied;
// the returned CommitInfo is the last one applied. The transactions between two
// checkpoint records of a batch become visible together: readers see the state
// after the last of them, not each one.
func (e *Env) ApplyEncoded(recs []byte) (CommitInfo, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.writable(); err != nil {
		return CommitInfo{}, err
	}
	if end := e.log.End(); end != e.cur.lsn {
		return e.last, fmt.Errorf("inmem: log end %d differs from the tree's LSN %d: %w", end, e.cur.lsn, ErrCorrupt)
	}
	whole, err := scanTxns(recs, e.cur.lsn)
	if err != nil {
		return e.last, err
	}
	if whole != len(recs) {
		return e.last, fmt.Errorf("inmem: batch of %d bytes ends inside a transaction at byte %d: %w", len(recs), whole, ErrBadRecords)
	}
	// Transactions between checkpoint records are applied as one tree
	// transaction: each page of a path is copied once per batch instead of
	// once per transaction. A failure in the merged transaction leaves
	// nothing of it; the batch is then applied transaction by transaction
	// from its start, so the earlier ones stay applied as documented.
	done, err := e.applyRun(recs, true, true)
	if err != nil && done < len(recs) {
		var n int
		n, err = e.applyRun(recs[done:], true, false)
		done += n
	}
	return e.last, err
}

// scanTxns validates records (framing, crc, LSN continuity from lsn) and returns
// how many leading bytes form whole transactions.
func scanTxns(recs []byte, lsn uint64) (int, error) {
	whole, inTxn := 0, false
	for pos := 0; pos < len(recs); {
		r, n, err := logbuf.DecodeRecord(recs[pos:])
		if err != nil {
			return whole, fmt.Errorf("inmem: record at byte %d (LSN %d): %w: %w", pos, lsn, ErrBadRecords, err)
		}
		if r.LSN != lsn {
			return whole, fmt.Errorf("inmem: record at byte %d has LSN %d, expected %d: %w", pos, r.LSN, lsn, ErrBadRecords)
		}
		switch r.Type {
		case logbuf.RecCheckpoint:
			if inTxn {
				return whole, fmt.Errorf("inmem: checkpoint record at LSN %d inside a transaction: %w", lsn, ErrBadRecords)
			}
		case logbuf.RecPut, logbuf.RecDelete, logbuf.RecCreateDB, logbuf.RecDropDB, logbuf.RecNewGen:
			inTxn = true
		case logbuf.RecCommit:
			inTxn = false
		default:
			return whole, fmt.Errorf("inmem: unknown record type %d at LSN %d: %w", r.Type, lsn, ErrBadRecords)
		}
		pos += n
		lsn += uint64(n)
		if !inTxn {
			whole = pos
		}
	}
	return whole, nil
}

// applyRaw applies validated whole transactions starting at the tree's LSN. With
// appendLog the records are appended to the log (replication); without, they are
// already there (recovery, rollback redo). Returns the bytes applied.
func (e *Env) applyRaw(recs []byte, appendLog bool) (int, error) {
	return e.applyRun(recs, appendLog, false)
}

// applyRun is applyRaw; with merge, consecutive transactions up to a
// checkpoint record or the end share one tree transaction, published (and
// appended to the log) as a whole after the last commit. On failure it
// returns the bytes applied before the merged transaction began.
func (e *Env) applyRun(recs []byte, appendLog, merge bool) (int, error) {
	le := binary.LittleEndian
	var tx *Tx
	txStart, nrec := 0, uint32(0)
	batchStart := 0 // merge: where the open tree transaction's records begin
	var pending CommitInfo
	chain := e.cur.chain
	fail := func(err error) (int, error) {
		if tx != nil {
			e.abortWrite(tx)
		}
		if merge {
			return batchStart, err
		}
		return txStart, err
	}
	// flush publishes the merged transaction (commits up to txStart).
	flush := func() error {
		if tx == nil || txStart == batchStart {
			return nil
		}
		if appendLog {
			if err := e.log.AppendEncoded(recs[batchStart:txStart]); err != nil {
				return fmt.Errorf("inmem: appending transactions at LSN %d: %w", pending.LSN, err)
			}
		}
		e.finish(tx, pending, pending.End)
		e.gen.Store(pending.Gen)
		tx, batchStart = nil, txStart
		return nil
	}
	for pos := 0; pos < len(recs); {
		r, n, err := logbuf.DecodeRecord(recs[pos:])
		if err != nil {
			return fail(fmt.Errorf("inmem: %w: %w", ErrBadRecords, err))
		}
		raw := recs[pos : pos+n]
		crc := le.Uint32(raw[12:])
		switch r.Type {
		case logbuf.RecCheckpoint:
			if merge {
				if err := flush(); err != nil {
					return fail(err)
				}
			}
			var s *Snapshot
			if appendLog && e.ckptHook != nil {
				s = e.pin() // the state the checkpoint describes, before the record
			}
			if appendLog {
				if err := e.log.AppendEncoded(raw); err != nil {
					if s != nil {
						s.Release()
					}
					return fail(fmt.Errorf("inmem: appending checkpoint record at LSN %d: %w", r.LSN, err))
				}
			}
			chain = chainNext(chain, crc)
			m := e.cur
			m.txid++
			m.lsn, m.chain = r.LSN+uint64(n), chain
			e.publish(m)
			if s != nil {
				e.ckptHook(s, r)
			}
			txStart = pos + n
			batchStart = txStart
		case logbuf.RecCommit:
			if tx == nil {
				tx = e.beginApply()
			}
			cnt, want, err := decodeCommitBody(r.Body)
			if err != nil {
				return fail(fmt.Errorf("inmem: commit at LSN %d: %w", r.LSN, err))
			}
			if cnt != nrec || want != chain {
				return fail(fmt.Errorf("inmem: commit at LSN %d: %d records chain %#x, record says %d chain %#x: %w",
					r.LSN, nrec, chain, cnt, want, ErrChainMismatch))
			}
			if err := tx.flushCatalog(); err != nil {
				return fail(err)
			}
			info := CommitInfo{LSN: r.LSN, End: r.LSN + uint64(n), Gen: r.Gen, Txn: r.Txn, Chain: chain}
			if merge {
				pending, nrec, txStart = info, 0, pos+n
				break
			}
			if appendLog {
				if err := e.log.AppendEncoded(recs[txStart : pos+n]); err != nil {
					return fail(fmt.Errorf("inmem: appending transaction at LSN %d: %w", r.LSN, err))
				}
			}
			e.finish(tx, info, info.End)
			e.gen.Store(r.Gen)
			tx, nrec, txStart = nil, 0, pos+n
		default:
			if tx == nil {
				tx = e.beginApply()
			}
			chain = chainNext(chain, crc)
			nrec++
			if err := tx.applyOp(r); err != nil {
				return fail(fmt.Errorf("inmem: applying record at LSN %d: %w", r.LSN, err))
			}
		}
		pos += n
	}
	if merge {
		if nrec > 0 {
			// Records past the last commit share the open transaction:
			// only whole transactions may be merged (ApplyEncoded checked).
			return fail(fmt.Errorf("inmem: batch ends inside a transaction at LSN %d: %w", pending.End, ErrBadRecords))
		}
		if err := flush(); err != nil {
			return fail(err)
		}
	}
	if tx != nil {
		e.abortWrite(tx)
	}
	return txStart, nil
}

// applyOp performs one redo record in a write transaction.
func (tx *Tx) applyOp(r logbuf.Record) error {
	if r.Type == logbuf.RecNewGen {
		g, err := decodeNewGenBody(r.Body)
		if err != nil {
			return err
		}
		tx.env.gen.Store(g)
		tx.changed = true
		return nil
	}
	op, err := decodeRedoBody(r.Body)
	if err != nil {
		return err
	}
	if r.Type == logbuf.RecCreateDB {
		name := string(op.key)
		if tx.DB(name) != nil {
			return fmt.Errorf("create %q (id %d): %w: %w", name, op.db, ErrDBExists, ErrBadRecords)
		}
		_, err := tx.createDB(name, op.db)
		return err
	}
	db := tx.dbByID(op.db)
	if db == nil {
		return fmt.Errorf("database id %d: %w: %w", op.db, ErrDBNotFound, ErrBadRecords)
	}
	switch r.Type {
	case logbuf.RecPut:
		return db.Put(op.key, op.val)
	case logbuf.RecDelete:
		return db.Delete(op.key)
	default: // RecDropDB
		return tx.dropDB(db)
	}
}

// dbByID finds a database by id: handles of this transaction first, then the
// committed catalog (cached per environment, rebuilt after creates and drops).
func (tx *Tx) dbByID(id uint32) *DB {
	for _, db := range tx.dbs {
		if db.id == id && !db.dropped {
			return db
		}
	}
	e := tx.env
	if !e.idValid {
		clear(e.idName)
		c := tx.cursorOn(e.cur.root)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if id, _, ok := catEntry(v); ok {
				e.idName[id] = string(k)
			}
		}
		e.idValid = tx.err == nil
	}
	name, ok := e.idName[id]
	if !ok {
		return nil
	}
	if db := tx.DB(name); db != nil && db.id == id {
		return db
	}
	return nil
}

// logRaw buffers a record with a caller-built body.
func (tx *Tx) logRaw(typ uint8, body []byte) {
	e := tx.env
	start := len(e.redo)
	e.redo = append(e.redo, make([]byte, logbuf.HeaderSize)...)
	e.redo = append(e.redo, body...)
	binary.LittleEndian.PutUint32(e.redo[start:], uint32(len(e.redo)-start))
	e.redo[start+4] = typ
	tx.nrec++
	tx.changed = true
}

// AppendNewGen is how a new master marks its gen in the log: a RecNewGen record and
// a commit, stamped with gen (which becomes the Env's gen).
func (e *Env) AppendNewGen(gen uint32) (CommitInfo, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.writable(); err != nil {
		return CommitInfo{}, err
	}
	prev := e.gen.Load()
	e.gen.Store(gen)
	tx := e.beginWrite(new(Tx))
	var b [newGenBodyLen]byte
	binary.LittleEndian.PutUint32(b[:], gen)
	tx.logRaw(logbuf.RecNewGen, b[:])
	info, err := e.commitLocal(tx)
	if err != nil {
		e.abortWrite(tx)
		e.gen.Store(prev)
		return CommitInfo{}, err
	}
	return info, nil
}

// CommitAt reads back the commit record at lsn (log verification).
func (e *Env) CommitAt(lsn uint64) (CommitInfo, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	r, next, err := e.log.Read(lsn, e.commitBuf[:])
	if err != nil {
		return CommitInfo{}, fmt.Errorf("inmem: commit at LSN %d: %w", lsn, err)
	}
	if r.Type != logbuf.RecCommit {
		return CommitInfo{}, fmt.Errorf("inmem: record at LSN %d has type %d: %w", lsn, r.Type, ErrNotCommit)
	}
	_, chain, err := decodeCommitBody(r.Body)
	if err != nil {
		return CommitInfo{}, err
	}
	return CommitInfo{LSN: lsn, End: next, Gen: r.Gen, Txn: r.Txn, Chain: chain}, nil
}

// SetCheckpointHook installs fn, called during ApplyEncoded when a checkpoint
// record arrives, with a snapshot pinned at exactly the state the record describes
// (fn owns it and must Release it). The writer lock is held: fn must not start
// transactions.
func (e *Env) SetCheckpointHook(fn func(s *Snapshot, rec logbuf.Record)) {
	e.wmu.Lock()
	e.ckptHook = fn
	e.wmu.Unlock()
}

// Checkpoint pins the current snapshot and appends a RecCheckpoint record
// describing it (databases, roots, txid) at the snapshot's LSN. The caller owns
// the snapshot.
func (e *Env) Checkpoint() (*Snapshot, uint64, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.writable(); err != nil {
		return nil, 0, err
	}
	lsn := e.log.End()
	if lsn != e.cur.lsn {
		return nil, 0, fmt.Errorf("inmem: log end %d differs from the tree's LSN %d: %w", lsn, e.cur.lsn, ErrCorrupt)
	}
	s := e.pin()
	info, err := s.Info()
	if err != nil {
		s.Release()
		return nil, 0, err
	}
	le := binary.LittleEndian
	rec := make([]byte, logbuf.HeaderSize, logbuf.HeaderSize+64)
	rec = AppendCheckpointBody(rec, info)
	le.PutUint32(rec, uint32(len(rec)))
	rec[4] = logbuf.RecCheckpoint
	le.PutUint32(rec[8:], e.gen.Load())
	le.PutUint64(rec[16:], s.m.txid)
	le.PutUint64(rec[24:], lsn)
	crc := crc32.Checksum(rec, castagnoli)
	le.PutUint32(rec[12:], crc)
	if err := e.log.AppendEncoded(rec); err != nil {
		s.Release()
		return nil, 0, fmt.Errorf("inmem: checkpoint record at LSN %d: %w", lsn, err)
	}
	m := e.cur
	m.txid++
	m.lsn, m.chain = lsn+uint64(len(rec)), chainNext(m.chain, crc)
	e.publish(m)
	return s, lsn, nil
}

// readLog returns the encoded records in [from, to).
func (e *Env) readLog(from, to uint64) ([]byte, error) {
	var buf []byte
	for at := from; at < to; {
		b, next, err := e.log.ReadEncoded(at, int(min(to-at, 1<<30)), nil)
		if err != nil {
			return nil, fmt.Errorf("inmem: reading log [%d,%d) at %d: %w", from, to, at, err)
		}
		if next <= at {
			return nil, fmt.Errorf("inmem: log read at %d made no progress (%d not a record boundary?): %w", at, to, ErrBadRecords)
		}
		buf = append(buf, b...)
		at = next
	}
	return buf, nil
}

// redoRange redoes whole transactions of the log in [from, to) onto the tree (at
// from) and truncates the log after the last whole one.
func (e *Env) redoRange(from, to uint64) error {
	buf, err := e.readLog(from, to)
	if err != nil {
		return err
	}
	whole, err := scanTxns(buf, from)
	if err != nil && !errors.Is(err, ErrBadRecords) {
		return err
	}
	n, err := e.applyRaw(buf[:whole], false)
	if err != nil {
		return err
	}
	if cut := from + uint64(n); cut < e.log.End() {
		if err := e.log.Truncate(cut); err != nil {
			return fmt.Errorf("inmem: truncating log at %d: %w", cut, err)
		}
	}
	return nil
}

// Rollback makes the pinned snapshot s current again and redoes the log from s's
// LSN up to lsn (whole transactions), then truncates the log there. s stays
// pinned (the caller releases it).
func (e *Env) Rollback(s *Snapshot, lsn uint64) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.writable(); err != nil {
		return err
	}
	if s.done.Load() || s.e != e {
		return fmt.Errorf("inmem: rollback to a released or foreign snapshot: %w", ErrBadOptions)
	}
	if lsn < s.m.lsn || lsn > e.log.End() {
		return fmt.Errorf("inmem: rollback to LSN %d outside [snapshot %d, log end %d]: %w", lsn, s.m.lsn, e.log.End(), ErrBadOptions)
	}
	buf, err := e.readLog(s.m.lsn, lsn)
	if err != nil {
		return err
	}
	whole, _ := scanTxns(buf, s.m.lsn)
	tx := e.newTx(false)
	snap := make(map[uint64]int)
	if err := tx.walk(s.m, false, func(pg uint64, n int) error { snap[pg] = n; return nil }); err != nil {
		return err
	}
	cur := make(map[uint64]int)
	if err := tx.walk(e.cur, false, func(pg uint64, n int) error { cur[pg] = n; return nil }); err != nil {
		return err
	}
	// Pages of s that later commits freed are live again; pages only the current
	// tree uses are freed by the restore (readers of it may still hold them).
	e.pending, e.pendHead = dropLive(e.pending[:0], e.pending[e.pendHead:], snap), 0
	e.recheck = dropLive(e.recheck[:0], e.recheck, snap)
	m := s.m
	m.txid = e.cur.txid + 1
	for pg, n := range cur {
		if _, live := snap[pg]; !live {
			e.pending = append(e.pending, pendingRun{run{pg, n}, m.txid})
		}
	}
	e.publish(m)
	e.last = lastFromMeta(m)
	e.gen.Store(m.gen)
	e.idValid = false
	n, err := e.applyRaw(buf[:whole], false)
	if err != nil {
		return err
	}
	if err := e.log.Truncate(s.m.lsn + uint64(n)); err != nil {
		return fmt.Errorf("inmem: truncating log at %d: %w", s.m.lsn+uint64(n), err)
	}
	return nil
}

// dropLive appends to dst the runs of src that are not pages of live; dst
// may share src's array as long as it starts at or before src.
func dropLive(dst, src []pendingRun, live map[uint64]int) []pendingRun {
	for _, p := range src {
		if _, ok := live[p.pgno]; !ok {
			dst = append(dst, p)
		}
	}
	return dst
}

// RestoreSnapshot makes s current and truncates the log at s's LSN.
func (e *Env) RestoreSnapshot(s *Snapshot) error { return e.Rollback(s, s.LSN()) }
