package backplane

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
)

// Wire constants (see /work/contracts.md, "backplane").
const (
	Magic         = 0xB0A7 // first two header bytes, little-endian
	Version       = 1      // header layout version
	HeaderSize    = 32     // bytes of the fixed frame header
	EtherType     = 0x88B5 // raw transport EtherType (IEEE local experimental)
	EthHeaderSize = 14

	// AllSites as a destination means every site of the group (multicast).
	AllSites uint16 = 0xFFFF

	// MaxMessageSize is the largest payload Send accepts (1 MiB).
	MaxMessageSize = 1 << 20

	// MaxFramePayload bounds the payload of one frame: a UDP datagram can
	// carry at most 65507 bytes, so anything larger is corrupt.
	MaxFramePayload = 65507 - HeaderSize

	// MaxFragments bounds the fragment count of one message; with the
	// smallest supported MTU (576) a 1 MiB message needs 1928 fragments.
	MaxFragments = 4096

	// FlagLZ4 marks a message whose payload is lz4-block compressed, prefixed
	// with its uncompressed size (u32 LE).
	FlagLZ4 uint16 = 1 << 0
)

// Read-only after package initialisation. crcZero stands in for the crc
// field while checking; a local array would escape through crc32.Update and
// cost an allocation per received frame.
var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	crcZero    [4]byte
)

// Header is one frame's decoded header.
type Header struct {
	Type   uint8  // message type, opaque to the transport
	Group  uint32 // GroupID of the sender's group
	From   uint16 // sending site
	To     uint16 // destination site or AllSites
	MsgID  uint32 // per-sender message counter; fragments share it
	Frag   uint16 // fragment index, 0-based
	NFrags uint16 // fragment count, >= 1
	Flags  uint16 // FlagLZ4
	Len    uint32 // payload bytes in this frame
	CRC    uint32 // crc32c over the header (crc field zero) and payload
}

// EncodeHeader writes h into dst[:HeaderSize] for a frame carrying payload:
// Len is set to len(payload) and the crc32c is computed over the header and
// payload. The payload is not copied, so it can live anywhere (the transports
// send header and payload as separate iovecs). It returns the header bytes.
// dst must have room for HeaderSize bytes.
func EncodeHeader(dst []byte, h Header, payload []byte) []byte {
	b := dst[:HeaderSize]
	binary.LittleEndian.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = h.Type
	binary.LittleEndian.PutUint32(b[4:], h.Group)
	binary.LittleEndian.PutUint16(b[8:], h.From)
	binary.LittleEndian.PutUint16(b[10:], h.To)
	binary.LittleEndian.PutUint32(b[12:], h.MsgID)
	binary.LittleEndian.PutUint16(b[16:], h.Frag)
	binary.LittleEndian.PutUint16(b[18:], h.NFrags)
	binary.LittleEndian.PutUint16(b[20:], h.Flags)
	binary.LittleEndian.PutUint16(b[22:], 0)
	binary.LittleEndian.PutUint32(b[24:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[28:], 0)
	crc := crc32.Update(0, castagnoli, b)
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(b[28:], crc)
	return b
}

// AppendFrame appends a whole frame (header and payload) to dst.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	EncodeHeader(dst[n:], h, payload)
	return append(dst, payload...)
}

// DecodeFrame parses and verifies one frame. Bytes after the declared payload
// (Ethernet padding) are ignored. The returned payload aliases b. Errors are
// ErrShortFrame, ErrBadMagic, ErrBadVersion, ErrAbsurdLength, ErrBadFragment
// or ErrBadCRC; the group is not checked here.
func DecodeFrame(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, nil, fmt.Errorf("decode frame of %d bytes (header needs %d): %w", len(b), HeaderSize, ErrShortFrame)
	}
	if m := binary.LittleEndian.Uint16(b[0:]); m != Magic {
		return h, nil, fmt.Errorf("decode frame: magic %#04x: %w", m, ErrBadMagic)
	}
	if v := b[2]; v != Version {
		return h, nil, fmt.Errorf("decode frame: version %d (this build speaks %d): %w", v, Version, ErrBadVersion)
	}
	h.Type = b[3]
	h.Group = binary.LittleEndian.Uint32(b[4:])
	h.From = binary.LittleEndian.Uint16(b[8:])
	h.To = binary.LittleEndian.Uint16(b[10:])
	h.MsgID = binary.LittleEndian.Uint32(b[12:])
	h.Frag = binary.LittleEndian.Uint16(b[16:])
	h.NFrags = binary.LittleEndian.Uint16(b[18:])
	h.Flags = binary.LittleEndian.Uint16(b[20:])
	h.Len = binary.LittleEndian.Uint32(b[24:])
	h.CRC = binary.LittleEndian.Uint32(b[28:])
	if h.Len > MaxFramePayload || h.NFrags > MaxFragments {
		return h, nil, fmt.Errorf("decode frame: payload %d bytes, %d fragments (limits %d, %d): %w",
			h.Len, h.NFrags, MaxFramePayload, MaxFragments, ErrAbsurdLength)
	}
	if h.NFrags == 0 || h.Frag >= h.NFrags {
		return h, nil, fmt.Errorf("decode frame: fragment %d of %d: %w", h.Frag, h.NFrags, ErrBadFragment)
	}
	end := HeaderSize + int(h.Len)
	if len(b) < end {
		return h, nil, fmt.Errorf("decode frame: %d bytes, header declares %d: %w", len(b), end, ErrShortFrame)
	}
	crc := crc32.Update(0, castagnoli, b[:28])
	crc = crc32.Update(crc, castagnoli, crcZero[:])
	crc = crc32.Update(crc, castagnoli, b[HeaderSize:end])
	if crc != h.CRC {
		return h, nil, fmt.Errorf("decode frame from site %d msg %d: crc %#08x, computed %#08x: %w", h.From, h.MsgID, h.CRC, crc, ErrBadCRC)
	}
	return h, b[HeaderSize:end], nil
}

// GroupID derives a group's 32-bit wire id from its name (FNV-1a 32).
func GroupID(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

// GroupMAC is the Ethernet multicast address of a group: 03:b5 followed by
// the group id big-endian. The first octet has the multicast bit set and the
// locally-administered bit set, so it never collides with vendor addresses.
func GroupMAC(id uint32) net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	m[0], m[1] = 0x03, 0xb5
	binary.BigEndian.PutUint32(m[2:], id)
	return m
}

// GroupIP is the default IPv4 multicast address of a group for the udp
// transport: 239.193.x.y (organisation-local scope) with x.y folded from the
// group id.
func GroupIP(id uint32) [4]byte {
	f := uint16(id) ^ uint16(id>>16)
	return [4]byte{239, 193, byte(f >> 8), byte(f)}
}
