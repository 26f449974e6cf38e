package backplane

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// rxCore turns received frames into messages: decode, group/self/destination
// checks, reassembly, decompression. Shared by the raw and udp transports and
// used by the receiving goroutine only.
type rxCore struct {
	group uint32
	self  uint16
	c     *counters
	reasm *reassembler
	dbufs [][]byte // decompression buffers, one per message slot of a batch
}

func newRxCore(group uint32, self uint16, maxFrag int, rc ReassemblyConfig, c *counters) *rxCore {
	return &rxCore{group: group, self: self, c: c, reasm: newReassembler(rc, maxFrag, c)}
}

func decodeReason(err error) DropReason {
	switch {
	case errors.Is(err, ErrBadMagic):
		return DropBadMagic
	case errors.Is(err, ErrBadVersion):
		return DropBadVersion
	case errors.Is(err, ErrBadCRC):
		return DropBadCRC
	case errors.Is(err, ErrAbsurdLength):
		return DropAbsurdLength
	case errors.Is(err, ErrBadFragment):
		return DropStrayFragment
	default:
		return DropShort
	}
}

// begin starts a Recv batch: buffers handed out by the previous one are reused.
func (x *rxCore) begin() { x.reasm.release() }

// frame processes one frame (starting at the backplane header) and fills m
// when it completes a message; slot is m's index in the caller's batch.
func (x *rxCore) frame(b []byte, now time.Time, slot int, m *Message) bool {
	x.c.framesIn.Add(1)
	x.c.bytesIn.Add(uint64(len(b)))
	h, p, err := DecodeFrame(b)
	if err != nil {
		x.c.drop(decodeReason(err))
		return false
	}
	switch {
	case h.Group != x.group:
		x.c.drop(DropForeignGroup)
		return false
	case h.From == x.self:
		x.c.drop(DropFromSelf)
		return false
	case h.To != AllSites && h.To != x.self:
		x.c.drop(DropNotForMe)
		return false
	}
	if h.NFrags > 1 {
		var ok bool
		if p, ok = x.reasm.add(h, p, now); !ok {
			return false
		}
	}
	if h.Flags&FlagLZ4 != 0 {
		for len(x.dbufs) <= slot {
			x.dbufs = append(x.dbufs, nil)
		}
		if p, err = decompress(p, &x.dbufs[slot]); err != nil {
			x.c.drop(DropDecompress)
			return false
		}
	}
	*m = Message{From: h.From, To: h.To, Type: h.Type, Payload: p}
	x.c.msgsIn.Add(1)
	return true
}

// fragment is one frame to send: its encoded header and a payload slice
// aliasing the (possibly compressed) message.
type fragment struct {
	hdr  []byte
	data []byte
}

// txCore splits messages into frames. Guarded by the transport's send lock.
type txCore struct {
	group    uint32
	self     uint16
	maxFrag  int // payload bytes per frame
	msgID    uint32
	comp     compressor
	c        *counters
	hdrArena []byte
	frags    []fragment
}

func newTxCore(group uint32, self uint16, maxFrag, compressThreshold int, c *counters) *txCore {
	t := &txCore{group: group, self: self, maxFrag: maxFrag, c: c}
	t.comp.threshold = normThreshold(compressThreshold)
	t.comp.ctr = c
	// A random first message id keeps a restarted sender's ids from matching
	// partial messages its previous incarnation left in receivers.
	var b [4]byte
	if _, err := rand.Read(b[:]); err == nil {
		t.msgID = binary.LittleEndian.Uint32(b[:])
	}
	return t
}

// build encodes the frames of one message; the result is valid until the
// next build.
func (t *txCore) build(to uint16, typ uint8, payload []byte) ([]fragment, error) {
	if len(payload) > MaxMessageSize {
		return nil, fmt.Errorf("send %d bytes to site %d (limit %d): %w", len(payload), to, MaxMessageSize, ErrMessageTooLarge)
	}
	var flags uint16
	if cp, ok := t.comp.compress(payload); ok {
		payload, flags = cp, FlagLZ4
		t.c.compressed.Add(1)
	}
	n := max(1, (len(payload)+t.maxFrag-1)/t.maxFrag)
	if n > MaxFragments {
		return nil, fmt.Errorf("send %d bytes in %d-byte frames needs %d fragments (limit %d); raise the MTU: %w",
			len(payload), t.maxFrag, n, MaxFragments, ErrMessageTooLarge)
	}
	if cap(t.hdrArena) < n*HeaderSize {
		t.hdrArena = make([]byte, n*HeaderSize)
	}
	t.frags = t.frags[:0]
	t.msgID++
	h := Header{Type: typ, Group: t.group, From: t.self, To: to, MsgID: t.msgID, NFrags: uint16(n), Flags: flags}
	for i := 0; i < n; i++ {
		lo := i * t.maxFrag
		hi := min(lo+t.maxFrag, len(payload))
		h.Frag = uint16(i)
		d := payload[lo:hi]
		hdr := EncodeHeader(t.hdrArena[i*HeaderSize:], h, d)
		t.frags = append(t.frags, fragment{hdr: hdr, data: d})
	}
	return t.frags, nil
}
