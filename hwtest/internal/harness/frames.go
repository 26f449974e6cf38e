package harness

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"

	"golang.org/x/sys/unix"
)

// Backplane wire constants (contracts: backplane), restated here so the bad
// frames are built from the specification, not from the code under test.
const (
	frameMagic     = 0xB0A7
	frameVersion   = 1
	frameHeader    = 32
	ethHeader      = 14
	EtherType      = 0x88B5
	allSites       = 0xFFFF
	maxFramePayMax = 65507 - frameHeader
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// GroupID is FNV-1a 32 of the group name, the group id on the wire.
func GroupID(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

// GroupMAC is the group's multicast MAC, 03:b5 + the id big-endian.
func GroupMAC(id uint32) net.HardwareAddr {
	m := net.HardwareAddr{0x03, 0xb5, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(m[2:], id)
	return m
}

// FrameHeader is a backplane frame header to encode.
type FrameHeader struct {
	Type          uint8
	Group         uint32
	From, To      uint16
	MsgID         uint32
	Frag, NFrags  uint16
	Flags         uint16
	Len           uint32 // encoded as is (EncodeFrame sets it from the payload unless KeepLen)
	KeepLen       bool
	Magic         uint16 // 0 = frameMagic
	Version       uint8  // 0 = frameVersion
	CorruptCRC    bool   // flip the crc after computing it
	TruncateBytes int    // cut this many bytes off the end of the backplane frame
}

// EncodeFrame builds a backplane frame (without the Ethernet header).
func EncodeFrame(h FrameHeader, payload []byte) []byte {
	b := make([]byte, frameHeader, frameHeader+len(payload))
	magic, ver := h.Magic, h.Version
	if magic == 0 {
		magic = frameMagic
	}
	if ver == 0 {
		ver = frameVersion
	}
	if !h.KeepLen {
		h.Len = uint32(len(payload))
	}
	binary.LittleEndian.PutUint16(b[0:], magic)
	b[2] = ver
	b[3] = h.Type
	binary.LittleEndian.PutUint32(b[4:], h.Group)
	binary.LittleEndian.PutUint16(b[8:], h.From)
	binary.LittleEndian.PutUint16(b[10:], h.To)
	binary.LittleEndian.PutUint32(b[12:], h.MsgID)
	binary.LittleEndian.PutUint16(b[16:], h.Frag)
	binary.LittleEndian.PutUint16(b[18:], h.NFrags)
	binary.LittleEndian.PutUint16(b[20:], h.Flags)
	binary.LittleEndian.PutUint32(b[24:], h.Len)
	b = append(b, payload...)
	crc := crc32.Update(0, castagnoli, b)
	if h.CorruptCRC {
		crc ^= 0x5a5a5a5a
	}
	binary.LittleEndian.PutUint32(b[28:], crc)
	if h.TruncateBytes > 0 && h.TruncateBytes < len(b) {
		b = b[:len(b)-h.TruncateBytes]
	}
	return b
}

// EthFrame prepends an Ethernet header.
func EthFrame(dst, src net.HardwareAddr, etherType uint16, body []byte) []byte {
	b := make([]byte, ethHeader, ethHeader+len(body))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, body...)
}

// BadFrame is one malformed or foreign frame to inject.
type BadFrame struct {
	Class string
	Frame []byte // whole Ethernet frame
	// ReachesBoard: the frame passes the raw transport's in-kernel filter
	// (EtherType 0x88B5, this group, at least a header long) and must be
	// dropped, and counted, by the board's user-space decoder.
	ReachesBoard bool
}

// BadFrames returns n frames of each malformed class for group, sent from
// src to dst (the group MAC, broadcast or a board's MAC). Sites claimed as
// senders are never members (fromSite), so no frame can pass for a real
// board's message.
func BadFrames(rng *rand.Rand, group uint32, src, dst net.HardwareAddr, fromSite uint16, n int) []BadFrame {
	randBytes := func(lo, hi int) []byte {
		b := make([]byte, lo+rng.IntN(hi-lo+1))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	hdr := func() FrameHeader {
		return FrameHeader{Type: uint8(rng.IntN(40)), Group: group, From: fromSite, To: allSites,
			MsgID: rng.Uint32(), NFrags: 1}
	}
	var out []BadFrame
	add := func(class string, reaches bool, body []byte, et uint16) {
		out = append(out, BadFrame{Class: class, Frame: EthFrame(dst, src, et, body), ReachesBoard: reaches})
	}
	for range n {
		// Noise: random bytes under our EtherType (the group field is
		// random, so the kernel filter drops nearly all of them; the
		// ones whose bytes 4..8 happen to match still fail the magic).
		add("random", false, randBytes(1, 1400), EtherType)
		// Another protocol entirely.
		add("other-ethertype", false, randBytes(46, 600), 0x88B6)
		// Truncated to less than a header.
		add("short-header", false, EncodeFrame(hdr(), nil)[:4+rng.IntN(frameHeader-4)], EtherType)
		// A well-formed frame of another group, correct CRC.
		fh := hdr()
		fh.Group = group ^ 0x01000193
		add("foreign-group", false, EncodeFrame(fh, randBytes(0, 600)), EtherType)

		// Below: frames of this group that only user space can reject.
		fh = hdr()
		fh.CorruptCRC = true
		add("bad-crc", true, EncodeFrame(fh, randBytes(1, 1000)), EtherType)
		fh = hdr()
		fh.Magic = 0xDEAD
		add("bad-magic", true, EncodeFrame(fh, randBytes(0, 200)), EtherType)
		fh = hdr()
		fh.Version = 7
		add("bad-version", true, EncodeFrame(fh, randBytes(0, 200)), EtherType)
		fh = hdr()
		fh.Len, fh.KeepLen = maxFramePayMax+1+rng.Uint32N(1<<20), true
		add("absurd-length", true, EncodeFrame(fh, randBytes(0, 200)), EtherType)
		fh = hdr()
		fh.TruncateBytes = 1 + rng.IntN(100)
		add("truncated-payload", true, EncodeFrame(fh, randBytes(101, 1000)), EtherType)
		fh = hdr()
		fh.NFrags = 2 + uint16(rng.IntN(10))
		fh.Frag = fh.NFrags + uint16(rng.IntN(5))
		add("stray-fragment", true, EncodeFrame(fh, randBytes(1, 500)), EtherType)
	}
	return out
}

// RawSender sends whole Ethernet frames on one interface through an
// AF_PACKET socket. Open it inside the namespace that holds the interface
// (rig's Board.Do or Chassis.DoBackplane); it may be used from anywhere
// afterwards.
type RawSender struct {
	fd      int
	ifindex int
	MAC     net.HardwareAddr
}

// OpenRawSender opens the socket on iface in the calling thread's namespace.
func OpenRawSender(iface string) (*RawSender, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("harness: raw sender: interface %s: %w", iface, err)
	}
	// Protocol 0: a send-only socket that receives nothing.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("harness: raw sender: AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("harness: raw sender: bind to %s: %w", iface, err)
	}
	return &RawSender{fd: fd, ifindex: ifi.Index, MAC: ifi.HardwareAddr}, nil
}

// Send transmits one frame.
func (s *RawSender) Send(frame []byte) error {
	if len(frame) < ethHeader {
		return fmt.Errorf("harness: raw sender: frame of %d bytes has no Ethernet header", len(frame))
	}
	var addr unix.SockaddrLinklayer
	addr.Ifindex = s.ifindex
	addr.Halen = 6
	copy(addr.Addr[:], frame[:6])
	return unix.Sendto(s.fd, frame, 0, &addr)
}

// Close closes the socket.
func (s *RawSender) Close() error { return unix.Close(s.fd) }
