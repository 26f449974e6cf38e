package inmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// importBatch is how many bytes of consecutive pages an import gathers
// before the kernel copies them into the region: one system call per
// 256 KiB (64 pages of 4 KiB) costs less per page than the pages' own copy.
const importBatch = 256 << 10

// pageCopier writes an import's pages into its region through the kernel
// (process_vm_writev on this process), gathering runs of consecutive pages
// into a batch first.
//
// Why not copy: on the virtual machines the boards are tested on, the
// first access of this process to a page of a fresh region costs 5–11 µs
// (prefaulter), and the kernel writing the same page through its own
// mapping of it does not pay that: 0.5–0.7 µs a page in 256 KiB batches,
// against 5.2–5.5 µs for a copy into pages already mapped (a 256 MiB
// probe, anonymous and /dev/shm memory alike). The page's first access
// by this process is then paid later, by whatever reads or writes it
// first (about the same cost again: 1.4–5 µs), spread over the commits and
// reads after the init instead of inside it; Import.Finish therefore
// checks the imported trees from what PutPage recorded of each page, not
// by reading them back. Where the call is refused (a seccomp profile
// without process_vm_writev), pages are copied as before.
type pageCopier struct {
	data  []byte // the region
	ps    uint64
	pid   int
	start uint64 // first page of the batch
	buf   []byte // the batch: pages [start, start+len(buf)/ps)
	copy  bool   // the kernel refused: copy directly
}

func newPageCopier(data []byte, ps int) *pageCopier {
	return &pageCopier{data: data, ps: uint64(ps), pid: os.Getpid(), buf: make([]byte, 0, importBatch)}
}

// slot returns the n*ps bytes at the end of the batch where pages
// [pgno, pgno+n) go, flushing the batch first when they do not follow it
// or do not fit; nil if the run is larger than a batch (the caller writes
// it on its own, after the batch slot flushed).
func (c *pageCopier) slot(pgno uint64, n int) ([]byte, error) {
	size := n * int(c.ps)
	if size > cap(c.buf) {
		return nil, c.flush()
	}
	if len(c.buf) > 0 && (pgno != c.start+uint64(len(c.buf))/c.ps || len(c.buf)+size > cap(c.buf)) {
		if err := c.flush(); err != nil {
			return nil, err
		}
	}
	if len(c.buf) == 0 {
		c.start = pgno
	}
	c.buf = c.buf[:len(c.buf)+size]
	return c.buf[len(c.buf)-size:], nil
}

// drop takes back the last n pages slot handed out (a page that failed
// its checks).
func (c *pageCopier) drop(n int) {
	c.buf = c.buf[:len(c.buf)-n*int(c.ps)]
}

// flush writes the batch into the region.
func (c *pageCopier) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.write(c.start, c.buf)
	c.buf = c.buf[:0]
	return err
}

// write puts p at page pgno of the region.
func (c *pageCopier) write(pgno uint64, p []byte) error {
	dst := c.data[pgno*c.ps : pgno*c.ps+uint64(len(p))]
	if !c.copy {
		local := []unix.Iovec{{Base: &p[0], Len: uint64(len(p))}}
		remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&dst[0])), Len: len(p)}}
		n, err := unix.ProcessVMWritev(c.pid, local, remote, 0)
		switch {
		case err == nil && n == len(p):
			return nil
		case err == nil:
			return fmt.Errorf("inmem: import: the kernel wrote %d of %d bytes at page %d: %w", n, len(p), pgno, ErrLayout)
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			c.copy = true // refused here: copy from now on
		default:
			return fmt.Errorf("inmem: import: writing %d bytes at page %d: %w", len(p), pgno, err)
		}
	}
	copy(dst, p)
	return nil
}

// pageSketch is what Import.Finish needs of a stored page to check the
// trees without reading the page again: its type, how many pages it spans
// (1, or an overflow run's length; 0: not stored), the pages it refers to
// (a branch: its children; a leaf: its values' overflow runs, whose value
// lengths go with them), as refs[off:off+n] of the import's sketchRefs, and
// for an overflow run the value length its header gives. 20 bytes a page,
// the references in one shared slice: a pool of a million pages sketches
// in tens of MB, without an allocation per page.
type pageSketch struct {
	typ    uint8
	run    uint32 // pages stored at this page number; 0: none
	vlen   uint32 // overflow run: value length in its header
	off, n uint32 // the page's references in sketchRefs
}

// sketchRefs holds the references of every sketched page, and for a leaf's
// overflow runs the value length the leaf gives.
type sketchRefs struct {
	pages []uint64
	vlens []uint32 // by pages; 0 for a branch's children
}

// sketch records page p (checked by validatePage), a run of n pages, as
// stored at pgno.
func (im *Import) sketch(pgno uint64, p []byte, n int) {
	s := pageSketch{typ: pType(p), run: uint32(n), off: uint32(len(im.refs.pages))}
	switch s.typ {
	case pageOverflow:
		s.vlen = uint32(pUpper(p))
	case pageBranch:
		for i := range pCount(p) {
			raw, _ := entryAt(p, i)
			im.refs.pages = append(im.refs.pages, binary.LittleEndian.Uint64(raw[2:]))
			im.refs.vlens = append(im.refs.vlens, 0)
		}
	case pageLeaf:
		for i := range pCount(p) {
			raw, _ := entryAt(p, i)
			if _, _, ovpg, vlen, ovfl := leafValue(raw); ovfl {
				im.refs.pages = append(im.refs.pages, ovpg)
				im.refs.vlens = append(im.refs.vlens, uint32(vlen))
			}
		}
	}
	s.n = uint32(len(im.refs.pages)) - s.off
	im.pages.put(pgno, s)
}

// run returns how many pages were stored at pgno (0: none).
func (im *Import) run(pgno uint64) int {
	s, _ := im.pages.get(pgno)
	return int(s.run)
}

// walkSketch checks the tree of a database rooted at pgno as walkTree
// would, from the pages' sketches: each page reachable once, present, of
// the right type, no deeper than maxDepth, each overflow run as long as
// the leaf that refers to it says. fn gets every page and run, as from
// walkTree.
func (im *Import) walkSketch(pgno uint64, depth int, seen *pageBits, fn func(uint64, int) error) error {
	if depth >= maxDepth {
		return corrupt(pgno, "tree deeper than the depth limit (cycle)")
	}
	if !seen.add(pgno) {
		return corrupt(pgno, "page referenced twice")
	}
	s, ok := im.pages.get(pgno)
	if !ok {
		return fmt.Errorf("inmem: import: page %d reachable from the snapshot is missing: %w", pgno, ErrCorrupt)
	}
	if s.typ != pageBranch && s.typ != pageLeaf {
		return corrupt(pgno, fmt.Sprintf("page of type %d where the tree needs a branch or leaf", s.typ))
	}
	if err := fn(pgno, 1); err != nil {
		return err
	}
	refs := im.refs.pages[s.off : s.off+s.n]
	if s.typ == pageBranch {
		for _, c := range refs {
			if err := im.walkSketch(c, depth+1, seen, fn); err != nil {
				return err
			}
		}
		return nil
	}
	for i, ovpg := range refs {
		if !seen.add(ovpg) {
			return corrupt(ovpg, "overflow run referenced twice")
		}
		run, ok := im.pages.get(ovpg)
		if !ok {
			return fmt.Errorf("inmem: import: overflow run %d reachable from the snapshot is missing: %w", ovpg, ErrCorrupt)
		}
		vlen := int(im.refs.vlens[int(s.off)+i])
		n := overflowPages(vlen, im.e.ps)
		if run.typ != pageOverflow || int(run.vlen) != vlen {
			return corrupt(ovpg, fmt.Sprintf("bad overflow run (type %d, value %d/%d bytes)", run.typ, run.vlen, vlen))
		}
		if err := fn(ovpg, n); err != nil {
			return err
		}
	}
	return nil
}
