package backplane

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pktRing is an AF_PACKET receive ring (PACKET_RX_RING, TPACKET_V2): the
// kernel writes each frame that passes the filter into the next slot of a
// buffer shared with us and flags it, so taking frames needs no system call.
// V2 hands over every frame as soon as it is written (V3 hands over blocks,
// on a millisecond timer when traffic is light: see the note on batched I/O
// in sys.go).
//
// grab copies the frames into the caller's receive buffers, so what it
// returns has the life recvmmsg's has (until the next receive) and nothing
// outside grab ever points into the mapping, which close can then unmap.
type pktRing struct {
	mu        sync.RWMutex // read: grab, ready; write: close
	mem       []byte       // the mapping; nil once closed
	frameSize int
	perBlock  int
	blockSize int
	frames    int
	// head is the next slot the kernel fills, in the order it fills them.
	// Only grab moves it (one receiver at a time: recvMu); ready reads it
	// from other goroutines (Pending), hence atomic.
	head atomic.Int64
}

// ringHeaderRoom is where the kernel puts a frame's MAC header in its slot
// (TPACKET_V2: the slot header and a sockaddr_ll, aligned, plus room for a
// 14-byte header): at most 80 bytes.
const ringHeaderRoom = 80

// newPktRing sets up a ring of about bytes on fd for frames of up to
// maxFrame bytes (Ethernet header included). It must come before bind, so
// that no frame is queued to the socket's ordinary receive queue first.
func newPktRing(fd, maxFrame, bytes int) (*pktRing, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION TPACKET_V2: %w", err)
	}
	frameSize, block, blocks := ringLayout(maxFrame, bytes)
	perBlock := block / frameSize
	req := unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32(blocks),
		Frame_size: uint32(frameSize), Frame_nr: uint32(blocks * perBlock)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING of %d blocks of %d bytes: %w", blocks, block, err)
	}
	mem, err := unix.Mmap(fd, 0, block*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		// Without the mapping the ring would swallow every frame.
		_ = unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq{})
		return nil, fmt.Errorf("mapping the receive ring (%d bytes): %w", block*blocks, err)
	}
	return &pktRing{mem: mem, frameSize: frameSize, perBlock: perBlock, blockSize: block, frames: int(req.Frame_nr)}, nil
}

// ringLayout sizes a ring of about bytes for frames of up to maxFrame bytes:
// slot size, block size and block count.
func ringLayout(maxFrame, bytes int) (frameSize, block, blocks int) {
	// Slots of whole cache lines but not a power of two: with 2 KiB slots
	// in 64 KiB blocks an 8 MiB ring was slower than recvmmsg (64 B round
	// trips 21.7–22.0 µs p50 against 17.9–18.1), with 1600-byte slots in
	// 16 KiB blocks faster (13.5–13.6 against 18.8–19.1), likely because
	// a power-of-two stride puts every slot's header in the same few cache
	// sets.
	frameSize = (ringHeaderRoom + maxFrame + 63) &^ 63
	if frameSize&(frameSize-1) == 0 {
		frameSize += 64
	}
	// Blocks of at least 16 KiB, larger while slots would leave more
	// than an eighth of a block unused (jumbo frames).
	block = 16 << 10
	for block < frameSize || (block%frameSize > block/8 && block < 1<<20) {
		block *= 2
	}
	return frameSize, block, max(1, bytes/block)
}

// offset is where slot i starts: frames do not straddle blocks.
func (r *pktRing) offset(i int) int {
	return (i/r.perBlock)*r.blockSize + (i%r.perBlock)*r.frameSize
}

func (r *pktRing) slot(i int) *unix.Tpacket2Hdr {
	return (*unix.Tpacket2Hdr)(unsafe.Pointer(&r.mem[r.offset(i)]))
}

// grab moves up to len(hdrs) waiting frames into the buffers hdrs point
// at, as recvmmsg would (Len, and MSG_TRUNC for a frame that did not fit),
// and gives their slots back to the kernel. It reports EAGAIN when none
// waits.
func (r *pktRing) grab(hdrs []unix.Mmsghdr) (int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.mem == nil {
		return 0, unix.EBADF
	}
	k, head := 0, int(r.head.Load())
	defer func() { r.head.Store(int64(head)) }()
	for ; k < len(hdrs); k++ {
		h := r.slot(head)
		if atomic.LoadUint32(&h.Status)&unix.TP_STATUS_USER == 0 {
			break
		}
		base := r.offset(head)
		off, n, full := int(h.Mac), int(h.Snaplen), int(h.Len)
		if off < int(unsafe.Sizeof(*h)) || off+n > r.frameSize {
			// Not a layout the kernel writes: taken as a damaged frame.
			n, full = 0, 1
		}
		iov := hdrs[k].Hdr.Iov
		c := copy(unsafe.Slice(iov.Base, int(iov.Len)), r.mem[base+off:base+off+n])
		hdrs[k].Len = uint32(c)
		hdrs[k].Hdr.Flags = 0
		if c < full {
			hdrs[k].Hdr.Flags = unix.MSG_TRUNC
		}
		// The copy is done: the slot is the kernel's again.
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_KERNEL)
		if head++; head == r.frames {
			head = 0
		}
	}
	if k == 0 {
		return 0, unix.EAGAIN
	}
	return k, nil
}

// ready reports whether a frame waits.
func (r *pktRing) ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mem != nil && atomic.LoadUint32(&r.slot(int(r.head.Load())).Status)&unix.TP_STATUS_USER != 0
}

// close unmaps the ring; grab and ready find it gone.
func (r *pktRing) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}
