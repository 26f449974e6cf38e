package rep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
)

// memStore is a test Storage: a log of records in logbuf's framing, with
// commit chains, checkpoints, rollback and a page-snapshot export, so the
// node can be driven without the real environment.
type memStore struct {
	full       []byte // every record from LSN 0 (content), including below logBegin
	logBegin   uint64 // records below are gone from the log
	gen        uint32
	commits    []CommitInfo
	ckpt       uint64
	snap       *memSnap
	txn        uint64
	failNext   int // make the next Apply fail (simulates a full log)
	failFinish int // make the next import Finish fail
	onApply    func(rd *Ready)

	imp      *memImport
	pageSize int
}

type memSnap struct {
	lsn   uint64
	last  CommitInfo
	pages [][]byte
}

func (s *memSnap) LSN() uint64 { return s.lsn }
func (s *memSnap) Meta() []byte {
	b := binary.LittleEndian.AppendUint64(nil, s.last.LSN)
	b = binary.LittleEndian.AppendUint64(b, s.last.End)
	b = binary.LittleEndian.AppendUint32(b, s.last.Gen)
	return binary.LittleEndian.AppendUint64(b, s.last.Chain)
}
func (s *memSnap) Txid() uint64                    { return 0 } // pages not comparable: none kept
func (s *memSnap) PageTxid(uint64) (uint64, error) { return 0, nil }
func (s *memSnap) PageList() []uint64 {
	l := make([]uint64, len(s.pages))
	for i := range l {
		l[i] = uint64(100 + i)
	}
	return l
}
func (s *memSnap) ReadPage(pgno uint64, dst []byte) ([]byte, error) {
	i := int(pgno) - 100
	if i < 0 || i >= len(s.pages) {
		return nil, fmt.Errorf("no page %d", pgno)
	}
	return append(dst, s.pages[i]...), nil
}

type memImport struct {
	meta  []byte
	pages map[uint64][]byte
}

// newMemStore returns an empty store whose checkpoint is the empty state at
// LSN 0 (a real environment pins its boot state the same way).
func newMemStore() *memStore { return &memStore{pageSize: 256, snap: &memSnap{}} }

func (m *memStore) EndLSN() uint64 { return uint64(len(m.full)) }
func (m *memStore) Gen() uint32    { return m.gen }
func (m *memStore) LastCommit() CommitInfo {
	if len(m.commits) == 0 {
		return CommitInfo{}
	}
	return m.commits[len(m.commits)-1]
}

var errNotCommit = errors.New("memstore: no commit at lsn")

func (m *memStore) CommitAt(lsn uint64) (CommitInfo, error) {
	if lsn < m.logBegin {
		return CommitInfo{}, fmt.Errorf("lsn %d < begin %d: %w", lsn, m.logBegin, ErrLogGone)
	}
	i := sort.Search(len(m.commits), func(i int) bool { return m.commits[i].LSN >= lsn })
	if i < len(m.commits) && m.commits[i].LSN == lsn {
		return m.commits[i], nil
	}
	return CommitInfo{}, errNotCommit
}

func (m *memStore) ReadLog(from uint64, maxBytes int, dst []byte) ([]byte, uint64, error) {
	if from < m.logBegin {
		return dst, 0, fmt.Errorf("read %d < begin %d: %w", from, m.logBegin, ErrLogGone)
	}
	if from > m.EndLSN() {
		return dst, 0, fmt.Errorf("read %d beyond end %d", from, m.EndLSN())
	}
	off := from
	for off < m.EndLSN() {
		if off+recHeaderSize > m.EndLSN() || binary.LittleEndian.Uint64(m.full[off+24:]) != off {
			return dst, 0, fmt.Errorf("lsn %d not a record boundary", from)
		}
		n := uint64(binary.LittleEndian.Uint32(m.full[off:]))
		if off > from && int(off+n-from) > maxBytes {
			break
		}
		off += n
	}
	return append(dst, m.full[from:off]...), off, nil
}

func (m *memStore) VerifyPoints(before uint64, max int, dst []CommitInfo) ([]CommitInfo, error) {
	i := sort.Search(len(m.commits), func(i int) bool { return m.commits[i].LSN >= before }) - 1
	step := 1
	for i >= 0 && len(dst) < max && m.commits[i].LSN >= m.logBegin {
		dst = append(dst, m.commits[i])
		i -= step
		step *= 2
	}
	return dst, nil
}

func (m *memStore) CheckpointLSN() uint64 { return m.ckpt }

func (m *memStore) Snapshot() (Snapshot, error) {
	if m.snap == nil {
		return nil, ErrNoSnapshot
	}
	return m.snap, nil
}

// record builds one encoded record at the log end.
func (m *memStore) record(typ uint8, txn uint64, body []byte) []byte {
	lsn := m.EndLSN()
	b := make([]byte, recHeaderSize, recHeaderSize+len(body))
	binary.LittleEndian.PutUint32(b, uint32(recHeaderSize+len(body)))
	b[4] = typ
	binary.LittleEndian.PutUint32(b[8:], m.gen)
	binary.LittleEndian.PutUint64(b[16:], txn)
	binary.LittleEndian.PutUint64(b[24:], lsn)
	return append(b, body...)
}

func (m *memStore) chainAfter(prev uint64, recs []byte) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], prev)
	h.Write(b[:])
	h.Write(recs)
	return h.Sum64()
}

// commitTxn appends a transaction of puts (master side) and returns its
// commit info.
func (m *memStore) commitTxn(puts ...string) CommitInfo {
	m.txn++
	start := m.EndLSN()
	for _, p := range puts {
		m.full = append(m.full, m.record(1, m.txn, []byte(p))...)
	}
	return m.appendCommit(start)
}

func (m *memStore) appendCommit(txnStart uint64) CommitInfo {
	chain := m.chainAfter(m.LastCommit().Chain, m.full[txnStart:])
	lsn := m.EndLSN()
	m.full = append(m.full, m.record(recCommit, m.txn, binary.LittleEndian.AppendUint64(nil, chain))...)
	ci := CommitInfo{LSN: lsn, End: m.EndLSN(), Gen: m.gen, Txn: m.txn, Chain: chain}
	m.commits = append(m.commits, ci)
	return ci
}

// applyEncoded appends whole transactions received from a master.
func (m *memStore) applyEncoded(recs []byte) error {
	if m.failNext > 0 {
		m.failNext--
		return errors.New("memstore: injected apply failure")
	}
	if err := checkRecords(recs); err != nil {
		return err
	}
	if _, _, l := recAt(recs); l != m.EndLSN() {
		return fmt.Errorf("apply at %d, end %d", l, m.EndLSN())
	}
	// The node checks only the records' framing; like inmem, the store
	// refuses a commit too short for its body (FuzzStep found one).
	for off := 0; off < len(recs); {
		n, typ, _ := recAt(recs[off:])
		if typ == recCommit && n < recHeaderSize+8 {
			return fmt.Errorf("memstore: commit record of %d bytes, want >= %d", n, recHeaderSize+8)
		}
		off += n
	}
	for off := 0; off < len(recs); {
		n, typ, lsn := recAt(recs[off:])
		r := recs[off : off+n]
		m.full = append(m.full, r...)
		if typ == recCommit {
			gen := binary.LittleEndian.Uint32(r[8:])
			m.commits = append(m.commits, CommitInfo{LSN: lsn, End: lsn + uint64(n), Gen: gen,
				Txn: binary.LittleEndian.Uint64(r[16:]), Chain: binary.LittleEndian.Uint64(r[recHeaderSize:])})
			m.gen = max(m.gen, gen)
		}
		off += n
	}
	return nil
}

func (m *memStore) rollbackTo(lsn uint64) error {
	if lsn < m.ckpt {
		return fmt.Errorf("rollback to %d below checkpoint %d", lsn, m.ckpt)
	}
	m.full = m.full[:lsn]
	i := sort.Search(len(m.commits), func(i int) bool { return m.commits[i].End > lsn })
	m.commits = m.commits[:i]
	return nil
}

// checkpoint makes the last commit a checkpoint and lets the log forget
// everything before it (reclaim).
func (m *memStore) checkpoint(reclaim bool) {
	lc := m.LastCommit()
	m.ckpt = lc.End
	s := &memSnap{lsn: lc.End, last: lc}
	for off := 0; off < int(lc.End); off += m.pageSize {
		s.pages = append(s.pages, append([]byte(nil), m.full[off:min(off+m.pageSize, int(lc.End))]...))
	}
	m.snap = s
	if reclaim {
		m.logBegin = lc.End
	}
}

// apply performs rd the way a driver would.
func (m *memStore) apply(rd *Ready) error {
	if m.onApply != nil {
		m.onApply(rd)
	}
	if in := rd.Init; in != nil {
		if in.Begin {
			m.imp = &memImport{meta: append([]byte(nil), in.Meta...), pages: map[uint64][]byte{}}
		}
		for _, p := range in.Pages {
			if m.imp == nil {
				return errors.New("pages without begin")
			}
			m.imp.pages[p.Pgno] = append([]byte(nil), p.Data...)
		}
		if in.Finish {
			if m.imp == nil {
				return errors.New("finish without begin")
			}
			if m.failFinish > 0 {
				m.failFinish--
				m.imp = nil
				return errors.New("memstore: injected import failure")
			}
			meta := m.imp.meta
			last := CommitInfo{LSN: binary.LittleEndian.Uint64(meta), End: binary.LittleEndian.Uint64(meta[8:]),
				Gen: binary.LittleEndian.Uint32(meta[16:]), Chain: binary.LittleEndian.Uint64(meta[20:])}
			var full []byte
			for i := 0; i < len(m.imp.pages); i++ {
				p, ok := m.imp.pages[uint64(100+i)]
				if !ok {
					return fmt.Errorf("import: page %d missing", 100+i)
				}
				full = append(full, p...)
			}
			if uint64(len(full)) != last.End {
				return fmt.Errorf("import: %d bytes, want %d", len(full), last.End)
			}
			m.full, m.logBegin, m.ckpt = full, last.End, last.End
			m.commits = []CommitInfo{last}
			m.gen = last.Gen
			m.imp = nil
			m.checkpoint(true) // the imported state is this site's checkpoint
		}
	}
	if rd.HasRollback {
		if err := m.rollbackTo(rd.RollbackTo); err != nil {
			return err
		}
	}
	if len(rd.Apply) > 0 {
		if err := m.applyEncoded(rd.Apply); err != nil {
			return err
		}
	}
	if rd.NewGen != 0 {
		m.gen = rd.NewGen
		m.txn++
		start := m.EndLSN()
		m.full = append(m.full, m.record(recNewGen, m.txn, nil)...)
		m.appendCommit(start)
	}
	return nil
}

// hash identifies the content (every record from LSN 0).
func (m *memStore) hash() uint64 {
	h := fnv.New64a()
	h.Write(m.full)
	return h.Sum64()
}

// checkpointIfPerm checkpoints a restarting site at its last commit without
// reclaiming the log (what a replica does when the master's checkpoint
// record arrives).
func (m *memStore) checkpointIfPerm() {
	if len(m.commits) > 0 {
		m.checkpoint(false)
	}
}
