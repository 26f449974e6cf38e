package rig

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"syscall"
)

// testPrefix keeps this package's chassis apart from the scenario tests'.
const testPrefix = "bht"

// waitTimeout bounds every wait for a condition in these tests.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	// A chassis not closed by the end of the run leaves a marker naming
	// this process: report it as a failure of the package.
	if leaks := ownMarkers(); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "hwtest/rig: chassis not closed after the tests: %v\n", leaks)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// ownMarkers lists marker files written by this process.
func ownMarkers() []string {
	ents, _ := os.ReadDir(markerDir)
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(markerDir + "/" + e.Name())
		if err != nil {
			continue
		}
		if m, err := parseMarker(b); err == nil && m.pid == os.Getpid() {
			out = append(out, e.Name())
		}
	}
	return out
}

// netnsList returns the output of `ip netns list`, the view external tools have.
func netnsList(t testing.TB) string {
	t.Helper()
	ipPath, err := findIP()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ipPath, "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

// assertGone fails the test if any namespace or the marker of chassis id remains.
func assertGone(t testing.TB, id string) {
	t.Helper()
	for _, line := range strings.Split(netnsList(t), "\n") {
		if strings.HasPrefix(line, id+"-") {
			t.Errorf("namespace %q of chassis %s remains after close", line, id)
		}
	}
	if _, err := os.Stat(markerDir + "/" + id); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker of chassis %s remains after close (stat: %v)", id, err)
	}
}

// newChassis creates a chassis whose Close, and a check that nothing of it
// remains, run at cleanup.
func newChassis(t testing.TB, opt Options) *Chassis {
	t.Helper()
	RequireRoot(t)
	if opt.Prefix == "" {
		opt.Prefix = testPrefix
	}
	c, err := New(opt)
	if err != nil {
		t.Fatalf("New(%+v): %v", opt, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertGone(t, c.ID())
	})
	return c
}

// udpListen opens a UDP socket on b's address inside b's namespace.
func udpListen(t testing.TB, b *Board, port int) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := b.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.IP, uint16(port))))
		return err
	})
	if err != nil {
		t.Fatalf("board %d: listen udp: %v", b.Site, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// udpExchange sends msg from one board to the other's listener, resending
// on every read timeout, until it arrives or waitTimeout passes.
func udpExchange(t testing.TB, from *Board, to netip.AddrPort, rx *net.UDPConn, msg string) error {
	t.Helper()
	var tx *net.UDPConn
	err := from.Do(func() error {
		var err error
		tx, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.IP, 0)), net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		return fmt.Errorf("board %d: dial %v: %w", from.Site, to, err)
	}
	defer tx.Close()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if _, err := tx.Write([]byte(msg)); err != nil {
			return fmt.Errorf("board %d: send to %v: %w", from.Site, to, err)
		}
		rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, src, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timeout: resend
			}
			if string(buf[:n]) == msg && src.Addr() == from.IP {
				return nil
			}
		}
	}
	return fmt.Errorf("board %d -> %v: %q not received within %v", from.Site, to, msg, waitTimeout)
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// packetSocket opens an AF_PACKET socket for EtherType 0x88B5 bound to bp0
// inside b's namespace.
func packetSocket(t testing.TB, b *Board) int {
	t.Helper()
	var fd int
	err := b.Do(func() error {
		ifi, err := net.InterfaceByName(b.Iface)
		if err != nil {
			return err
		}
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, int(htons(EtherType)))
		if err != nil {
			return err
		}
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(EtherType), Ifindex: ifi.Index}); err != nil {
			syscall.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("board %d: packet socket: %v", b.Site, err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

// frame builds a backplane frame: broadcast Ethernet header, EtherType
// 0x88B5 and the 32-byte header with magic, version, from, to and msgid.
func frame(src net.HardwareAddr, from uint16, msgid uint32) []byte {
	f := make([]byte, 14+32)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], EtherType)
	h := f[14:]
	binary.LittleEndian.PutUint16(h[0:], 0xB0A7)
	h[2] = 1
	binary.LittleEndian.PutUint16(h[8:], from)
	binary.LittleEndian.PutUint16(h[10:], 0xFFFF)
	binary.LittleEndian.PutUint32(h[12:], msgid)
	return f
}

// sendFrames writes n frames claiming site from, through fd.
func sendFrames(t testing.TB, fd int, src net.HardwareAddr, from uint16, n int) {
	t.Helper()
	for i := range n {
		if err := syscall.Sendto(fd, frame(src, from, uint32(i)), 0, nil); err != nil {
			t.Fatalf("send frame %d from site %d: %v", i, from, err)
		}
	}
}

// receiver counts incoming 0x88B5 frames per "from" site on one board.
type receiver struct {
	counts [1 << 16]atomic.Uint64
	stop   atomic.Bool
	wg     sync.WaitGroup
	err    atomic.Value
}

// startReceiver counts frames arriving on b until the test ends.
func startReceiver(t testing.TB, b *Board) *receiver {
	t.Helper()
	fd := packetSocket(t, b)
	// Room for every frame of a burst, so that the socket never drops what
	// the injector let through.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 32<<20); err != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v", err)
	}
	// The timeout lets the goroutine notice stop.
	tv := syscall.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	r := &receiver{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		for !r.stop.Load() {
			n, sa, err := syscall.Recvfrom(fd, buf, 0)
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil {
				r.err.Store(err)
				return
			}
			if ll, ok := sa.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
				continue
			}
			if n < 14+32 || !bytes.Equal(buf[14:16], []byte{0xA7, 0xB0}) {
				continue
			}
			r.counts[binary.LittleEndian.Uint16(buf[fromOffset:])].Add(1)
		}
	}()
	// Stop before the socket is closed (cleanups run last-in first-out).
	t.Cleanup(func() {
		r.stop.Store(true)
		r.wg.Wait()
		if err, ok := r.err.Load().(error); ok {
			t.Errorf("board %d receiver: %v", b.Site, err)
		}
	})
	return r
}

func (r *receiver) from(site uint16) uint64 { return r.counts[site].Load() }

// udpCounter counts datagrams carrying a backplane header per "from" site
// on one UDP socket, until the test ends.
type udpCounter struct {
	counts [1 << 16]atomic.Uint64
	stop   atomic.Bool
	wg     sync.WaitGroup
}

func startUDPCounter(t testing.TB, conn *net.UDPConn) *udpCounter {
	t.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
	}); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	u := &udpCounter{}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		buf := make([]byte, 2048)
		for !u.stop.Load() {
			conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := conn.Read(buf)
			if err != nil || n < 32 || !bytes.Equal(buf[0:2], []byte{0xA7, 0xB0}) {
				continue
			}
			u.counts[binary.LittleEndian.Uint16(buf[fromInHeader:])].Add(1)
		}
	}()
	t.Cleanup(func() {
		u.stop.Store(true)
		u.wg.Wait()
	})
	return u
}

func (u *udpCounter) from(site uint16) uint64 { return u.counts[site].Load() }

// sendUDPFrames sends n datagrams whose payload is a backplane header
// claiming site from, from board b to dst.
func sendUDPFrames(t testing.TB, b *Board, dst netip.AddrPort, from uint16, n int) {
	t.Helper()
	err := b.Do(func() error {
		conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.IP, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		for i := range n {
			if _, err := conn.Write(frame(b.MAC, from, uint32(i))[ethHeaderLen:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("board %d: send UDP to %v: %v", b.Site, dst, err)
	}
}
