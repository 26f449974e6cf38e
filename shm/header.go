package shm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// On-region layout (all integers little-endian, all offsets in bytes from the start):
//
//	[0, 256)                  header (HeaderSize); static part [0,124) covered by the crc at 124,
//	                          mutable words (writer lock, high-water mark) at 128.. updated atomically
//	[256, 4096)               user area for the layer above (inmem)
//	[4096, 4096+64*slots)     reader table, one 64-byte (cache line) slot per reader
//	[FirstDataPage*PageSize, RegionSize)  pages handed out by the Allocator
//
// The reader table starts on a 4 KiB boundary so a read-only attacher can map just the
// table writable (mmap offsets must be OS-page aligned) and everything else PROT_READ.
const (
	// HeaderSize is the number of bytes of the header proper; DecodeHeader needs that many.
	HeaderSize = 256
	// FormatVersion is the region layout version this package reads and writes.
	FormatVersion = 1
	// MinPageSize and MaxPageSize bound Options.PageSize (a power of two).
	MinPageSize = 512
	MaxPageSize = 65536
	// DefaultMaxReaders is the reader table size when Options.MaxReaders is 0.
	DefaultMaxReaders = 128
	// MaxReaders bounds Options.MaxReaders.
	MaxReaders = 65536
	// ReaderSlotSize is one cache line, so readers in different processes never share one.
	ReaderSlotSize = 64

	userAreaOffset  = HeaderSize
	metaAlign       = 4096
	readerTableOff  = metaAlign
	userAreaSize    = readerTableOff - userAreaOffset
	staticLen       = 124 // bytes covered by the header crc
	offMagic        = 0
	offVersion      = 8
	offHeaderLen    = 12
	offPageSize     = 16
	offReaderSlots  = 20
	offRegionSize   = 24
	offNumPages     = 32
	offFirstData    = 40
	offReaderTable  = 48
	offUserOff      = 56
	offUserLen      = 60
	offCreated      = 64
	offFlags        = 72
	offCRC          = staticLen
	offWriterLock   = 128 // atomic: pid<<32 | low 32 bits of the process start time; 0 = free
	offWriterPID    = 136
	offWriterStart  = 144 // full process start time (clock ticks since boot), informational
	offHighWater    = 152 // atomic: allocator high-water mark (first never-allocated page)
	offTakeovers    = 160 // atomic: count of dead writers taken over
	flagPrivate     = 1
	regionMagicText = "BDHAshm\x00"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded region header.
type Header struct {
	Version           uint32 // FormatVersion
	PageSize          uint32 // bytes per page, a power of two in [MinPageSize, MaxPageSize]
	ReaderSlots       uint32 // reader table slots
	RegionSize        uint64 // bytes, NumPages*PageSize
	NumPages          uint64 // pages in the region, metadata pages included
	FirstDataPage     uint64 // first page the allocator hands out
	ReaderTableOffset uint64 // byte offset of the reader table
	UserAreaOffset    uint32 // byte offset of the user area
	UserAreaSize      uint32 // bytes of user area
	CreatedUnixNano   int64  // creation time, for operators
	Flags             uint32 // bit 0: private region
	Checksum          uint32 // crc32c (Castagnoli) of the static header bytes

	// Mutable fields, a snapshot at decode time (not covered by Checksum).
	WriterPID       uint32 // holder of the writer lock, 0 if free
	WriterStartTime uint64 // last holder's process start time (clock ticks since boot)
	HighWater       uint64 // one past the highest page the allocator ever handed out
	Takeovers       uint64 // dead writers taken over since creation
}

// firstDataPage is the number of metadata pages (header, user area, reader table).
func firstDataPage(pageSize, slots uint64) uint64 {
	meta := alignUp(readerTableOff+slots*ReaderSlotSize, metaAlign)
	return (meta + pageSize - 1) / pageSize
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

func validPageSize(ps uint64) bool {
	return ps >= MinPageSize && ps <= MaxPageSize && bits.OnesCount64(ps) == 1
}

// encode writes the static header and its checksum into b (len >= HeaderSize).
func (h *Header) encode(b []byte) {
	copy(b[offMagic:], regionMagicText)
	le := binary.LittleEndian
	le.PutUint32(b[offVersion:], h.Version)
	le.PutUint32(b[offHeaderLen:], HeaderSize)
	le.PutUint32(b[offPageSize:], h.PageSize)
	le.PutUint32(b[offReaderSlots:], h.ReaderSlots)
	le.PutUint64(b[offRegionSize:], h.RegionSize)
	le.PutUint64(b[offNumPages:], h.NumPages)
	le.PutUint64(b[offFirstData:], h.FirstDataPage)
	le.PutUint64(b[offReaderTable:], h.ReaderTableOffset)
	le.PutUint32(b[offUserOff:], h.UserAreaOffset)
	le.PutUint32(b[offUserLen:], h.UserAreaSize)
	le.PutUint64(b[offCreated:], uint64(h.CreatedUnixNano))
	le.PutUint32(b[offFlags:], h.Flags)
	h.Checksum = crc32.Checksum(b[:staticLen], castagnoli)
	le.PutUint32(b[offCRC:], h.Checksum)
}

func corrupt(specific error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrCorrupt, specific}, args...)...)
}

// DecodeHeader decodes and validates a region header from the first bytes of a region.
// Every failure wraps ErrCorrupt and one of ErrTruncated, ErrBadMagic, ErrBadVersion,
// ErrChecksum, ErrBadPageSize or ErrBadGeometry. It never panics, whatever b holds.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, corrupt(ErrTruncated, "header needs %d bytes, have %d", HeaderSize, len(b))
	}
	if string(b[offMagic:offMagic+8]) != regionMagicText {
		return h, corrupt(ErrBadMagic, "magic %q, want %q", b[offMagic:offMagic+8], regionMagicText)
	}
	le := binary.LittleEndian
	h.Version = le.Uint32(b[offVersion:])
	if h.Version != FormatVersion {
		return h, corrupt(ErrBadVersion, "format version %d, this binary reads version %d", h.Version, FormatVersion)
	}
	h.Checksum = le.Uint32(b[offCRC:])
	if sum := crc32.Checksum(b[:staticLen], castagnoli); sum != h.Checksum {
		return h, corrupt(ErrChecksum, "stored crc32c %#08x, computed %#08x", h.Checksum, sum)
	}
	if hl := le.Uint32(b[offHeaderLen:]); hl != HeaderSize {
		return h, corrupt(ErrBadGeometry, "header length %d, want %d", hl, HeaderSize)
	}
	h.PageSize = le.Uint32(b[offPageSize:])
	h.ReaderSlots = le.Uint32(b[offReaderSlots:])
	h.RegionSize = le.Uint64(b[offRegionSize:])
	h.NumPages = le.Uint64(b[offNumPages:])
	h.FirstDataPage = le.Uint64(b[offFirstData:])
	h.ReaderTableOffset = le.Uint64(b[offReaderTable:])
	h.UserAreaOffset = le.Uint32(b[offUserOff:])
	h.UserAreaSize = le.Uint32(b[offUserLen:])
	h.CreatedUnixNano = int64(le.Uint64(b[offCreated:]))
	h.Flags = le.Uint32(b[offFlags:])
	h.WriterPID = uint32(le.Uint64(b[offWriterLock:]) >> 32)
	h.WriterStartTime = le.Uint64(b[offWriterStart:])
	h.HighWater = le.Uint64(b[offHighWater:])
	h.Takeovers = le.Uint64(b[offTakeovers:])

	ps := uint64(h.PageSize)
	if !validPageSize(ps) {
		return h, corrupt(ErrBadPageSize, "page size %d", h.PageSize)
	}
	if h.ReaderSlots == 0 || h.ReaderSlots > MaxReaders {
		return h, corrupt(ErrBadGeometry, "reader table of %d slots, want 1..%d", h.ReaderSlots, MaxReaders)
	}
	if h.ReaderTableOffset != readerTableOff {
		return h, corrupt(ErrBadGeometry, "reader table at offset %d, want %d", h.ReaderTableOffset, readerTableOff)
	}
	if h.UserAreaOffset != userAreaOffset || h.UserAreaSize != userAreaSize {
		return h, corrupt(ErrBadGeometry, "user area [%d,+%d), want [%d,+%d)",
			h.UserAreaOffset, h.UserAreaSize, userAreaOffset, userAreaSize)
	}
	if want := firstDataPage(ps, uint64(h.ReaderSlots)); h.FirstDataPage != want {
		return h, corrupt(ErrBadGeometry, "first data page %d, want %d for %d-byte pages and %d reader slots",
			h.FirstDataPage, want, ps, h.ReaderSlots)
	}
	if h.NumPages <= h.FirstDataPage {
		return h, corrupt(ErrBadGeometry, "%d pages leave no data pages after %d metadata pages", h.NumPages, h.FirstDataPage)
	}
	hi, lo := bits.Mul64(h.NumPages, ps)
	if hi != 0 || lo != h.RegionSize || h.RegionSize > maxRegionSize {
		return h, corrupt(ErrBadGeometry, "region size %d is not %d pages of %d bytes", h.RegionSize, h.NumPages, ps)
	}
	if h.HighWater > h.NumPages {
		return h, corrupt(ErrBadGeometry, "allocator high-water mark %d beyond %d pages", h.HighWater, h.NumPages)
	}
	return h, nil
}

// maxRegionSize keeps sizes representable as int (slice lengths) and offsets as int64.
const maxRegionSize = 1 << 46
