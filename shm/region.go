// Package shm provides fixed-size memory regions holding a page pool: files on a memory
// file system (/dev/shm) mapped MAP_SHARED so other processes on the board can attach
// read-only, or private anonymous memory. A region has a checksummed header, a user area
// for the layer above, a reader table (one cache-line slot per reader: pid, process start
// time, snapshot txid, so the writer can find the oldest snapshot still in use and reclaim
// slots of dead processes, as LMDB does), a writer lock that detects a dead holder, and an
// in-process page allocator for the writer that defers reuse of freed pages until no
// snapshot can still see them.
//
// Everything inside a region is a byte offset or a page number, never a Go pointer.
//
// Caveats: slices returned by Data, Pages and UserArea alias the mapping and are invalid
// after Close; on a read-only attachment they must not be written (the mapping is
// PROT_READ and a write kills the process). A region file that another process truncates
// while mapped makes accesses beyond the new end fault (SIGBUS); nothing here shrinks a
// region. Pids are compared in the caller's pid namespace: every process sharing a region
// must be in the same one.
package shm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// DefaultPageSize is the page size when Options.PageSize is 0.
	DefaultPageSize = 4096
	// DefaultSize is the region size when Options.Size is 0.
	DefaultSize = 32 << 20
	// DefaultMode is the file mode of a named region when Options.Mode is 0.
	DefaultMode os.FileMode = 0o600
	// ShmDir is where plain region names live.
	ShmDir = "/dev/shm"
)

// Options configure Create.
type Options struct {
	PageSize   int         // power of two in [512, 65536]; 0 = DefaultPageSize
	Size       int64       // region bytes, rounded up to whole pages; 0 = DefaultSize
	Mode       os.FileMode // permission bits of a named region; 0 = 0600
	MaxReaders int         // reader table slots; 0 = DefaultMaxReaders
	// Lazy maps no page at creation (no MAP_POPULATE): creating the region
	// then costs about a third (0.54 against 1.3-1.75 µs per 4 KiB page on
	// the rig's VM), but the first write of a page twice as much (15
	// against 7 µs) unless Populate mapped it first. For a region its creator
	// fills front to back, populating as it goes (inmem's import).
	Lazy bool
}

// AttachMode selects how Attach maps a region.
type AttachMode int

const (
	// ReadOnly maps the region PROT_READ (only the reader table is writable).
	ReadOnly AttachMode = iota
	// ReadWrite maps the whole region writable; LockWriter before modifying it.
	ReadWrite
)

func (m AttachMode) String() string {
	switch m {
	case ReadOnly:
		return "read-only"
	case ReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// Region is one mapped region. Its methods are safe for concurrent use except Close,
// which must not race with any other use of the region or of slices and slots obtained
// from it. The Allocator is the writer's and not safe for concurrent use.
type Region struct {
	name     string
	path     string
	readOnly bool
	hdr      Header
	data     []byte // whole region
	table    []byte // reader table; inside data, or a separate writable mapping (read-only attach)
	tableMap []byte // the separate mapping to unmap, if any
	self     procIdentity
	live     livenessCache
	// writerSeen is the writer lock word WriterGone last found alive,
	// and when (unix nanoseconds): a reader asks at every view, and
	// this spares it the liveness cache's lock and map.
	writerSeen   atomic.Uint64
	writerSeenAt atomic.Int64

	mu        sync.Mutex
	closed    atomic.Bool
	holdsLock bool
	slots     map[*ReaderSlot]struct{}
	alloc     *Allocator
	tookOver  uint32 // pid of the dead writer taken over by the last LockWriter, 0 if none
}

// regionPath maps a name to a file: a plain name lives in /dev/shm, an absolute path is
// used as is (it should be on a memory file system).
func regionPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		return filepath.Clean(name), nil
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("%w: region name %q: use a plain file name (placed in %s) or an absolute path", ErrInvalid, name, ShmDir)
	}
	return filepath.Join(ShmDir, name), nil
}

// Create makes a new region. name "" makes a private anonymous region, visible only in
// this process (no file, no other attachers). Otherwise the region is the file
// /dev/shm/<name> (or name itself when absolute), created exclusively (ErrExists if it
// is there) with Options.Mode, and its memory is reserved up front so a full tmpfs is an
// error now rather than a SIGBUS later.
func Create(name string, opt Options) (*Region, error) {
	ps := uint64(opt.PageSize)
	if ps == 0 {
		ps = DefaultPageSize
	}
	if !validPageSize(ps) {
		return nil, fmt.Errorf("shm: create %q: page size %d: %w", name, opt.PageSize, ErrBadPageSize)
	}
	slots := uint64(opt.MaxReaders)
	if opt.MaxReaders == 0 {
		slots = DefaultMaxReaders
	}
	if opt.MaxReaders < 0 || slots > MaxReaders {
		return nil, fmt.Errorf("%w: create %q: MaxReaders %d, want 1..%d", ErrInvalid, name, opt.MaxReaders, MaxReaders)
	}
	size := opt.Size
	if size == 0 {
		size = DefaultSize
	}
	first := firstDataPage(ps, slots)
	if size < 0 || size > maxRegionSize {
		return nil, fmt.Errorf("%w: create %q: size %d bytes out of range", ErrInvalid, name, opt.Size)
	}
	npages := (uint64(size) + ps - 1) / ps
	if npages <= first {
		return nil, fmt.Errorf("%w: create %q: size %d bytes holds %d pages of %d bytes, need more than the %d metadata pages",
			ErrInvalid, name, size, npages, ps, first)
	}
	mode := opt.Mode.Perm()
	if mode == 0 {
		mode = DefaultMode
	}
	h := Header{
		Version:           FormatVersion,
		PageSize:          uint32(ps),
		ReaderSlots:       uint32(slots),
		RegionSize:        npages * ps,
		NumPages:          npages,
		FirstDataPage:     first,
		ReaderTableOffset: readerTableOff,
		UserAreaOffset:    userAreaOffset,
		UserAreaSize:      userAreaSize,
		CreatedUnixNano:   time.Now().UnixNano(),
	}
	r := &Region{name: name, hdr: h, self: selfIdentity(), slots: map[*ReaderSlot]struct{}{}}
	if name == "" {
		h.Flags |= flagPrivate
		// Populated for the same reason as a named region (initFile).
		data, err := unix.Mmap(-1, 0, int(h.RegionSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|populateFlag(opt.Lazy))
		if err != nil {
			return nil, fmt.Errorf("shm: create private region of %d bytes: mmap: %w", h.RegionSize, err)
		}
		r.data = data
		h.encode(r.data[:HeaderSize])
	} else {
		path, err := regionPath(name)
		if err != nil {
			return nil, err
		}
		r.path = path
		if r.data, err = createFile(path, mode, &h, opt.Lazy); err != nil {
			return nil, err
		}
	}
	r.hdr = h
	r.table = r.data[readerTableOff : readerTableOff+slots*ReaderSlotSize]
	return r, nil
}

// createFile builds the region under a temporary name and links it into place only
// once its header is written, so a process attaching concurrently sees either no region
// or a complete one — never a half-made file it would report as corrupt.
func createFile(path string, mode os.FileMode, h *Header, lazy bool) ([]byte, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("shm: create %s: %w", path, ErrExists)
	}
	// Unique per call: goroutines of one process may race to create the same region.
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := fmt.Sprintf("%s.creating-%d-%x", path, os.Getpid(), rnd)
	fd, err := unix.Open(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, uint32(mode))
	if err != nil {
		return nil, fmt.Errorf("shm: create %s: %w", tmp, err)
	}
	defer unix.Unlink(tmp)
	data, err := initFile(fd, path, mode, int64(h.RegionSize), lazy)
	unix.Close(fd)
	if err != nil {
		return nil, err
	}
	h.encode(data[:HeaderSize])
	// link(2) never replaces an existing file: exactly one creator wins.
	if err := unix.Link(tmp, path); err != nil {
		unix.Munmap(data)
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("shm: create %s: %w", path, ErrExists)
		}
		return nil, fmt.Errorf("shm: create %s: link into place: %w", path, err)
	}
	return data, nil
}

func initFile(fd int, path string, mode os.FileMode, size int64, lazy bool) ([]byte, error) {
	// The umask narrowed the open mode; the configured mode is what the operator asked for.
	if err := unix.Fchmod(fd, uint32(mode)); err != nil {
		return nil, fmt.Errorf("shm: create %s: chmod %v: %w", path, mode, err)
	}
	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("shm: create %s: reserve %d bytes (is the memory file system full?): %w", path, size, err)
		}
		if err := unix.Ftruncate(fd, size); err != nil {
			return nil, fmt.Errorf("shm: create %s: size to %d bytes: %w", path, size, err)
		}
	}
	// MAP_POPULATE maps every page now. A copy-on-write commit writes
	// fresh pages, and a first-touch fault on a shared-memory page costs
	// microseconds (about 9 µs on a virtual machine): several per commit
	// would dominate a replicated commit. Populating 256 MiB takes tens of
	// milliseconds once, at open (unless Options.Lazy).
	data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|populateFlag(lazy))
	if err != nil {
		return nil, fmt.Errorf("shm: create %s: mmap %d bytes: %w", path, size, err)
	}
	return data, nil
}

// Attach maps an existing named region. Header problems are ErrCorrupt wrapping the
// specific cause. ReadOnly maps the region PROT_READ; the reader table alone is mapped
// writable so AcquireReader works (if the file is not writable by this process,
// AcquireReader fails with ErrReadOnly). ReadWrite maps everything writable; take the
// writer lock (LockWriter) before changing anything.
func Attach(name string, mode AttachMode) (*Region, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: attach: a private region (name \"\") cannot be attached", ErrInvalid)
	}
	if mode != ReadOnly && mode != ReadWrite {
		return nil, fmt.Errorf("%w: attach %q: mode %v", ErrInvalid, name, mode)
	}
	path, err := regionPath(name)
	if err != nil {
		return nil, err
	}
	flags := unix.O_RDWR | unix.O_CLOEXEC
	fd, err := unix.Open(path, flags, 0)
	if err != nil && mode == ReadOnly && errors.Is(err, unix.EACCES) {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		flags = unix.O_RDONLY
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("shm: attach %s: %w", path, os.ErrNotExist)
		}
		if errors.Is(err, unix.EISDIR) {
			return nil, fmt.Errorf("%w: attach %s: is a directory, not a region", ErrInvalid, path)
		}
		return nil, fmt.Errorf("shm: attach %s (%v): %w", path, mode, err)
	}
	defer unix.Close(fd)

	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shm: attach %s: stat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: attach %s: not a regular file", ErrInvalid, path)
	}
	var buf [HeaderSize]byte
	n, err := unix.Pread(fd, buf[:], 0)
	if err != nil {
		return nil, fmt.Errorf("shm: attach %s: read header: %w", path, err)
	}
	h, err := DecodeHeader(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("shm: attach %s (file of %d bytes): %w", path, st.Size, err)
	}
	// Mapping past the end of the file would fault on access instead of failing here.
	if uint64(st.Size) < h.RegionSize {
		return nil, fmt.Errorf("shm: attach %s: %w: %w: file is %d bytes, header says %d (%d pages of %d)",
			path, ErrCorrupt, ErrTruncated, st.Size, h.RegionSize, h.NumPages, h.PageSize)
	}
	r := &Region{name: name, path: path, hdr: h, readOnly: mode == ReadOnly, self: selfIdentity(),
		slots: map[*ReaderSlot]struct{}{}}
	prot := unix.PROT_READ
	if mode == ReadWrite {
		prot |= unix.PROT_WRITE
	}
	flagsMap := unix.MAP_SHARED
	if mode == ReadWrite {
		// The writer's copy-on-write commits touch pages all over the
		// region: fault them in now, not on the commit path (see initFile).
		flagsMap |= unix.MAP_POPULATE
	}
	r.data, err = unix.Mmap(fd, 0, int(h.RegionSize), prot, flagsMap)
	if err != nil {
		return nil, fmt.Errorf("shm: attach %s: mmap %d bytes: %w", path, h.RegionSize, err)
	}
	tableLen := uint64(h.ReaderSlots) * ReaderSlotSize
	if mode == ReadWrite {
		r.table = r.data[readerTableOff : readerTableOff+tableLen]
		return r, nil
	}
	if flags == unix.O_RDONLY {
		return r, nil // no writable reader table: AcquireReader reports ErrReadOnly
	}
	osPage := uint64(os.Getpagesize())
	lo := readerTableOff / osPage * osPage
	hi := min(alignUp(readerTableOff+tableLen, osPage), h.RegionSize)
	m, err := unix.Mmap(fd, int64(lo), int(hi-lo), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(r.data)
		return nil, fmt.Errorf("shm: attach %s: mmap reader table: %w", path, err)
	}
	r.tableMap = m
	r.table = m[readerTableOff-lo : readerTableOff-lo+tableLen]
	return r, nil
}

// Remove deletes a named region's file. Processes that have it mapped keep their
// mapping; the memory is freed when the last one unmaps it. A missing region is an
// error wrapping os.ErrNotExist.
func Remove(name string) error {
	if name == "" {
		return nil // private regions vanish with their last mapping
	}
	path, err := regionPath(name)
	if err != nil {
		return err
	}
	if err := unix.Unlink(path); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("shm: remove %s: %w", path, os.ErrNotExist)
		}
		return fmt.Errorf("shm: remove %s: %w", path, err)
	}
	return nil
}

// Close releases this handle's reader slots and writer lock and unmaps the region.
// Closing twice is a no-op.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil
	}
	for s := range r.slots {
		s.releaseLocked()
	}
	if r.holdsLock {
		atomic.CompareAndSwapUint64(r.word(offWriterLock), r.self.word(), 0)
		r.holdsLock = false
	}
	r.closed.Store(true)
	var errs []error
	if r.tableMap != nil {
		errs = append(errs, unix.Munmap(r.tableMap))
	}
	errs = append(errs, unix.Munmap(r.data))
	r.data, r.table, r.tableMap = nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shm: close %s: %w", r.describe(), err)
	}
	return nil
}

func (r *Region) describe() string {
	if r.path == "" {
		return "private region"
	}
	return r.path
}

// word points at an 8-byte-aligned header word, for atomics on the shared mapping.
func (r *Region) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&r.data[off])) }

// Name returns the name given to Create or Attach ("" for a private region).
func (r *Region) Name() string { return r.name }

// Path returns the region's file, "" for a private region.
func (r *Region) Path() string { return r.path }

// ReadOnly reports whether the region was attached read-only.
func (r *Region) ReadOnly() bool { return r.readOnly }

// Private reports whether the region is private anonymous memory.
func (r *Region) Private() bool { return r.hdr.Flags&flagPrivate != 0 }

// Header returns the header with its mutable fields as they are now.
func (r *Region) Header() Header {
	h := r.hdr
	if r.closed.Load() {
		return h
	}
	h.WriterPID = uint32(atomic.LoadUint64(r.word(offWriterLock)) >> 32)
	h.WriterStartTime = atomic.LoadUint64(r.word(offWriterStart))
	h.HighWater = atomic.LoadUint64(r.word(offHighWater))
	h.Takeovers = atomic.LoadUint64(r.word(offTakeovers))
	return h
}

// PageSize returns the page size in bytes.
func (r *Region) PageSize() int { return int(r.hdr.PageSize) }

// NumPages returns the number of pages in the region, metadata pages included.
func (r *Region) NumPages() uint64 { return r.hdr.NumPages }

// FirstDataPage returns the first page the Allocator hands out; pages below it hold the
// header, user area and reader table.
func (r *Region) FirstDataPage() uint64 { return r.hdr.FirstDataPage }

// Size returns the region size in bytes.
func (r *Region) Size() int64 { return int64(r.hdr.RegionSize) }

// Data returns the whole mapping.
func (r *Region) Data() []byte { return r.data }

// UserArea returns the bytes reserved for the layer above (at least 512, zero at
// creation); nil after Close.
func (r *Region) UserArea() []byte {
	if r.closed.Load() {
		return nil
	}
	return r.data[userAreaOffset : userAreaOffset+userAreaSize : userAreaOffset+userAreaSize]
}

// populateFlag is the mmap flag that maps every page at creation, or none
// for a lazy region.
func populateFlag(lazy bool) int {
	if lazy {
		return 0
	}
	return unix.MAP_POPULATE
}

// Populate maps pages [pgno, pgno+n) writable now (MADV_POPULATE_WRITE), as
// MAP_POPULATE would have at creation, without changing their contents: for
// a lazy region (Options.Lazy), ahead of writing them. Kernels before 5.14
// lack it (ErrUnsupported wrapped); the pages are then mapped when touched.
func (r *Region) Populate(pgno, n uint64) error {
	if r.closed.Load() {
		return fmt.Errorf("shm: populate %s: %w", r.describe(), ErrClosed)
	}
	if r.readOnly {
		return fmt.Errorf("shm: populate %s: %w", r.describe(), ErrReadOnly)
	}
	end, carry := bits.Add64(pgno, n, 0)
	if carry != 0 || end > r.hdr.NumPages {
		return fmt.Errorf("%w: populate %s: pages [%d,+%d) beyond the region's %d pages", ErrInvalid, r.describe(), pgno, n, r.hdr.NumPages)
	}
	if n == 0 {
		return nil
	}
	ps := uint64(r.hdr.PageSize)
	if err := unix.Madvise(r.data[pgno*ps:end*ps], unix.MADV_POPULATE_WRITE); err != nil {
		if errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
		}
		return fmt.Errorf("shm: populate %s pages [%d,+%d): %w", r.describe(), pgno, n, err)
	}
	return nil
}

// Pages returns n pages starting at pgno, aliasing the mapping (capacity clipped to them).
func (r *Region) Pages(pgno uint64, n int) ([]byte, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("shm: pages of %s: %w", r.describe(), ErrClosed)
	}
	if n <= 0 {
		return nil, fmt.Errorf("%w: %s: page count %d", ErrInvalid, r.describe(), n)
	}
	end, carry := bits.Add64(pgno, uint64(n), 0)
	if carry != 0 || end > r.hdr.NumPages {
		return nil, fmt.Errorf("%w: %s: pages [%d,+%d) beyond the region's %d pages", ErrInvalid, r.describe(), pgno, n, r.hdr.NumPages)
	}
	ps := uint64(r.hdr.PageSize)
	return r.data[pgno*ps : end*ps : end*ps], nil
}
