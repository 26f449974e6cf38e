package backplane

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopbackSites reserves n UDP ports on 127.0.0.1.
func loopbackSites(t *testing.T, n int) map[uint16]netip.AddrPort {
	t.Helper()
	sites := make(map[uint16]netip.AddrPort)
	var hold []net.PacketConn
	for i := 1; i <= n; i++ {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, pc)
		sites[uint16(i)] = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	for _, pc := range hold {
		pc.Close()
	}
	return sites
}

func udpSites(t *testing.T, n int, mod func(*UDPConfig)) []Transport {
	t.Helper()
	sites := loopbackSites(t, n)
	var out []Transport
	for i := 1; i <= n; i++ {
		cfg := UDPConfig{Site: uint16(i), Group: GroupID("udp-test"), Sites: sites}
		if mod != nil {
			mod(&cfg)
		}
		tr, err := NewUDP(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		out = append(out, tr)
	}
	return out
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestUDPLoopback(t *testing.T) {
	trs := udpSites(t, 3, nil)
	chs := []<-chan collected{collect(t, trs[0]), collect(t, trs[1]), collect(t, trs[2])}

	s := trs[0].Stats()
	if !s.MulticastFallback || !strings.Contains(s.FallbackReason, "lo") {
		t.Fatalf("loopback should fall back to unicast fan-out: %+v", s)
	}
	t.Logf("fallback reason: %s", s.FallbackReason)

	if err := trs[0].Send(2, 5, []byte("to two")); err != nil {
		t.Fatal(err)
	}
	if got := want(t, chs[1], 1, 5*time.Second)[0]; got.From != 1 || got.To != 2 || got.Type != 5 || string(got.Payload) != "to two" {
		t.Fatalf("unicast: %+v", got)
	}
	if err := trs[1].Send(AllSites, 6, []byte("all")); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if got := want(t, chs[i], 1, 5*time.Second)[0]; got.From != 2 || got.To != AllSites || string(got.Payload) != "all" {
			t.Fatalf("multicast at %d: %+v", i+1, got)
		}
	}

	// A 1 MiB burst needs a receive buffer the kernel grants only to
	// CAP_NET_ADMIN (SO_RCVBUFFORCE) or with a raised net.core.rmem_max.
	if rb, err := unix.GetsockoptInt(trs[0].(*udpTransport).fds[0], unix.SOL_SOCKET, unix.SO_RCVBUF); err != nil || rb < 4<<20 {
		t.Skipf("receive buffer %d bytes (%v): too small for 1 MiB bursts on loopback; run as root or raise net.core.rmem_max", rb, err)
	}
	// 1 MiB: incompressible (fragmented) and compressible (lz4, fragmented).
	big := randBytes(1, MaxMessageSize)
	comp := bytes.Repeat([]byte("fib 10.1.2.0/24 nh 7; "), MaxMessageSize/22)
	for _, p := range [][]byte{big, comp} {
		if err := trs[2].Send(AllSites, 7, p); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{0, 1} {
			if got := want(t, chs[i], 1, 10*time.Second)[0]; !bytes.Equal(got.Payload, p) {
				t.Fatalf("1 MiB at site %d: %d bytes, equal=false", i+1, len(got.Payload))
			}
		}
	}
	if st := trs[2].Stats(); st.Compressed != 1 || st.FramesOut < 2*700 {
		t.Fatalf("sender stats %+v", st)
	}
	if st := trs[0].Stats(); st.Dropped() != 0 || st.MsgsIn != 3 {
		t.Fatalf("receiver stats: drops %v, %d messages", st.Drops, st.MsgsIn)
	}

	if err := trs[0].Send(9, 1, nil); !errors.Is(err, ErrUnknownSite) {
		t.Fatalf("unknown site: %v", err)
	}
	if err := trs[0].Send(2, 1, make([]byte, MaxMessageSize+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
}

func TestUDPForeignAndGarbage(t *testing.T) {
	trs := udpSites(t, 2, nil)
	ch := collect(t, trs[1])
	st := trs[1].Stats()
	_ = st
	// A stranger on the same port: another group's frame, and garbage.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := net.UDPAddrFromAddrPort(trs[1].(*udpTransport).cfg.Sites[2])
	foreign := AppendFrame(nil, Header{Type: 1, Group: GroupID("other"), From: 1, To: 2, MsgID: 1, NFrags: 1}, []byte("x"))
	for _, b := range [][]byte{foreign, []byte("garbage that is long enough to hold a header...")} {
		if _, err := pc.WriteTo(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := trs[0].Send(2, 9, nil); err != nil {
		t.Fatal(err)
	}
	firstIs(t, ch, 9, 5*time.Second)
	s := trs[1].Stats()
	if s.Drop(DropForeignGroup) != 1 || s.Drop(DropBadMagic) != 1 {
		t.Fatalf("drops %v", s.Drops)
	}
}

func TestUDPCloseUnblocksRecv(t *testing.T) {
	trs := udpSites(t, 1, nil)
	done := make(chan error, 1)
	go func() {
		_, err := trs[0].Recv(make([]Message, 4))
		done <- err
	}()
	// Close must wake the Recv whether or not it already sleeps in poll.
	if err := trs[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv not unblocked by Close")
	}
	if err := trs[0].Send(1, 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestUDPBadConfig(t *testing.T) {
	sites := loopbackSites(t, 2)
	for _, cfg := range []UDPConfig{
		{Site: 3, Sites: sites},
		{Site: AllSites, Sites: sites},
		{Site: 1, Sites: sites, MaxDatagram: 100},
		{Site: 1, Sites: sites, MulticastAddr: netip.MustParseAddr("10.0.0.1")},
	} {
		if tr, err := NewUDP(cfg); !errors.Is(err, ErrBadConfig) {
			if tr != nil {
				tr.Close()
			}
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

// TestUDPConcurrentSenders: Send from several goroutines at once, small and
// fragmented messages mixed; every message arrives intact.
func TestUDPConcurrentSenders(t *testing.T) {
	trs := udpSites(t, 2, nil)
	ch := collect(t, trs[1])
	const senders, each = 4, 50
	big := randBytes(5, 20000)
	errs := make(chan error, senders)
	for g := 0; g < senders; g++ {
		go func() {
			for i := 0; i < each; i++ {
				p := big[:100]
				if i%5 == 0 {
					p = big
				}
				if err := trs[0].Send(2, uint8(g), p); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < senders; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := want(t, ch, senders*each, 10*time.Second)
	for _, m := range got {
		if !bytes.Equal(m.Payload, big[:len(m.Payload)]) || (len(m.Payload) != 100 && len(m.Payload) != len(big)) {
			t.Fatalf("message from goroutine %d corrupted (%d bytes)", m.Type, len(m.Payload))
		}
	}
}
