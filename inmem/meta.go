package inmem

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Meta page encoding (the first metaSize bytes of each of the two meta pages):
//
//	0 magic u32 | 4 version u16 | 6 reserved u16 | 8 pageSize u32 | 12 nextDB u32
//	16 txid u64 | 24 catalog root u64 | 32 lsn u64 (log end covered by the tree)
//	40 commitLSN u64 | 48 chain u64 | 56 lastTxn u64 | 64 numPages u64 | 72 gen u32
//	76 reserved [48]byte | 124 crc32c u32 over bytes [0,124)
//
// The meta written by transaction txid goes to meta page txid%2; readers take the
// valid one with the higher txid, so a torn write of one meta page only ever
// exposes the previous commit.
const (
	metaSize    = 128
	metaMagic   = 0x4d484842 // "BHHM"
	metaVersion = 1
)

type meta struct {
	pageSize  uint32
	nextDB    uint32
	txid      uint64
	root      uint64 // catalog tree root
	lsn       uint64 // log end position this tree reflects
	commitLSN uint64 // LSN of the last commit record applied
	chain     uint64 // running chain after the records up to lsn
	lastTxn   uint64 // Txn field of that commit record
	numPages  uint64 // pool size of the environment that wrote it
	gen       uint32 // gen of that commit record
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (m *meta) encode(b []byte) {
	b = b[:metaSize]
	clear(b)
	le := binary.LittleEndian
	le.PutUint32(b[0:], metaMagic)
	le.PutUint16(b[4:], metaVersion)
	le.PutUint32(b[8:], m.pageSize)
	le.PutUint32(b[12:], m.nextDB)
	le.PutUint64(b[16:], m.txid)
	le.PutUint64(b[24:], m.root)
	le.PutUint64(b[32:], m.lsn)
	le.PutUint64(b[40:], m.commitLSN)
	le.PutUint64(b[48:], m.chain)
	le.PutUint64(b[56:], m.lastTxn)
	le.PutUint64(b[64:], m.numPages)
	le.PutUint32(b[72:], m.gen)
	le.PutUint32(b[124:], crc32.Checksum(b[:124], castagnoli))
}

// decodeMeta validates and decodes a meta page; b may be any length (fuzzed).
func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) < metaSize {
		return m, fmt.Errorf("meta page: %d bytes, need %d: %w", len(b), metaSize, ErrCorrupt)
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != metaMagic {
		return m, fmt.Errorf("meta page: bad magic %#x (not an inmem meta page): %w", le.Uint32(b), ErrCorrupt)
	}
	if v := le.Uint16(b[4:]); v != metaVersion {
		return m, fmt.Errorf("meta page: format version %d, this build reads %d: %w", v, metaVersion, ErrCorrupt)
	}
	if got, want := crc32.Checksum(b[:124], castagnoli), le.Uint32(b[124:]); got != want {
		return m, fmt.Errorf("meta page: checksum %#x, stored %#x (torn or corrupt): %w", got, want, ErrCorrupt)
	}
	m.pageSize = le.Uint32(b[8:])
	m.nextDB = le.Uint32(b[12:])
	m.txid = le.Uint64(b[16:])
	m.root = le.Uint64(b[24:])
	m.lsn = le.Uint64(b[32:])
	m.commitLSN = le.Uint64(b[40:])
	m.chain = le.Uint64(b[48:])
	m.lastTxn = le.Uint64(b[56:])
	m.numPages = le.Uint64(b[64:])
	m.gen = le.Uint32(b[72:])
	if m.pageSize < minPageSize || m.pageSize > maxPageSize || m.pageSize&(m.pageSize-1) != 0 {
		return m, fmt.Errorf("meta page: page size %d not a power of two in [%d,%d]: %w", m.pageSize, minPageSize, maxPageSize, ErrCorrupt)
	}
	if m.root >= m.numPages { // 0: no database was ever created
		return m, fmt.Errorf("meta page: catalog root %d outside the pool of %d pages: %w", m.root, m.numPages, ErrCorrupt)
	}
	if m.commitLSN > m.lsn {
		return m, fmt.Errorf("meta page: commit LSN %d beyond log end %d: %w", m.commitLSN, m.lsn, ErrCorrupt)
	}
	return m, nil
}

// Layout record in the region's user area: where the meta pages and the log live.
//
//	0 magic u32 | 4 version u32 | 8 meta0 u64 | 16 meta1 u64 | 24 logPgno u64
//	32 logPages u64 | 40 pageSize u32 | 44 crc32c u32 over [0,44)
const (
	layoutSize  = 48
	layoutMagic = 0x4c484842 // "BHHL"
)

type layout struct {
	meta     [2]uint64
	logPgno  uint64
	logPages uint64
	pageSize uint32
}

func (l *layout) encode(b []byte) {
	le := binary.LittleEndian
	clear(b[:layoutSize])
	le.PutUint32(b[0:], layoutMagic)
	le.PutUint32(b[4:], metaVersion)
	le.PutUint64(b[8:], l.meta[0])
	le.PutUint64(b[16:], l.meta[1])
	le.PutUint64(b[24:], l.logPgno)
	le.PutUint64(b[32:], l.logPages)
	le.PutUint32(b[40:], l.pageSize)
	le.PutUint32(b[44:], crc32.Checksum(b[:44], castagnoli))
}

func decodeLayout(b []byte, numPages uint64) (layout, error) {
	var l layout
	if len(b) < layoutSize {
		return l, fmt.Errorf("layout: user area of %d bytes: %w", len(b), ErrCorrupt)
	}
	le := binary.LittleEndian
	if le.Uint32(b) != layoutMagic {
		return l, fmt.Errorf("layout: bad magic %#x (region not formatted by inmem): %w", le.Uint32(b), ErrCorrupt)
	}
	if v := le.Uint32(b[4:]); v != metaVersion {
		return l, fmt.Errorf("layout: version %d, this build reads %d: %w", v, metaVersion, ErrCorrupt)
	}
	if got, want := crc32.Checksum(b[:44], castagnoli), le.Uint32(b[44:]); got != want {
		return l, fmt.Errorf("layout: checksum %#x, stored %#x: %w", got, want, ErrCorrupt)
	}
	l.meta[0], l.meta[1] = le.Uint64(b[8:]), le.Uint64(b[16:])
	l.logPgno, l.logPages = le.Uint64(b[24:]), le.Uint64(b[32:])
	l.pageSize = le.Uint32(b[40:])
	if l.meta[0] >= numPages || l.meta[1] >= numPages || l.logPages == 0 ||
		l.logPgno >= numPages || l.logPages > numPages-l.logPgno {
		return l, fmt.Errorf("layout: meta pages %d,%d or log [%d,+%d) outside %d pages: %w",
			l.meta[0], l.meta[1], l.logPgno, l.logPages, numPages, ErrCorrupt)
	}
	return l, nil
}
