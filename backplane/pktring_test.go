package backplane

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeRing is a receive ring in ordinary memory, laid out as the kernel lays
// one out (slots that do not straddle blocks, a gap at each block's end), so
// grab can be tested without a socket.
func fakeRing(frames, frameSize, perBlock int) *pktRing {
	block := perBlock*frameSize + 64
	blocks := (frames + perBlock - 1) / perBlock
	return &pktRing{mem: make([]byte, blocks*block), frameSize: frameSize, perBlock: perBlock, blockSize: block, frames: frames}
}

// put writes slot i as the kernel would: the frame at mac, the header, and
// the status last.
func (r *pktRing) put(i int, mac uint16, snap, full uint32, frame []byte, status uint32) {
	h := r.slot(i)
	base := r.offset(i)
	if int(mac) < r.frameSize {
		copy(r.mem[base+int(mac):base+r.frameSize], frame)
	}
	h.Mac, h.Snaplen, h.Len = mac, snap, full
	h.Status = status
}

// testHdrs returns n mmsghdrs over buffers of size bytes each.
func testHdrs(n, size int) []unix.Mmsghdr {
	return newRxRing(n, size).hdrs
}

func hdrBytes(h *unix.Mmsghdr) []byte {
	return unsafe.Slice(h.Hdr.Iov.Base, int(h.Len))
}

func TestPktRingGrab(t *testing.T) {
	const mac = 66 // where the kernel puts a 14-byte header in a V2 slot
	r := fakeRing(5, 256, 2)
	hdrs := testHdrs(4, 128)
	if _, err := r.grab(hdrs); !errors.Is(err, unix.EAGAIN) || r.ready() {
		t.Fatalf("empty ring: err %v, ready %v; want EAGAIN, not ready", err, r.ready())
	}
	frames := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc")}
	for i, f := range frames {
		r.put(i, mac, uint32(len(f)), uint32(len(f)), f, unix.TP_STATUS_USER)
	}
	if !r.ready() {
		t.Fatal("frames wait but ready is false")
	}
	k, err := r.grab(hdrs)
	if err != nil || k != 3 {
		t.Fatalf("grab: %d frames, %v; want 3", k, err)
	}
	for i, f := range frames {
		if got := hdrBytes(&hdrs[i]); !bytes.Equal(got, f) || hdrs[i].Hdr.Flags != 0 {
			t.Fatalf("frame %d: %q flags %#x, want %q", i, got, hdrs[i].Hdr.Flags, f)
		}
		if st := r.slot(i).Status; st != unix.TP_STATUS_KERNEL {
			t.Fatalf("slot %d not handed back: status %#x", i, st)
		}
	}
	if _, err := r.grab(hdrs); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("drained ring: %v, want EAGAIN", err)
	}

	// Slot 3: the kernel kept less than the frame (Snaplen < Len); slot 4:
	// a header pointing past its slot; slot 0 again: the ring wrapped; slot
	// 1: a frame larger than the receive buffer.
	r.put(3, mac, 4, 1500, []byte("dddd"), unix.TP_STATUS_USER)
	r.put(4, 250, 100, 100, nil, unix.TP_STATUS_USER)
	r.put(0, mac, 5, 5, []byte("eeeee"), unix.TP_STATUS_USER)
	r.put(1, mac, 150, 150, bytes.Repeat([]byte("f"), 150), unix.TP_STATUS_USER)
	k, err = r.grab(hdrs)
	if err != nil || k != 4 {
		t.Fatalf("grab after the wrap: %d frames, %v; want 4", k, err)
	}
	want := []struct {
		data  string
		trunc bool
	}{{"dddd", true}, {"", true}, {"eeeee", false}, {string(bytes.Repeat([]byte("f"), 128)), true}}
	for i, w := range want {
		got, trunc := string(hdrBytes(&hdrs[i])), hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
		if got != w.data || trunc != w.trunc {
			t.Fatalf("frame %d: %q truncated %v, want %q truncated %v", i, got, trunc, w.data, w.trunc)
		}
	}
	if r.head.Load() != 2 {
		t.Fatalf("head %d after seven frames on five slots, want 2", r.head.Load())
	}

	// What close leaves (it unmaps, which ordinary memory must not be).
	r.mem = nil
	if _, err := r.grab(hdrs); !errors.Is(err, unix.EBADF) || r.ready() {
		t.Fatalf("closed ring: err %v, ready %v; want EBADF, not ready", err, r.ready())
	}
}

// FuzzPktRingSlot feeds grab slot headers the kernel would never write: it
// must neither read outside the slot nor write outside the buffer, and it
// must hand the slot back.
func FuzzPktRingSlot(f *testing.F) {
	f.Add(uint16(66), uint32(3), uint32(3), []byte("abc"))
	f.Add(uint16(66), uint32(4), uint32(1500), []byte("dddd"))
	f.Add(uint16(250), uint32(100), uint32(100), []byte{})
	f.Add(uint16(0), uint32(0xffffffff), uint32(0), []byte("x"))
	f.Fuzz(func(t *testing.T, mac uint16, snap, full uint32, frame []byte) {
		r := fakeRing(2, 256, 1)
		hdrs := testHdrs(2, 64)
		r.put(0, mac, snap, full, frame, unix.TP_STATUS_USER)
		k, err := r.grab(hdrs)
		if err != nil || k != 1 {
			t.Fatalf("one frame flagged: grab %d, %v", k, err)
		}
		if n := int(hdrs[0].Len); n > 64 || n > int(snap) {
			t.Fatalf("%d bytes taken from a %d-byte capture into a 64-byte buffer", n, snap)
		}
		if r.slot(0).Status != unix.TP_STATUS_KERNEL || r.head.Load() != 1 {
			t.Fatalf("slot not handed back (status %#x, head %d)", r.slot(0).Status, r.head.Load())
		}
	})
}

// TestRingLayout: slots hold a frame behind the kernel's slot header, are
// whole cache lines but never a power of two, and fill their blocks.
func TestRingLayout(t *testing.T) {
	for _, mtu := range []int{576, 1500, 4000, 4018, 9000, 65535} {
		maxFrame := EthHeaderSize + mtu
		fs, block, blocks := ringLayout(maxFrame, DefaultRingBytes)
		per := block / fs
		switch {
		case fs < ringHeaderRoom+maxFrame || fs%64 != 0 || fs&(fs-1) == 0:
			t.Errorf("MTU %d: %d-byte slots for %d-byte frames", mtu, fs, maxFrame)
		case per < 1 || block%4096 != 0 || (block%fs > block/8 && block < 1<<20):
			t.Errorf("MTU %d: %d slots of %d bytes in %d-byte blocks", mtu, per, fs, block)
		case blocks*block > DefaultRingBytes || blocks < 1:
			t.Errorf("MTU %d: %d blocks of %d bytes for a %d-byte ring", mtu, blocks, block, DefaultRingBytes)
		}
	}
	if fs, block, blocks := ringLayout(EthHeaderSize+1500, DefaultRingBytes); blocks*(block/fs) != 5120 {
		t.Errorf("MTU 1500: %d slots, want the 5,120 DefaultRingBytes promises", blocks*(block/fs))
	}
}
