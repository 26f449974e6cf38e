package bptest

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BareEtherType carries the bare link's frames; distinct from the backplane's
// 0x88B5 so bare traffic never reaches a transport's socket.
const BareEtherType = 0x88B6

// BareConn is a plain AF_PACKET socket: frames are an Ethernet header and the
// payload, nothing else: no backplane header, checksum, filter or
// reassembly. It is the reference the transports are measured against.
type BareConn struct {
	fd   int
	src  [6]byte
	dst  [6]byte
	buf  []byte
	ring [][]byte
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// OpenBare opens a bare socket on iface sending to peer. Call it inside the
// interface's network namespace (rig's Board.Do).
func OpenBare(iface string, peer net.HardwareAddr) (*BareConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("bare socket on %q: %w", iface, err)
	}
	if len(peer) != 6 || len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("bare socket on %s: peer %v / own %v not Ethernet addresses", iface, peer, ifi.HardwareAddr)
	}
	proto := uint16(BareEtherType&0xff)<<8 | uint16(BareEtherType>>8)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("bare AF_PACKET socket: %w", err)
	}
	c := &BareConn{fd: fd, src: [6]byte(ifi.HardwareAddr), dst: [6]byte(peer), buf: make([]byte, ifi.MTU+14)}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bare socket bind %s: %w", iface, err)
	}
	// A receive timeout keeps a lost frame from hanging a measurement.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	const batch = 64
	c.hdrs, c.iovs = make([]unix.Mmsghdr, batch), make([]unix.Iovec, batch)
	for i := range c.hdrs {
		b := make([]byte, ifi.MTU+14)
		c.ring = append(c.ring, b)
		c.iovs[i].Base = &b[0]
		c.iovs[i].SetLen(len(b))
		c.hdrs[i].Hdr.Iov = &c.iovs[i]
		c.hdrs[i].Hdr.SetIovlen(1)
	}
	return c, nil
}

// Close closes the socket.
func (c *BareConn) Close() error { return unix.Close(c.fd) }

func (c *BareConn) frame(size int, typ, seq byte) []byte {
	f := c.buf[:14+size]
	copy(f[0:6], c.dst[:])
	copy(f[6:12], c.src[:])
	f[12], f[13] = BareEtherType>>8, BareEtherType&0xff
	f[14], f[15] = typ, seq
	return f
}

func (c *BareConn) read() ([]byte, error) {
	for {
		n, err := unix.Read(c.fd, c.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return nil, fmt.Errorf("bare receive: no frame for 2 s: %w", ErrStalled)
			}
			return nil, fmt.Errorf("bare receive: %w", err)
		}
		return c.buf[:n], nil
	}
}

// BarePingPong measures n round trips of size-byte payloads (size >= 2)
// between two bare sockets, b echoing.
func BarePingPong(a, b *BareConn, size, n int) (Latencies, error) {
	size = max(size, 2)
	echoErr := make(chan error, 1)
	go func() {
		for {
			f, err := b.read()
			if err != nil {
				echoErr <- err
				return
			}
			if len(f) < 16 || f[14] == typeStop {
				echoErr <- nil
				return
			}
			// Echo in place: swap the addresses.
			var tmp [6]byte
			copy(tmp[:], f[0:6])
			copy(f[0:6], f[6:12])
			copy(f[6:12], tmp[:])
			if _, err := unix.Write(b.fd, f); err != nil {
				echoErr <- fmt.Errorf("bare echo: %w", err)
				return
			}
		}
	}()
	lat := make(Latencies, 0, n)
	var err error
	for i := 0; i < n && err == nil; i++ {
		start := time.Now()
		if _, err = unix.Write(a.fd, a.frame(size, typePing, byte(i))); err != nil {
			err = fmt.Errorf("bare send: %w", err)
			break
		}
		for {
			var f []byte
			if f, err = a.read(); err != nil {
				break
			}
			if len(f) >= 16 && f[14] == typePing && f[15] == byte(i) {
				lat = append(lat, time.Since(start))
				break
			}
		}
	}
	if _, serr := unix.Write(a.fd, a.frame(size, typeStop, 0)); err == nil && serr != nil {
		err = serr
	}
	if eerr := <-echoErr; err == nil {
		err = eerr
	}
	return lat, err
}

func (c *BareConn) recvBatch() (int, error) {
	for i := range c.hdrs {
		c.hdrs[i].Len = 0
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&c.hdrs[0])), uintptr(len(c.hdrs)), unix.MSG_WAITFORONE, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return 0, fmt.Errorf("bare stream receive: no frame for 2 s: %w", ErrStalled)
		}
		if e != 0 {
			return 0, fmt.Errorf("bare stream receive: %w", e)
		}
		return int(r), nil
	}
}

// BareStream sends n size-byte payloads from a to b, one write per frame,
// and measures what b receives (recvmmsg batches) from the first send until
// the end marker arrives.
func BareStream(a, b *BareConn, size, n int) (Throughput, error) {
	size = max(size, 2)
	type result struct {
		got int
		end time.Time
		err error
	}
	res := make(chan result, 1)
	go func() {
		got := 0
		for {
			k, err := b.recvBatch()
			if err != nil {
				res <- result{got, time.Time{}, err}
				return
			}
			for i := 0; i < k; i++ {
				f := b.ring[i][:b.hdrs[i].Len]
				if len(f) < 16 {
					continue
				}
				switch f[14] {
				case typeData:
					got++
				case typeEnd:
					res <- result{got, time.Now(), nil}
					return
				}
			}
		}
	}()
	var err error
	start := time.Now()
	f := a.frame(size, typeData, 0)
	for i := 0; i < n && err == nil; i++ {
		_, err = unix.Write(a.fd, f)
	}
	for i := 0; i < 3 && err == nil; i++ {
		_, err = unix.Write(a.fd, a.frame(size, typeEnd, 0))
	}
	r := <-res
	if err != nil {
		return Throughput{}, fmt.Errorf("bare stream send: %w", err)
	}
	if r.err != nil {
		return Throughput{}, r.err
	}
	return Throughput{Sent: n, Received: r.got, Size: size, Elapsed: r.end.Sub(start)}, nil
}

// AwaitLink sends frames from a until b receives one (or 10 s pass): a
// freshly created link drops frames until carrier is reported, and a lost
// first ping would stall a measurement.
func AwaitLink(a, b *BareConn) error {
	const typeWarm = 9
	pfd := []unix.PollFd{{Fd: int32(b.fd), Events: unix.POLLIN}}
	for i := 0; i < 200; i++ {
		if _, err := unix.Write(a.fd, a.frame(16, typeWarm, 0)); err != nil {
			return fmt.Errorf("bare link warm-up: %w", err)
		}
		n, err := unix.Poll(pfd, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("bare link warm-up: %w", err)
		}
		if n > 0 {
			// Drain whatever warm-ups arrived so the measurement starts clean.
			for {
				if _, err := unix.Poll(pfd, 20); err != nil || pfd[0].Revents&unix.POLLIN == 0 {
					return nil
				}
				if _, err := b.read(); err != nil {
					return err
				}
			}
		}
	}
	return fmt.Errorf("bare link warm-up: nothing received in 10 s: %w", ErrStalled)
}
