package shm

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them (use errors.Is);
// the wrapping message carries the region path and the sizes or pids involved.
var (
	// ErrExists: Create found a region file of that name already. Attach to it, or Remove it
	// first if it is left over from a previous run.
	ErrExists = errors.New("shm: region already exists; attach to it or remove it first")

	// ErrCorrupt: the region's header cannot be trusted. It is always accompanied (errors.Is)
	// by a more specific sentinel: ErrBadMagic, ErrBadVersion, ErrChecksum, ErrTruncated,
	// ErrBadPageSize or ErrBadGeometry. The region must be removed and rebuilt (internal init).
	ErrCorrupt = errors.New("shm: region header is corrupt; remove the region and rebuild it")

	// ErrBadMagic: the file does not start with the boardha region magic: not a region.
	ErrBadMagic = errors.New("shm: bad magic number; the file is not a boardha region")

	// ErrBadVersion: the region was written by an incompatible format version.
	ErrBadVersion = errors.New("shm: unsupported region format version; rebuild the region with this binary")

	// ErrChecksum: the header's crc32c does not match its contents.
	ErrChecksum = errors.New("shm: header checksum mismatch")

	// ErrTruncated: the file is shorter than its header says (or than a header).
	ErrTruncated = errors.New("shm: region file is truncated")

	// ErrBadPageSize: the page size is not a power of two in [MinPageSize, MaxPageSize].
	ErrBadPageSize = errors.New("shm: page size must be a power of two between 512 and 65536")

	// ErrBadGeometry: sizes or offsets in the header are inconsistent with each other.
	ErrBadGeometry = errors.New("shm: inconsistent region geometry")

	// ErrWriterActive: another live process (or another handle in this process) holds the
	// writer lock. Only one writer per region; stop the other writer or attach read-only.
	ErrWriterActive = errors.New("shm: another live writer holds the region's writer lock")

	// ErrWriterNotHeld: UnlockWriter on a handle that does not hold the writer lock.
	ErrWriterNotHeld = errors.New("shm: writer lock not held by this handle")

	// ErrReaderTableFull: every reader slot is held by a live process. Raise
	// Options.MaxReaders when creating the region, or reduce concurrent readers.
	ErrReaderTableFull = errors.New("shm: reader table full; create the region with a larger MaxReaders")

	// ErrPoolFull: the page pool has no run of free pages large enough. The region size is
	// fixed at creation: free data, wait for readers to release old snapshots, or create a
	// larger region.
	ErrPoolFull = errors.New("shm: page pool full")

	// ErrReadOnly: a write operation on a region attached read-only.
	ErrReadOnly = errors.New("shm: region is attached read-only")

	// ErrInvalid: an argument is out of range (bad option, page number, count or name).
	ErrInvalid = errors.New("shm: invalid argument")

	// ErrClosed: the region handle was closed.
	ErrClosed = errors.New("shm: region is closed")
)
