package backplane

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/rig"
	"golang.org/x/sys/unix"
)

const rigGroup = "rig-test"

// rigPrefix names this package's chassis, so sweeping leftovers of killed
// runs never touches another package's rigs.
const rigPrefix = "bpt"

func newChassis(t *testing.T, boards int) *rig.Chassis {
	t.Helper()
	rig.RequireRoot(t)
	if swept, err := rig.SweepStale(rigPrefix); err == nil && len(swept) > 0 {
		t.Logf("removed namespaces of dead runs: %v", swept)
	}
	return rig.NewForTest(t, rig.Options{Boards: boards, Prefix: rigPrefix})
}

func rawOn(t testing.TB, b *rig.Board, mod func(*RawConfig)) Transport {
	t.Helper()
	cfg := RawConfig{Interface: b.Iface, Site: b.Site, Group: GroupID(rigGroup)}
	if mod != nil {
		mod(&cfg)
	}
	var tr Transport
	if err := b.Do(func() (err error) { tr, err = NewRaw(cfg); return err }); err != nil {
		t.Fatalf("raw transport on board %d: %v", b.Site, err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func rigUDPSites(c *rig.Chassis, port uint16) map[uint16]netip.AddrPort {
	sites := make(map[uint16]netip.AddrPort)
	for _, b := range c.Boards {
		sites[b.Site] = netip.AddrPortFrom(b.IP, port)
	}
	return sites
}

func udpOn(t testing.TB, b *rig.Board, sites map[uint16]netip.AddrPort) Transport {
	t.Helper()
	var tr Transport
	cfg := UDPConfig{Site: b.Site, Group: GroupID(rigGroup), Sites: sites}
	if err := b.Do(func() (err error) { tr, err = NewUDP(cfg); return err }); err != nil {
		t.Fatalf("udp transport on board %d: %v", b.Site, err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestRigTransports(t *testing.T) {
	c := newChassis(t, 3)
	// udp: one shared socket (site port == group port); udp2: unicast and
	// group sockets polled together.
	// raw-thread: waiting in poll(2) on the receiving thread
	// (RawConfig.WaitInThread) instead of the netpoller; -serve: received
	// through Serve instead of Recv; raw-noring: recvmmsg instead of the
	// receive ring (RawConfig.NoRing).
	for _, kind := range []string{"raw", "raw-serve", "raw-thread", "raw-thread-serve", "raw-noring", "raw-noring-serve", "udp", "udp2-serve"} {
		t.Run(kind, func(t *testing.T) {
			var trs []Transport
			for _, b := range c.Boards {
				if kind == "raw" || kind == "raw-serve" {
					trs = append(trs, rawOn(t, b, nil))
				} else if strings.HasPrefix(kind, "raw-noring") {
					trs = append(trs, rawOn(t, b, func(c *RawConfig) { c.NoRing = true }))
				} else if strings.HasPrefix(kind, "raw-thread") {
					trs = append(trs, rawOn(t, b, func(c *RawConfig) { c.WaitInThread = true }))
					if tr := trs[len(trs)-1].(*rawTransport); tr.blocking {
						t.Fatal("WaitInThread: the transport waits in the netpoller")
					}
				} else if kind == "udp" {
					trs = append(trs, udpOn(t, b, rigUDPSites(c, DefaultUDPPort)))
				} else {
					trs = append(trs, udpOn(t, b, rigUDPSites(c, DefaultUDPPort+1)))
				}
			}
			if strings.HasPrefix(kind, "raw") {
				if ring := trs[0].(*rawTransport).pr != nil; ring == strings.HasPrefix(kind, "raw-noring") {
					t.Fatalf("%s: receive ring in use: %v", kind, ring)
				}
			}
			raw := trs
			if strings.HasSuffix(kind, "-serve") {
				raw = slices.Clone(trs)
				for i := range trs {
					trs[i] = served{trs[i]}
				}
			}
			if strings.HasPrefix(kind, "udp") {
				if s := trs[0].Stats(); s.MulticastFallback {
					t.Fatalf("udp in the rig should use real multicast: %s", s.FallbackReason)
				}
				wantFDs := map[string]int{"udp": 1, "udp2-serve": 2}[kind]
				if n := len(raw[0].(*udpTransport).fds); n != wantFDs {
					t.Fatalf("%s: %d sockets, want %d", kind, n, wantFDs)
				}
			}
			chs := collectAll(t, trs)
			exerciseChassis(t, trs, chs)
			if strings.HasPrefix(kind, "raw") {
				// Site 2 learned site 1's MAC from its multicast, so this
				// unicast is not flooded to site 3.
				before := trs[2].Stats().Drop(DropNotForMe)
				if err := trs[1].Send(1, 11, []byte("learned")); err != nil {
					t.Fatal(err)
				}
				firstIs(t, chs[0], 11, 5*time.Second)
				if err := trs[0].Send(AllSites, 12, nil); err != nil {
					t.Fatal(err)
				}
				firstIs(t, chs[2], 12, 5*time.Second)
				if after := trs[2].Stats().Drop(DropNotForMe); after != before {
					t.Fatalf("unicast to a learned MAC reached site 3 (%d not-for-me drops)", after-before)
				}
			}
			partitionAndHeal(t, c.Boards[2], trs, chs)
			for i, tr := range trs {
				if s := tr.Stats(); s.Drop(DropBadCRC)+s.Drop(DropReasmTimeout)+s.Drop(DropReasmOverflow) != 0 {
					t.Errorf("site %d unexpected drops %v", i+1, s.Drops)
				}
			}
		})
	}
}

func exerciseChassis(t *testing.T, trs []Transport, chs []<-chan collected) {
	t.Helper()
	if err := trs[0].Send(2, 5, []byte("to two")); err != nil {
		t.Fatal(err)
	}
	if got := want(t, chs[1], 1, 5*time.Second)[0]; got.From != 1 || got.To != 2 || string(got.Payload) != "to two" {
		t.Fatalf("unicast: %+v", got)
	}
	if err := trs[1].Send(AllSites, 6, []byte("all")); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if got := want(t, chs[i], 1, 5*time.Second)[0]; got.From != 2 || string(got.Payload) != "all" {
			t.Fatalf("multicast at site %d: %+v", i+1, got)
		}
	}
	big := randBytes(2, MaxMessageSize)
	if err := trs[0].Send(AllSites, 7, big); err != nil {
		t.Fatal(err)
	}
	if err := trs[2].Send(2, 8, big[:MaxMessageSize/2]); err != nil {
		t.Fatal(err)
	}
	// Site 2 gets both big messages, from different senders, in either order.
	for _, i := range []int{1, 2} {
		k := 1
		if i == 1 {
			k = 2
		}
		for _, got := range want(t, chs[i], k, 10*time.Second) {
			wantP := big
			if got.Type == 8 {
				wantP = big[:MaxMessageSize/2]
			}
			if (got.Type != 7 && got.Type != 8) || !bytes.Equal(got.Payload, wantP) {
				t.Fatalf("big message at site %d: type %d, %d bytes", i+1, got.Type, len(got.Payload))
			}
		}
	}
}

// partitionAndHeal cuts board b (site 3) off, checks it hears nothing, then
// heals and checks traffic flows again.
func partitionAndHeal(t *testing.T, b *rig.Board, trs []Transport, chs []<-chan collected) {
	t.Helper()
	if err := b.LinkDown(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := trs[0].Send(AllSites, 20, []byte("cut")); err != nil {
			t.Fatal(err)
		}
	}
	// Site 2 still hears site 1 while site 3 is cut off.
	if got := want(t, chs[1], 20, 5*time.Second); got[19].Type != 20 {
		t.Fatal("site 2 lost traffic during site 3's partition")
	}
	if err := b.LinkUp(); err != nil {
		t.Fatal(err)
	}
	// The port may need a moment to forward again: resend the marker until
	// it arrives; nothing sent during the cut may arrive before it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := trs[0].Send(3, 21, []byte("healed")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-chs[2]:
			if m.Type != 21 {
				t.Fatalf("site 3 received %d (%q) from the partition", m.Type, m.Payload)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("site 3 unreachable 10 s after heal")
		}
	}
}

// sendFrames sends backplane frames (after an Ethernet header to our
// group's MAC) from a plain AF_PACKET socket on board b.
func sendFrames(t *testing.T, b *rig.Board, frames [][]byte) {
	t.Helper()
	err := b.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(b.Iface)
		if err != nil {
			return err
		}
		eth := append(append([]byte{}, GroupMAC(GroupID(rigGroup))...), b.MAC...)
		eth = append(eth, EtherType>>8, EtherType&0xff)
		for _, f := range frames {
			if err := unix.Sendto(fd, append(eth[:14:14], f...), 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(EtherType)}); err != nil {
				return fmt.Errorf("send crafted frame: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRigRawGroupFilter(t *testing.T) {
	c := newChassis(t, 3)
	sender := rawOn(t, c.Boards[0], nil)
	filtered := rawOn(t, c.Boards[1], nil)
	unfiltered := rawOn(t, c.Boards[2], func(cfg *RawConfig) { cfg.NoFilter = true })
	chs := collectAll(t, []Transport{sender, filtered, unfiltered})
	chF, chU := chs[1], chs[2]
	f0, u0 := filtered.Stats(), unfiltered.Stats()
	pk0, _, err := filtered.(*rawTransport).kernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if !filtered.Stats().Filter.Attached || unfiltered.Stats().Filter.Attached {
		t.Fatal("filter attachment state wrong")
	}
	const n = 50
	var frames [][]byte
	for i := 0; i < n; i++ {
		frames = append(frames, AppendFrame(nil, Header{Type: 1, Group: GroupID("intruder"), From: 1, To: AllSites, MsgID: uint32(i), NFrags: 1}, []byte("foreign")))
	}
	// Our group but broken: 5 bad crc, 3 bad version, 2 too short for a header.
	for i := 0; i < 5; i++ {
		f := AppendFrame(nil, Header{Type: 1, Group: GroupID(rigGroup), From: 1, To: AllSites, MsgID: uint32(i), NFrags: 1}, []byte("corrupt"))
		f[len(f)-1] ^= 0xff
		frames = append(frames, f)
	}
	for i := 0; i < 3; i++ {
		f := AppendFrame(nil, Header{Type: 1, Group: GroupID(rigGroup), From: 1, To: AllSites, MsgID: uint32(i), NFrags: 1}, nil)
		f[2] = 9
		frames = append(frames, f)
	}
	frames = append(frames, []byte{0xA7, 0xB0, 1}, []byte{0xA7, 0xB0, 1, 1, 2, 3, 4, 5})
	sendFrames(t, c.Boards[0], frames)
	if err := sender.Send(AllSites, 9, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	firstIs(t, chF, 9, 5*time.Second)
	firstIs(t, chU, 9, 5*time.Second)
	fs, us := filtered.Stats(), unfiltered.Stats()
	// Only what happened after the warm-up counts.
	fs.Filter.Passed -= f0.Filter.Passed
	fs.FramesIn -= f0.FramesIn
	fs.MsgsIn -= f0.MsgsIn
	us.Drops[DropForeignGroup] -= u0.Drops[DropForeignGroup]
	us.Drops[DropShort] -= u0.Drops[DropShort]
	// The kernel dropped every foreign frame; user space saw only the marker.
	if fs.Filter.ForeignGroup != n || fs.Filter.Short != 2 || fs.Filter.Passed != 9 {
		t.Fatalf("kernel filter counters %+v, want %d foreign, 2 short, 9 passed", fs.Filter, n)
	}
	if fs.Drop(DropForeignGroup) != 0 || fs.FramesIn != 9 {
		t.Fatalf("foreign frames reached user space: %d frames in, drops %v", fs.FramesIn, fs.Drops)
	}
	if fs.Drop(DropBadCRC) != 5 || fs.Drop(DropBadVersion) != 3 || fs.MsgsIn != 1 {
		t.Fatalf("bad frames of our group: drops %v, %d delivered", fs.Drops, fs.MsgsIn)
	}
	if pk, drops, err := filtered.(*rawTransport).kernelStats(); err != nil || pk-pk0 != 9 || drops != 0 {
		t.Fatalf("PACKET_STATISTICS: %d packets queued (want 9), %d dropped, %v", pk-pk0, drops, err)
	}
	// Without the filter the same frames do reach user space (and are
	// dropped there), so the check above can fail.
	if us.Drop(DropForeignGroup) != n || us.Drop(DropShort) != 2 {
		t.Fatalf("unfiltered transport counted %d foreign frames, want %d", us.Drop(DropForeignGroup), n)
	}
}

// TestRigSendLeavesReceiveSocketQuiet checks, for the raw transport and
// the udp one's one-socket layout, that a send raises no EPOLLOUT on the
// receiving socket. The Go netpoller registers a socket for EPOLLOUT as
// well as EPOLLIN, so write space reported on the receive socket wakes a
// thread sleeping in epoll_wait for nothing, once per send (it did while
// one socket did both, in either transport).
func TestRigSendLeavesReceiveSocketQuiet(t *testing.T) {
	c := newChassis(t, 2)
	sites := rigUDPSites(c, DefaultUDPPort)
	for _, kind := range []string{"raw", "udp"} {
		t.Run(kind, func(t *testing.T) {
			var a, b Transport
			var recvFd, txFd int
			if kind == "raw" {
				ra := rawOn(t, c.Boards[0], nil).(*rawTransport)
				a, b, recvFd, txFd = ra, rawOn(t, c.Boards[1], nil), ra.fds[0], ra.txFd
			} else {
				ua := udpOn(t, c.Boards[0], sites).(*udpTransport)
				if len(ua.fds) != 1 {
					t.Fatalf("udp: %d receive sockets, want the one-socket layout", len(ua.fds))
				}
				a, b, recvFd, txFd = ua, udpOn(t, c.Boards[1], sites), ua.fds[0], ua.txFd
			}
			got := collect(t, b)

			ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(ep)
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLET, Fd: int32(recvFd)}
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, recvFd, &ev); err != nil {
				t.Fatal(err)
			}
			events := make([]unix.EpollEvent, 4)
			// A socket is writable when registered: that first edge is reported once.
			if _, err := unix.EpollWait(ep, events, 0); err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				to := c.Boards[1].Site
				if i%2 == 1 {
					to = AllSites // multicast too
				}
				if err := a.Send(to, 7, []byte(fmt.Sprintf("frame %d", i))); err != nil {
					t.Fatal(err)
				}
			}
			// Delivered: the sent buffers have been handed over, so their write
			// space has been reported wherever it is reported.
			want(t, got, 8, 5*time.Second)
			n, err := unix.EpollWait(ep, events, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range events[:n] {
				if e.Events&unix.EPOLLOUT != 0 {
					t.Fatalf("sending raised EPOLLOUT (events %#x) on the receive socket: every send would wake the netpoller", e.Events)
				}
			}

			// The send socket queues nothing: every frame for a goes to its
			// receive socket only.
			gotA := collect(t, a)
			for i := range 4 {
				if err := b.Send(AllSites, 7, []byte(fmt.Sprintf("back %d", i))); err != nil {
					t.Fatal(err)
				}
			}
			want(t, gotA, 4, 5*time.Second)
			if queued := queuedTo(t, kind, txFd); queued != 0 {
				t.Fatalf("the send socket had %d frames queued to it; it must receive nothing", queued)
			}
		})
	}
}

// queuedTo counts what was queued to a socket: PACKET_STATISTICS for a
// raw one, the bytes waiting (SIOCINQ) for a udp one.
func queuedTo(t *testing.T, kind string, fd int) int {
	t.Helper()
	if kind == "raw" {
		st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			t.Fatal(err)
		}
		return int(st.Packets)
	}
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRigRawRingOverflow fills a small receive ring while nobody reads:
// the kernel drops what does not fit and counts it, and the ring then hands
// over what it kept, in order, and what comes next (our place in it stays
// the kernel's, over laps and drops).
func TestRigRawRingOverflow(t *testing.T) {
	c := newChassis(t, 2)
	tx := rawOn(t, c.Boards[0], nil)
	rx := rawOn(t, c.Boards[1], func(c *RawConfig) { c.RingBytes = 64 << 10 })
	rr := rx.(*rawTransport)
	if rr.pr == nil {
		t.Fatalf("no receive ring: %s", rx.Stats().RingError)
	}
	if !rx.Stats().RecvRing {
		t.Fatal("Stats.RecvRing false with a ring")
	}
	slots := rr.pr.frames
	sent := 5 * slots
	const typ, typEnd = 20, 21
	msgs := make([]Message, 16)
	for lap := 0; lap < 3; lap++ {
		drops0 := rx.Stats().SocketDrops
		for i := range sent {
			if err := tx.Send(2, typ, fmt.Appendf(nil, "%03d", i)); err != nil {
				t.Fatal(err)
			}
		}
		// The kernel has taken every frame once it counted the ones
		// that did not fit.
		deadline := time.Now().Add(10 * time.Second)
		for rx.Stats().SocketDrops-drops0 < uint64(sent-slots) {
			if time.Now().After(deadline) {
				t.Fatalf("lap %d: %d of %d frames counted as dropped", lap, rx.Stats().SocketDrops-drops0, sent-slots)
			}
			runtime.Gosched()
		}
		var got []string
		for len(got) < slots {
			n, err := rx.Recv(msgs)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs[:n] {
				got = append(got, string(m.Payload))
			}
		}
		for i, p := range got {
			if want := fmt.Sprintf("%03d", i); p != want {
				t.Fatalf("lap %d: message %d is %q, want %q (the first %d fit)", lap, i, p, want, slots)
			}
		}
		if len(got) != slots || rx.Pending() {
			t.Fatalf("lap %d: %d messages and more waiting, want the ring's %d", lap, len(got), slots)
		}
		if err := tx.Send(2, typEnd, nil); err != nil {
			t.Fatal(err)
		}
		if n, err := rx.Recv(msgs); err != nil || n != 1 || msgs[0].Type != typEnd {
			t.Fatalf("lap %d: after the drain got %d messages (%v), want the end marker", lap, n, err)
		}
	}
}

// TestRigUDPSendPortNotOwn narrows the namespace's ephemeral ports to the
// site's own port and the next: the send socket, whose port the kernel
// picks, must not take the site's, which the receive socket binds (the
// default group port lies in the ephemeral range). It took it about half
// the time while the send socket was opened first.
func TestRigUDPSendPortNotOwn(t *testing.T) {
	c := newChassis(t, 2)
	b := c.Boards[0]
	sites := rigUDPSites(c, DefaultUDPPort)
	const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	narrow := fmt.Sprintf("%d %d", DefaultUDPPort, DefaultUDPPort+1)
	// /proc/sys/net is the namespace of the thread that opens it.
	if err := b.Do(func() error { return os.WriteFile(rangeFile, []byte(narrow), 0o644) }); err != nil {
		t.Fatalf("narrowing the ephemeral ports of board %d: %v", b.Site, err)
	}
	for i := range 8 {
		var tr Transport
		if err := b.Do(func() (err error) {
			tr, err = NewUDP(UDPConfig{Site: b.Site, Group: GroupID(rigGroup), Sites: sites})
			return err
		}); err != nil {
			t.Fatalf("open %d with ephemeral ports %s: %v", i, narrow, err)
		}
		sa, err := unix.Getsockname(tr.(*udpTransport).txFd)
		if err != nil {
			t.Fatal(err)
		}
		if port := sa.(*unix.SockaddrInet4).Port; port != DefaultUDPPort+1 {
			t.Fatalf("open %d: the send socket has port %d, want %d (the one left)", i, port, DefaultUDPPort+1)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
