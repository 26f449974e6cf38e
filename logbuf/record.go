// Package logbuf is the in-memory circular log of an environment: redo records framed
// with a 32-byte checksummed header, addressed by LSN (the logical byte position since
// the log began, monotonic across wrap-around and identical on every site holding the
// same records), stored in a byte area the caller provides (a run of pages in an shm
// region), so the log lives exactly as long as the region.
//
// The log never overwrites what is still needed: records at or after the retention point
// (Retain, set by checkpoints) and records at or after a live pin (Pin, for a replica
// catching up or an internal init in progress; bounded in number and time). When it has
// to, Append reclaims the oldest records one by one; with nothing reclaimable it fails
// with ErrLogFull and changes nothing.
//
// A Log is not safe for concurrent mutation: the caller serialises writers. Begin and
// End are atomic loads on the area, so another process mapping the same area can follow
// the log (Options.ReadOnly): records are checksummed and re-validated against Begin, so
// a read that races with reclamation fails with ErrLogGone; see Read for the protocol.
// In-process readers are serialised with the writer by the caller like everything else.
package logbuf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record types.
const (
	RecPut        uint8 = 1
	RecDelete     uint8 = 2
	RecCreateDB   uint8 = 3
	RecDropDB     uint8 = 4
	RecCommit     uint8 = 5
	RecCheckpoint uint8 = 6
	RecNewGen     uint8 = 7
)

// HeaderSize is the size of an encoded record header:
//
//	0 len u32 (header+body) | 4 type u8 | 5 flags u8 | 6 reserved u16 | 8 gen u32 |
//	12 crc32c u32 (Castagnoli, whole record with this field zero) | 16 txn u64 | 24 lsn u64
const HeaderSize = 32

// MaxRecordSize bounds one encoded record whatever the log capacity; a log also refuses
// records larger than a quarter of its capacity.
const MaxRecordSize = 1 << 20

const (
	hLen   = 0
	hType  = 4
	hFlags = 5
	hGen   = 8
	hCRC   = 12
	hTxn   = 16
	hLSN   = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one log record. Body aliases the buffer it was decoded from.
type Record struct {
	Type  uint8
	Flags uint8
	Gen   uint32
	Txn   uint64
	LSN   uint64
	Body  []byte
}

// Size returns the encoded size of r.
func (r Record) Size() int { return HeaderSize + len(r.Body) }

func (r Record) String() string {
	return fmt.Sprintf("record{lsn %d type %d flags %#x gen %d txn %d body %d B}", r.LSN, r.Type, r.Flags, r.Gen, r.Txn, len(r.Body))
}

// putHeader fills h for r (with total length n), crc field zero. The crc is computed
// where the record ends up, so h never reaches crc32 and stays on the stack.
func putHeader(h *[HeaderSize]byte, r *Record, n int) {
	le := binary.LittleEndian
	le.PutUint32(h[hLen:], uint32(n))
	h[hType] = r.Type
	h[hFlags] = r.Flags
	h[6], h[7] = 0, 0
	le.PutUint32(h[hGen:], r.Gen)
	le.PutUint32(h[hCRC:], 0)
	le.PutUint64(h[hTxn:], r.Txn)
	le.PutUint64(h[hLSN:], r.LSN)
}

// EncodeRecord appends the encoding of r to dst. r.LSN is written as given. Records
// larger than MaxRecordSize encode but no decoder accepts them.
func EncodeRecord(dst []byte, r Record) []byte {
	var h [HeaderSize]byte
	n := HeaderSize + len(r.Body)
	putHeader(&h, &r, n)
	start := len(dst)
	dst = append(dst, h[:]...)
	dst = append(dst, r.Body...)
	binary.LittleEndian.PutUint32(dst[start+hCRC:], recordCRC(dst[start:]))
	return dst
}

var zero4 [4]byte

// recordCRC computes the checksum of an encoded record b (len(b) >= HeaderSize).
func recordCRC(b []byte) uint32 {
	sum := crc32.Update(0, castagnoli, b[:hCRC])
	sum = crc32.Update(sum, castagnoli, zero4[:])
	return crc32.Update(sum, castagnoli, b[hCRC+4:])
}

// DecodeRecord decodes the record at the start of b and returns it with the number of
// bytes it occupies. Errors wrap ErrCorrupt: b shorter than a header or than the length
// field says, a length below HeaderSize or above MaxRecordSize, or a checksum mismatch.
// Body aliases b.
func DecodeRecord(b []byte) (Record, int, error) {
	if len(b) < HeaderSize {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, a record header needs %d", ErrCorrupt, len(b), HeaderSize)
	}
	le := binary.LittleEndian
	n := le.Uint32(b[hLen:])
	if n < HeaderSize || n > MaxRecordSize {
		return Record{}, 0, fmt.Errorf("%w: record length %d outside [%d, %d]", ErrCorrupt, n, HeaderSize, MaxRecordSize)
	}
	if uint64(n) > uint64(len(b)) {
		return Record{}, 0, fmt.Errorf("%w: record length %d, only %d bytes present", ErrCorrupt, n, len(b))
	}
	b = b[:n:n]
	if want, got := le.Uint32(b[hCRC:]), recordCRC(b); want != got {
		return Record{}, 0, fmt.Errorf("%w: record at LSN %d: crc32c %#08x, computed %#08x", ErrCorrupt, le.Uint64(b[hLSN:]), want, got)
	}
	return Record{
		Type:  b[hType],
		Flags: b[hFlags],
		Gen:   le.Uint32(b[hGen:]),
		Txn:   le.Uint64(b[hTxn:]),
		LSN:   le.Uint64(b[hLSN:]),
		Body:  b[HeaderSize:],
	}, int(n), nil
}

// Sentinel errors; every error from this package wraps one (use errors.Is).
var (
	// ErrLogFull: no room for the record without overwriting records still needed (at or
	// after the retention point, or pinned). Nothing was written. Checkpoint (which moves
	// the retention point), release pins, or configure a larger log.
	ErrLogFull = errors.New("logbuf: log full; checkpoint or release pins to free space, or configure a larger log")
	// ErrLogGone: the LSN was overwritten (below Begin). A replica needing it must fall
	// back to internal init.
	ErrLogGone = errors.New("logbuf: LSN no longer in the log (overwritten); internal init required")
	// ErrBeyondEnd: the LSN is at or past End: nothing written there yet.
	ErrBeyondEnd = errors.New("logbuf: LSN at or beyond the end of the log")
	// ErrLSNMismatch: AppendEncoded records do not continue the log (first LSN != End, or
	// a gap between records). Request the missing range.
	ErrLSNMismatch = errors.New("logbuf: records do not continue the log at its end; request the missing range")
	// ErrCorrupt: a record or control block failed validation (length, checksum, LSN).
	ErrCorrupt = errors.New("logbuf: corrupt log data")
	// ErrTooManyPins: Options.MaxPins pins are live. Unpin finished readers or raise MaxPins.
	ErrTooManyPins = errors.New("logbuf: too many pins; unpin finished readers or raise Options.MaxPins")
	// ErrRecordTooLarge: one record exceeds min(capacity/4, MaxRecordSize). Split the
	// operation or configure a larger log.
	ErrRecordTooLarge = errors.New("logbuf: record too large for this log")
	// ErrBadArea: the area given to Format or Open is too small or misaligned.
	ErrBadArea = errors.New("logbuf: unusable log area")
	// ErrReadOnly: a mutation on a log opened with Options.ReadOnly.
	ErrReadOnly = errors.New("logbuf: log opened read-only")
	// ErrInvalid: an argument is out of range (e.g. a pin ttl <= 0).
	ErrInvalid = errors.New("logbuf: invalid argument")
)
