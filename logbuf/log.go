package logbuf

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"
	"unsafe"
)

// Control block: the first ControlSize bytes of the area, little-endian.
//
//	0 magic [8] | 8 version u32 | 12 crc32c u32 of [0,12)+[16,24) | 16 capacity u64 |
//	24 base u64 (LSN at physical offset 0) | 32 begin u64 | 40 end u64 | 48 retain u64 | 56 reserved
//
// begin, end, retain and base are read and written atomically so other goroutines and
// processes can follow the log. Records occupy [begin, end) in LSN space; the record at
// LSN x starts at physical offset (x - base) mod capacity and may wrap past the end.
const (
	ControlSize = 64
	// Version is the log layout version.
	Version = 1
	// MinCapacity is the smallest record area Format accepts.
	MinCapacity = 1024
	// DefaultMaxPins is Options.MaxPins when 0.
	DefaultMaxPins = 16

	cMagic    = 0
	cVersion  = 8
	cCRC      = 12
	cCapacity = 16
	cBase     = 24
	cBegin    = 32
	cEnd      = 40
	cRetain   = 48
	logMagic  = "BDHAlog\x00"
)

// Options configure a Log handle (they are not stored in the area).
type Options struct {
	Now      func() time.Time // clock for pin expiry; nil = time.Now
	MaxPins  int              // live pins allowed; 0 = DefaultMaxPins
	ReadOnly bool             // the area is mapped read-only: mutations fail with ErrReadOnly
}

// PinID names a pin; the zero value names none.
type PinID uint64

type pin struct {
	lsn      uint64
	deadline time.Time
	gen      uint32
	used     bool
}

// Log is a handle on a log area.
type Log struct {
	area     []byte
	data     []byte // the record ring, area[ControlSize:]
	capacity uint64
	maxRec   int
	begin    *uint64
	end      *uint64
	retain   *uint64
	base     *uint64
	now      func() time.Time
	readOnly bool
	pins     []pin
	npins    int // used pin slots (some may have expired)
	pinGen   uint32

	appends   uint64
	appended  uint64
	reclaimed uint64
	fulls     uint64
}

// Stats describes a log.
type Stats struct {
	Capacity       uint64 // bytes of record space
	Used           uint64 // End - Begin
	Begin, End     uint64
	Retain         uint64
	Pins           int    // live (unexpired) pins
	OldestPin      uint64 // lowest live pinned LSN, End if none
	MaxRecord      int    // largest record accepted
	Appends        uint64 // records appended through this handle (Append and AppendEncoded)
	Bytes          uint64 // bytes appended through this handle
	ReclaimedBytes uint64 // bytes overwritten to make room
	FullErrors     uint64 // ErrLogFull returned
}

// Format initialises area as an empty log whose first record will get LSN startLSN and
// returns a handle on it. The first ControlSize bytes hold the control block; the rest
// (at least MinCapacity bytes) holds records. area must be 8-byte aligned (a page is).
func Format(area []byte, startLSN uint64, opt Options) (*Log, error) {
	if err := checkArea(area); err != nil {
		return nil, err
	}
	if opt.ReadOnly {
		return nil, fmt.Errorf("logbuf: format: %w", ErrReadOnly)
	}
	l, err := newLog(area, opt) // validates opt before anything is written
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	clear(area[:ControlSize])
	copy(area[cMagic:], logMagic)
	le.PutUint32(area[cVersion:], Version)
	le.PutUint64(area[cCapacity:], uint64(len(area)-ControlSize))
	le.PutUint32(area[cCRC:], controlCRC(area))
	l.storeAll(startLSN)
	return l, nil
}

func checkArea(area []byte) error {
	if len(area) < ControlSize+MinCapacity {
		return fmt.Errorf("%w: area of %d bytes, need at least %d (control block) + %d", ErrBadArea, len(area), ControlSize, MinCapacity)
	}
	if uintptr(unsafe.Pointer(&area[0]))%8 != 0 {
		return fmt.Errorf("%w: area is not 8-byte aligned (atomics need it); give the log whole pages", ErrBadArea)
	}
	return nil
}

func controlCRC(area []byte) uint32 {
	sum := crc32.Update(0, castagnoli, area[:cCRC])
	return crc32.Update(sum, castagnoli, area[cCapacity:cCapacity+8])
}

// Open validates the control block of an area formatted by Format and returns a handle.
// Problems wrap ErrCorrupt (or ErrBadArea for an unusable slice); records themselves are
// checked as they are read (or all at once by Check).
func Open(area []byte, opt Options) (*Log, error) {
	if err := checkArea(area); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if string(area[cMagic:cMagic+8]) != logMagic {
		return nil, fmt.Errorf("%w: control block magic %q, want %q: the area holds no log", ErrCorrupt, area[:8], logMagic)
	}
	if v := le.Uint32(area[cVersion:]); v != Version {
		return nil, fmt.Errorf("%w: log version %d, this binary reads %d", ErrCorrupt, v, Version)
	}
	if want, got := le.Uint32(area[cCRC:]), controlCRC(area); want != got {
		return nil, fmt.Errorf("%w: control block crc32c %#08x, computed %#08x", ErrCorrupt, want, got)
	}
	if c := le.Uint64(area[cCapacity:]); c != uint64(len(area)-ControlSize) {
		return nil, fmt.Errorf("%w: control block says capacity %d, the area holds %d: wrong area", ErrCorrupt, c, len(area)-ControlSize)
	}
	l, err := newLog(area, opt)
	if err != nil {
		return nil, err
	}
	base, begin, end, retain := l.Base(), l.Begin(), l.End(), l.Retained()
	if !(base <= begin && begin <= retain && retain <= end) || end-begin > l.capacity {
		return nil, fmt.Errorf("%w: control block positions inconsistent: base %d begin %d retain %d end %d capacity %d",
			ErrCorrupt, base, begin, retain, end, l.capacity)
	}
	return l, nil
}

func newLog(area []byte, opt Options) (*Log, error) {
	maxPins := opt.MaxPins
	if maxPins == 0 {
		maxPins = DefaultMaxPins
	}
	if maxPins < 0 || maxPins > 1<<16 {
		return nil, fmt.Errorf("%w: MaxPins %d, want 0..65536", ErrInvalid, opt.MaxPins)
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	capacity := uint64(len(area) - ControlSize)
	word := func(off int) *uint64 { return (*uint64)(unsafe.Pointer(&area[off])) }
	return &Log{
		area:     area,
		data:     area[ControlSize:],
		capacity: capacity,
		maxRec:   int(min(capacity/4, MaxRecordSize)),
		begin:    word(cBegin),
		end:      word(cEnd),
		retain:   word(cRetain),
		base:     word(cBase),
		now:      now,
		readOnly: opt.ReadOnly,
		pins:     make([]pin, maxPins),
	}, nil
}

func (l *Log) storeAll(lsn uint64) {
	// Followers in other processes may observe the stores one by one; a read that
	// straddles them fails its checksum or LSN check and is retried, so no order is
	// required for safety.
	atomic.StoreUint64(l.base, lsn)
	atomic.StoreUint64(l.end, lsn)
	atomic.StoreUint64(l.begin, lsn)
	atomic.StoreUint64(l.retain, lsn)
}

// Begin returns the LSN of the oldest record still in the log.
func (l *Log) Begin() uint64 { return atomic.LoadUint64(l.begin) }

// End returns the LSN the next record will get.
func (l *Log) End() uint64 { return atomic.LoadUint64(l.end) }

// Retained returns the retention point: records at or after it are never overwritten.
func (l *Log) Retained() uint64 { return atomic.LoadUint64(l.retain) }

// Base returns the LSN the log was formatted or last Reset at.
func (l *Log) Base() uint64 { return atomic.LoadUint64(l.base) }

// Capacity returns the bytes available for records.
func (l *Log) Capacity() int { return int(l.capacity) }

// MaxRecord returns the largest encoded record this log accepts.
func (l *Log) MaxRecord() int { return l.maxRec }

// phys maps an LSN to its offset in the ring.
func (l *Log) phys(lsn uint64) uint64 { return (lsn - atomic.LoadUint64(l.base)) % l.capacity }

// span returns the ring bytes of [lsn, lsn+n) as one or two slices (n <= capacity).
func (l *Log) span(lsn uint64, n uint64) (a, b []byte) {
	off := l.phys(lsn)
	if off+n <= l.capacity {
		return l.data[off : off+n], nil
	}
	return l.data[off:], l.data[:n-(l.capacity-off)]
}

func (l *Log) copyIn(lsn uint64, p []byte) {
	a, b := l.span(lsn, uint64(len(p)))
	k := copy(a, p)
	copy(b, p[k:])
}

func (l *Log) copyOut(dst []byte, lsn uint64) {
	a, b := l.span(lsn, uint64(len(dst)))
	k := copy(dst, a)
	copy(dst[k:], b)
}

// u64At reads the little-endian word at lsn (possibly split across the ring end).
func (l *Log) u64At(lsn uint64) uint64 {
	var b [8]byte
	l.copyOut(b[:], lsn)
	return binary.LittleEndian.Uint64(b[:])
}

// ringCRC checksums the n-byte record at lsn in place, its crc field taken as zero.
func (l *Log) ringCRC(lsn, n uint64) uint32 {
	a, b := l.span(lsn, hCRC)
	sum := crc32.Update(0, castagnoli, a)
	sum = crc32.Update(sum, castagnoli, b)
	sum = crc32.Update(sum, castagnoli, zero4[:])
	a, b = l.span(lsn+hCRC+4, n-hCRC-4)
	sum = crc32.Update(sum, castagnoli, a)
	return crc32.Update(sum, castagnoli, b)
}

// recLenAt reads and sanity-checks the length of the record at lsn (< end).
func (l *Log) recLenAt(lsn, end uint64) (uint64, error) {
	var b [4]byte
	l.copyOut(b[:], lsn)
	n := uint64(binary.LittleEndian.Uint32(b[:]))
	if n < HeaderSize || n > uint64(l.maxRec) || n > end-lsn {
		return 0, fmt.Errorf("%w: record at LSN %d has length %d (log end %d, max record %d)", ErrCorrupt, lsn, n, end, l.maxRec)
	}
	return n, nil
}

// oldestNeeded is the lowest LSN that must not be overwritten: the retention point or
// the lowest live pin. Expired pins are dropped here, the only place they matter.
func (l *Log) oldestNeeded() uint64 {
	limit := atomic.LoadUint64(l.retain)
	if l.npins == 0 {
		return limit
	}
	now := l.now()
	for i := range l.pins {
		p := &l.pins[i]
		if !p.used {
			continue
		}
		if !now.Before(p.deadline) {
			p.used = false
			l.npins--
			continue
		}
		limit = min(limit, p.lsn)
	}
	return limit
}

// makeRoom advances Begin over whole reclaimable records until size more bytes fit.
// All or nothing: if that is impossible Begin does not move.
func (l *Log) makeRoom(size uint64) error {
	begin, end := l.Begin(), l.End()
	free := l.capacity - (end - begin)
	if free >= size {
		return nil
	}
	limit := l.oldestNeeded()
	pos := begin
	for l.capacity-(end-pos) < size {
		if pos >= end || pos >= limit {
			return l.full(size, begin, end, limit)
		}
		n, err := l.recLenAt(pos, end)
		if err != nil {
			return err
		}
		if pos+n > limit {
			return l.full(size, begin, end, limit)
		}
		pos += n
	}
	l.reclaimed += pos - begin
	atomic.StoreUint64(l.begin, pos)
	return nil
}

func (l *Log) full(size, begin, end, limit uint64) error {
	l.fulls++
	return fmt.Errorf("%w: need %d bytes, %d of %d free; LSNs [%d,%d) in use and nothing before %d may be overwritten (retain %d, %d live pins)",
		ErrLogFull, size, l.capacity-(end-begin), l.capacity, begin, end, limit, l.Retained(), l.npins)
}

// Append writes r at End (r.LSN is ignored and set to End) and returns its LSN.
// ErrRecordTooLarge, or ErrLogFull with the log unchanged.
func (l *Log) Append(r Record) (uint64, error) {
	if l.readOnly {
		return 0, fmt.Errorf("logbuf: append: %w", ErrReadOnly)
	}
	size := HeaderSize + len(r.Body)
	if size > l.maxRec {
		return 0, fmt.Errorf("%w: record of %d bytes, this log takes at most %d (capacity %d)", ErrRecordTooLarge, size, l.maxRec, l.capacity)
	}
	if err := l.makeRoom(uint64(size)); err != nil {
		return 0, err
	}
	lsn := l.End()
	r.LSN = lsn
	var h [HeaderSize]byte
	putHeader(&h, &r, size)
	// Header and body are written in place (a record split across the ring end in two
	// pieces each), then checksummed where they lie: no staging copy.
	l.copyIn(lsn, h[:])
	l.copyIn(lsn+HeaderSize, r.Body)
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], l.ringCRC(lsn, uint64(size)))
	l.copyIn(lsn+hCRC, sum[:])
	atomic.StoreUint64(l.end, lsn+uint64(size))
	l.appends++
	l.appended += uint64(size)
	return lsn, nil
}

// AppendEncoded appends whole encoded records received from the master, keeping their
// LSNs. Every record is validated first — length, checksum, LSN continuity starting at
// End (ErrLSNMismatch otherwise) — and only then is the batch copied in with one copy
// (two if it wraps). Any error leaves the log unchanged.
func (l *Log) AppendEncoded(b []byte) error {
	if l.readOnly {
		return fmt.Errorf("logbuf: append encoded: %w", ErrReadOnly)
	}
	if len(b) == 0 {
		return nil
	}
	le := binary.LittleEndian
	end := l.End()
	pos := end
	count := uint64(0)
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < HeaderSize {
			return fmt.Errorf("%w: batch of %d bytes ends with %d stray bytes at offset %d", ErrCorrupt, len(b), len(rest), off)
		}
		n := le.Uint32(rest[hLen:])
		if n < HeaderSize || uint64(n) > uint64(len(rest)) {
			return fmt.Errorf("%w: record at batch offset %d has length %d, %d bytes remain", ErrCorrupt, off, n, len(rest))
		}
		if int(n) > l.maxRec {
			return fmt.Errorf("%w: record at LSN %d is %d bytes, this log takes at most %d", ErrRecordTooLarge, le.Uint64(rest[hLSN:]), n, l.maxRec)
		}
		rec := rest[:n]
		if lsn := le.Uint64(rec[hLSN:]); lsn != pos {
			return fmt.Errorf("%w: record at batch offset %d has LSN %d, expected %d (log end %d)", ErrLSNMismatch, off, lsn, pos, end)
		}
		if want, got := le.Uint32(rec[hCRC:]), recordCRC(rec); want != got {
			return fmt.Errorf("%w: record at LSN %d: crc32c %#08x, computed %#08x", ErrCorrupt, pos, want, got)
		}
		pos += uint64(n)
		off += int(n)
		count++
	}
	if uint64(len(b)) > l.capacity {
		return fmt.Errorf("%w: batch of %d bytes exceeds the log capacity %d", ErrLogFull, len(b), l.capacity)
	}
	if err := l.makeRoom(uint64(len(b))); err != nil {
		return err
	}
	l.copyIn(end, b)
	atomic.StoreUint64(l.end, pos)
	l.appends += count
	l.appended += uint64(len(b))
	return nil
}

// Read returns the record at lsn and the LSN of the next one. A record contiguous in the
// ring is returned in place (Body aliases the log, valid until it is overwritten); one
// split across the ring end is copied into scratch (grown if too small). ErrLogGone
// below Begin, ErrBeyondEnd at or past End, ErrCorrupt if lsn is not a record boundary.
//
// A follower racing with the writer (another process mapping the area) must copy what
// it needs from the record and then check Begin() <= lsn: only then was the copy not
// overwritten while it was taken.
func (l *Log) Read(lsn uint64, scratch []byte) (Record, uint64, error) {
	rec, next, _, err := l.read(lsn, scratch)
	return rec, next, err
}

func (l *Log) read(lsn uint64, scratch []byte) (Record, uint64, []byte, error) {
	begin, end := l.Begin(), l.End()
	if lsn < begin {
		return Record{}, 0, scratch, fmt.Errorf("%w: LSN %d, log begins at %d", ErrLogGone, lsn, begin)
	}
	if lsn >= end {
		return Record{}, 0, scratch, fmt.Errorf("%w: LSN %d, log ends at %d", ErrBeyondEnd, lsn, end)
	}
	n, err := l.recLenAt(lsn, end)
	if err != nil {
		return Record{}, 0, scratch, l.goneOr(lsn, err)
	}
	a, b := l.span(lsn, n)
	buf := a
	if b != nil {
		if uint64(cap(scratch)) < n {
			scratch = make([]byte, n)
		}
		buf = scratch[:n]
		k := copy(buf, a)
		copy(buf[k:], b)
	}
	rec, _, err := DecodeRecord(buf)
	if err == nil && rec.LSN != lsn {
		err = fmt.Errorf("%w: record at LSN %d carries LSN %d: not a record boundary", ErrCorrupt, lsn, rec.LSN)
	}
	if err != nil {
		return Record{}, 0, scratch, l.goneOr(lsn, err)
	}
	// A concurrent writer may have reclaimed the record while we read it.
	if l.Begin() > lsn {
		return Record{}, 0, scratch, fmt.Errorf("%w: LSN %d overwritten while being read", ErrLogGone, lsn)
	}
	return rec, lsn + n, scratch, nil
}

// goneOr reports ErrLogGone instead of err when lsn was reclaimed meanwhile: a torn
// read by a concurrent follower is not corruption.
func (l *Log) goneOr(lsn uint64, err error) error {
	if l.Begin() > lsn {
		return fmt.Errorf("%w: LSN %d overwritten while being read", ErrLogGone, lsn)
	}
	return err
}

// ReadEncoded returns the raw encoding of whole records from `from` on, at most maxBytes
// of them — but always the first record, even when it alone exceeds maxBytes — and the
// LSN after the last one. Records are checksum-verified. A range contiguous in the ring
// is returned in place (valid until overwritten); a wrapped one is copied into dst
// (reused if large enough). from == End yields no records and End. A follower racing
// with the writer copies the result, then checks Begin() <= from (as for Read).
func (l *Log) ReadEncoded(from uint64, maxBytes int, dst []byte) ([]byte, uint64, error) {
	begin, end := l.Begin(), l.End()
	if from < begin {
		return nil, 0, fmt.Errorf("%w: LSN %d, log begins at %d", ErrLogGone, from, begin)
	}
	if from > end {
		return nil, 0, fmt.Errorf("%w: LSN %d, log ends at %d", ErrBeyondEnd, from, end)
	}
	pos := from
	for pos < end {
		n, err := l.recLenAt(pos, end)
		if err != nil {
			return nil, 0, l.goneOr(from, err)
		}
		if pos > from && pos+n-from > uint64(max(maxBytes, 0)) {
			break
		}
		if lsn := l.u64At(pos + hLSN); lsn != pos {
			return nil, 0, l.goneOr(from, fmt.Errorf("%w: record at LSN %d carries LSN %d: not a record boundary", ErrCorrupt, pos, lsn))
		}
		if want, got := uint32(l.u64At(pos+hCRC)), l.ringCRC(pos, n); want != got {
			return nil, 0, l.goneOr(from, fmt.Errorf("%w: record at LSN %d: crc32c %#08x, computed %#08x", ErrCorrupt, pos, want, got))
		}
		pos += n
	}
	if pos == from {
		return dst[:0], from, nil
	}
	a, b := l.span(from, pos-from)
	out := a
	if b != nil {
		out = append(append(dst[:0], a...), b...)
	}
	if l.Begin() > from {
		return nil, 0, fmt.Errorf("%w: LSN %d overwritten while being read", ErrLogGone, from)
	}
	return out, pos, nil
}

// Retain declares that records before lsn are no longer needed (a checkpoint at lsn):
// Append may overwrite them. The retention point only moves forward and never past End.
func (l *Log) Retain(lsn uint64) {
	if l.readOnly {
		return
	}
	lsn = min(lsn, l.End())
	if lsn > l.Retained() {
		atomic.StoreUint64(l.retain, lsn)
	}
}

// Pin keeps the records from lsn on from being overwritten for ttl (a replica catching
// up, an internal init in progress). ErrLogGone if lsn is already gone, ErrBeyondEnd if
// past End, ErrTooManyPins when MaxPins pins are live. An expired pin holds nothing.
func (l *Log) Pin(lsn uint64, ttl time.Duration) (PinID, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("%w: pin ttl %v, want > 0", ErrInvalid, ttl)
	}
	if b := l.Begin(); lsn < b {
		return 0, fmt.Errorf("%w: pin LSN %d, log begins at %d", ErrLogGone, lsn, b)
	}
	if e := l.End(); lsn > e {
		return 0, fmt.Errorf("%w: pin LSN %d, log ends at %d", ErrBeyondEnd, lsn, e)
	}
	now := l.now()
	free := -1
	for i := range l.pins {
		p := &l.pins[i]
		if p.used && !now.Before(p.deadline) {
			p.used = false
			l.npins--
		}
		if !p.used && free < 0 {
			free = i
		}
	}
	if free < 0 {
		return 0, fmt.Errorf("%w: %d pins live", ErrTooManyPins, len(l.pins))
	}
	l.pinGen++
	if l.pinGen == 0 {
		l.pinGen = 1
	}
	l.pins[free] = pin{lsn: lsn, deadline: now.Add(ttl), gen: l.pinGen, used: true}
	l.npins++
	return PinID(uint64(l.pinGen)<<32 | uint64(free+1)), nil
}

// Unpin releases a pin. Unknown, expired or already released ids are ignored.
func (l *Log) Unpin(id PinID) {
	i := int(uint32(id)) - 1
	if i < 0 || i >= len(l.pins) {
		return
	}
	p := &l.pins[i]
	if p.used && p.gen == uint32(id>>32) {
		p.used = false
		l.npins--
	}
}

// Truncate drops the records at and after lsn (rollback). lsn must be a record boundary
// in [Begin, End]. The retention point and pins beyond the new end are pulled back to it.
// A follower in another process reading past the new end while records are appended
// there again may get ErrCorrupt: rolled-back records are gone, not reclaimed.
func (l *Log) Truncate(lsn uint64) error {
	if l.readOnly {
		return fmt.Errorf("logbuf: truncate: %w", ErrReadOnly)
	}
	begin, end := l.Begin(), l.End()
	if lsn < begin {
		return fmt.Errorf("logbuf: truncate to %d: %w (begins at %d)", lsn, ErrLogGone, begin)
	}
	if lsn > end {
		return fmt.Errorf("logbuf: truncate to %d: %w (ends at %d)", lsn, ErrBeyondEnd, end)
	}
	if lsn < end {
		if _, _, err := l.Read(lsn, nil); err != nil {
			return fmt.Errorf("logbuf: truncate to %d: %w", lsn, err)
		}
	}
	atomic.StoreUint64(l.end, lsn)
	if l.Retained() > lsn {
		atomic.StoreUint64(l.retain, lsn)
	}
	for i := range l.pins {
		if l.pins[i].used && l.pins[i].lsn > lsn {
			l.pins[i].lsn = lsn
		}
	}
	return nil
}

// Reset empties the log so that the next record gets LSN startLSN (after an internal
// init brought in a snapshot ending there). Pins are dropped.
func (l *Log) Reset(startLSN uint64) {
	if l.readOnly {
		return
	}
	l.storeAll(startLSN)
	clear(l.pins)
	l.npins = 0
}

// Stats reports the log's state and this handle's counters.
func (l *Log) Stats() Stats {
	s := Stats{
		Capacity:       l.capacity,
		Begin:          l.Begin(),
		End:            l.End(),
		Retain:         l.Retained(),
		MaxRecord:      l.maxRec,
		Appends:        l.appends,
		Bytes:          l.appended,
		ReclaimedBytes: l.reclaimed,
		FullErrors:     l.fulls,
	}
	s.Used = s.End - s.Begin
	s.OldestPin = s.End
	now := l.now()
	for _, p := range l.pins {
		if p.used && now.Before(p.deadline) {
			s.Pins++
			s.OldestPin = min(s.OldestPin, p.lsn)
		}
	}
	return s
}

// Iterator walks records in LSN order from a starting LSN to the End current at each
// step. Records are valid until the next call to Next.
type Iterator struct {
	l       *Log
	next    uint64
	rec     Record
	err     error
	scratch []byte
}

// Iter returns an iterator positioned before the record at from.
func (l *Log) Iter(from uint64) *Iterator { return &Iterator{l: l, next: from} }

// Next advances to the next record; false at End or on error (see Err).
func (it *Iterator) Next() bool {
	if it.err != nil || it.next >= it.l.End() {
		return false
	}
	rec, next, scratch, err := it.l.read(it.next, it.scratch)
	it.scratch = scratch
	if err != nil {
		it.err = err
		return false
	}
	it.rec, it.next = rec, next
	return true
}

// Record returns the current record.
func (it *Iterator) Record() Record { return it.rec }

// NextLSN returns the LSN the next call to Next reads.
func (it *Iterator) NextLSN() uint64 { return it.next }

// Err returns the error that stopped the iteration, nil at a clean end.
func (it *Iterator) Err() error { return it.err }

// Check walks every record in [Begin, End) and verifies lengths, checksums and LSN
// continuity (like bbolt's Tx.Check): for a writer taking over a log.
func (l *Log) Check() error {
	it := l.Iter(l.Begin())
	n := 0
	for it.Next() {
		n++
	}
	if it.Err() != nil {
		return fmt.Errorf("logbuf: check after %d good records: %w", n, it.Err())
	}
	if it.NextLSN() != l.End() {
		return fmt.Errorf("%w: check: records end at %d, log end is %d", ErrCorrupt, it.NextLSN(), l.End())
	}
	return nil
}
