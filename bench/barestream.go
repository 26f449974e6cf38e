package main

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// batchEtherType is the batched bare stream's EtherType: neither the
// backplane's (0x88B5) nor bptest's bare link (0x88B6), so no other socket
// sees these frames.
const batchEtherType = 0x88B7

const mmsgBatch = 64

// packetSock is a plain AF_PACKET socket for the batched bare stream.
type packetSock struct {
	fd   int
	mac  net.HardwareAddr
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

func openPacketSock(bd *rig.Board) (*packetSock, error) {
	ps := &packetSock{fd: -1}
	err := bd.Do(func() error {
		ifi, err := net.InterfaceByName(bd.Iface)
		if err != nil {
			return err
		}
		proto := uint16(batchEtherType&0xff)<<8 | uint16(batchEtherType>>8)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		ps.fd, ps.mac = fd, ifi.HardwareAddr
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		return nil
	})
	if err != nil {
		if ps.fd >= 0 {
			unix.Close(ps.fd)
		}
		return nil, fmt.Errorf("batched bare socket on board %d: %w", bd.Site, err)
	}
	ps.hdrs, ps.iovs = make([]unix.Mmsghdr, mmsgBatch), make([]unix.Iovec, mmsgBatch)
	for i := range ps.hdrs {
		ps.bufs = append(ps.bufs, make([]byte, 9018))
		ps.iovs[i].Base = &ps.bufs[i][0]
		ps.iovs[i].SetLen(len(ps.bufs[i]))
		ps.hdrs[i].Hdr.Iov = &ps.iovs[i]
		ps.hdrs[i].Hdr.SetIovlen(1)
	}
	return ps, nil
}

func (ps *packetSock) close() { unix.Close(ps.fd) }

func (ps *packetSock) mmsg(nr uintptr, n int, flags int) (int, error) {
	for {
		r, _, e := unix.Syscall6(nr, uintptr(ps.fd), uintptr(unsafe.Pointer(&ps.hdrs[0])), uintptr(n), uintptr(flags), 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errors.New("no frame for 2 s")
		}
		return 0, e
	}
}

// batchedStream sends n size-byte frames from a to b in sendmmsg batches of
// 64 (the way the raw transport sends a fragmented message) and measures
// what b receives with recvmmsg between its first frame and the end marker.
func batchedStream(a, b *packetSock, size, n int) (frames int, elapsed time.Duration, err error) {
	type result struct {
		got int
		el  time.Duration
		err error
	}
	res := make(chan result, 1)
	go func() {
		var first time.Time
		got := 0
		for {
			for i := range b.hdrs {
				b.iovs[i].SetLen(len(b.bufs[i]))
				b.hdrs[i].Len = 0
			}
			k, err := b.mmsg(unix.SYS_RECVMMSG, mmsgBatch, unix.MSG_WAITFORONE)
			if err != nil {
				res <- result{got, 0, fmt.Errorf("batched stream receive after %d frames: %w", got, err)}
				return
			}
			for i := 0; i < k; i++ {
				f := b.bufs[i][:b.hdrs[i].Len]
				if len(f) < 15 {
					continue
				}
				if f[14] == 4 { // end marker
					var el time.Duration
					if got > 0 {
						el = time.Since(first)
					}
					res <- result{got, el, nil}
					return
				}
				if got == 0 {
					first = time.Now()
				}
				got++
			}
		}
	}()
	fill := func(typ byte) {
		for i := range a.hdrs {
			f := a.bufs[i][:14+size]
			copy(f[0:6], b.mac)
			copy(f[6:12], a.mac)
			f[12], f[13] = batchEtherType>>8, batchEtherType&0xff
			f[14] = typ
			a.iovs[i].SetLen(len(f))
		}
	}
	fill(3)
	for sent := 0; sent < n && err == nil; {
		var k int
		k, err = a.mmsg(unix.SYS_SENDMMSG, min(mmsgBatch, n-sent), 0)
		sent += k
	}
	if err == nil {
		fill(4)
		_, err = a.mmsg(unix.SYS_SENDMMSG, 3, 0)
	}
	r := <-res
	if err != nil {
		return 0, 0, fmt.Errorf("batched stream send: %w", err)
	}
	return r.got, r.el, r.err
}

// streamRate is one batched bare stream of n size-byte frames from board a
// to board b on fresh sockets: the frames/s and payload MB/s the receiver
// saw, and how many frames arrived.
func streamRate(a, b *rig.Board, size, n int) (framesPerSec, mbPerSec float64, got int, err error) {
	pa, err := openPacketSock(a)
	if err != nil {
		return 0, 0, 0, err
	}
	defer pa.close()
	pb, err := openPacketSock(b)
	if err != nil {
		return 0, 0, 0, err
	}
	defer pb.close()
	got, el, err := batchedStream(pa, pb, size, n)
	if err == nil && el <= 0 {
		err = errors.New("batched stream: no frame timed (too few arrived to time the stream)")
	}
	if err != nil {
		return 0, 0, got, err
	}
	framesPerSec = float64(got) / el.Seconds()
	return framesPerSec, framesPerSec * float64(size) / 1e6, got, nil
}
