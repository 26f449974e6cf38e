package rig

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestOptionsValidation(t *testing.T) {
	for _, opt := range []Options{
		{Boards: -1},
		{Boards: MaxBoards + 1},
		{Boards: 1, MTU: 100},
		{Boards: 1, MTU: 65000},
		{Boards: 1, Prefix: "toolong"},
		{Boards: 1, Prefix: "1bh"},
		{Boards: 1, Prefix: "b-h"},
		{Boards: 1, Prefix: "BH"},
	} {
		c, err := New(opt)
		if !errors.Is(err, ErrBadOptions) {
			if c != nil {
				c.Close()
			}
			t.Errorf("New(%+v) = %v, want ErrBadOptions", opt, err)
		}
	}
}

func TestNewForTestCleansUp(t *testing.T) {
	RequireRoot(t)
	var c *Chassis
	t.Run("create", func(t *testing.T) {
		c = NewForTest(t, Options{Boards: 2, Prefix: testPrefix})
		if got := len(c.Boards); got != 2 {
			t.Fatalf("got %d boards, want 2", got)
		}
		for _, ns := range c.Namespaces() {
			if !nsExists(ns) {
				t.Errorf("namespace %s missing while the chassis is open", ns)
			}
			if !strings.Contains(netnsList(t), ns) {
				t.Errorf("ip netns list does not show %s", ns)
			}
		}
	})
	// The subtest's cleanup has run: nothing of the chassis may remain.
	assertGone(t, c.ID())
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Boards[0].LinkDown(); !errors.Is(err, ErrClosed) {
		t.Errorf("LinkDown after Close = %v, want ErrClosed", err)
	}
	if _, err := c.AddBoard(); !errors.Is(err, ErrClosed) {
		t.Errorf("AddBoard after Close = %v, want ErrClosed", err)
	}
}

func TestChassisLayoutAndTraffic(t *testing.T) {
	c := newChassis(t, Options{Boards: 3})
	if len(c.Boards) != 3 {
		t.Fatalf("got %d boards, want 3", len(c.Boards))
	}
	for i, b := range c.Boards {
		if b.Index != i || b.Site != uint16(i+1) || b.Iface != "bp0" {
			t.Errorf("board %d: Index %d Site %d Iface %q", i, b.Index, b.Site, b.Iface)
		}
		if len(b.Bridgeside()) > 15 {
			t.Errorf("bridge-side name %q exceeds IFNAMSIZ", b.Bridgeside())
		}
		if !netip.MustParsePrefix("10.208.0.0/16").Contains(b.IP) || b.IP.As4()[3] != byte(b.Site) {
			t.Errorf("board %d: IP %v", b.Site, b.IP)
		}
		err := b.Do(func() error {
			ifi, err := net.InterfaceByName("bp0")
			if err != nil {
				return err
			}
			if ifi.HardwareAddr.String() != b.MAC.String() {
				return fmt.Errorf("bp0 MAC %v, want %v", ifi.HardwareAddr, b.MAC)
			}
			if ifi.MTU != DefaultMTU {
				return fmt.Errorf("bp0 MTU %d, want %d", ifi.MTU, DefaultMTU)
			}
			if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagRunning == 0 {
				return fmt.Errorf("bp0 flags %v, want up and running", ifi.Flags)
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			if len(addrs) != 1 || addrs[0].String() != b.IPPrefix().String() {
				return fmt.Errorf("bp0 addresses %v, want only %v (and no IPv6)", addrs, b.IPPrefix())
			}
			lo, err := net.InterfaceByName("lo")
			if err != nil {
				return err
			}
			if lo.Flags&net.FlagUp == 0 {
				return fmt.Errorf("lo is down")
			}
			return nil
		})
		if err != nil {
			t.Errorf("board %d: %v", b.Site, err)
		}
	}
	if c.Board(2) != c.Boards[1] || c.Board(99) != nil {
		t.Errorf("Board(site) lookup wrong")
	}

	const port = 7400
	rx := make([]*net.UDPConn, len(c.Boards))
	for i, b := range c.Boards {
		rx[i] = udpListen(t, b, port)
	}
	for _, from := range c.Boards {
		for j, to := range c.Boards {
			if from == to {
				continue
			}
			msg := fmt.Sprintf("ping %d->%d", from.Site, to.Site)
			if err := udpExchange(t, from, netip.AddrPortFrom(to.IP, port), rx[j], msg); err != nil {
				t.Error(err)
			}
		}
	}

	// Multicast, as the UDP transport uses it: boards 2 and 3 join a group
	// on bp0, board 1 sends to it.
	group := netip.AddrPortFrom(netip.MustParseAddr("239.208.0.1"), 7401)
	var members []*net.UDPConn
	for _, b := range c.Boards[1:] {
		err := b.Do(func() error {
			ifi, err := net.InterfaceByName("bp0")
			if err != nil {
				return err
			}
			conn, err := net.ListenMulticastUDP("udp4", ifi, net.UDPAddrFromAddrPort(group))
			if err != nil {
				return err
			}
			members = append(members, conn)
			t.Cleanup(func() { conn.Close() })
			return nil
		})
		if err != nil {
			t.Fatalf("board %d: join %v: %v", b.Site, group, err)
		}
	}
	for i, m := range members {
		if err := udpExchange(t, c.Boards[0], group, m, "to the group"); err != nil {
			t.Errorf("multicast to board %d: %v", c.Boards[i+1].Site, err)
		}
	}
}

func TestJumboMTU(t *testing.T) {
	c := newChassis(t, Options{Boards: 2, MTU: 9000})
	for _, b := range c.Boards {
		err := b.Do(func() error {
			ifi, err := net.InterfaceByName("bp0")
			if err != nil {
				return err
			}
			if ifi.MTU != 9000 {
				return fmt.Errorf("bp0 MTU %d, want 9000", ifi.MTU)
			}
			return nil
		})
		if err != nil {
			t.Errorf("board %d: %v", b.Site, err)
		}
	}
	err := c.DoBackplane(func() error {
		for _, name := range []string{c.Bridge, c.Boards[0].Bridgeside()} {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			if ifi.MTU != 9000 {
				return fmt.Errorf("%s MTU %d, want 9000", name, ifi.MTU)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// An 8000-byte datagram with don't-fragment set crosses only a jumbo link.
	rx := udpListen(t, c.Boards[1], 7402)
	var tx *net.UDPConn
	err = c.Boards[0].Do(func() error {
		var err error
		tx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.Boards[1].IP, 7402)))
		if err != nil {
			return err
		}
		raw, err := tx.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer tx.Close()
	big := make([]byte, 8000)
	buf := make([]byte, 9000)
	deadline := time.Now().Add(waitTimeout)
	for {
		if _, err := tx.Write(big); err != nil {
			t.Fatalf("send 8000 bytes with DF: %v", err)
		}
		rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := rx.Read(buf)
		if err == nil {
			if n != len(big) {
				t.Fatalf("received %d bytes, want %d", n, len(big))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("8000-byte datagram not received: %v", err)
		}
	}
}

func TestParallelChassisHaveDistinctNames(t *testing.T) {
	RequireRoot(t)
	var (
		wg   sync.WaitGroup
		cs   [2]*Chassis
		errs [2]error
	)
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs[i], errs[i] = New(Options{Boards: 2, Prefix: testPrefix})
		}()
	}
	wg.Wait()
	for i, c := range cs {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				assertGone(t, c.ID())
			})
		}
		if errs[i] != nil {
			t.Fatalf("chassis %d: %v", i, errs[i])
		}
	}
	seen := map[string]string{}
	note := func(what, name string) {
		if prev, dup := seen[name]; dup {
			t.Errorf("%s %q also used as %s", what, name, prev)
		}
		seen[name] = what
	}
	for i, c := range cs {
		note(fmt.Sprintf("chassis %d backplane", i), c.BackplaneNS)
		note(fmt.Sprintf("chassis %d bridge", i), c.Bridge)
		for _, b := range c.Boards {
			note(fmt.Sprintf("chassis %d board %d ns", i, b.Site), b.NS)
			note(fmt.Sprintf("chassis %d board %d veth", i, b.Site), b.Bridgeside())
			note(fmt.Sprintf("chassis %d board %d MAC", i, b.Site), b.MAC.String())
		}
	}
}

func TestLinkDownBlocksAndLinkUpHeals(t *testing.T) {
	c := newChassis(t, Options{Boards: 3})
	b1, b2, b3 := c.Boards[0], c.Boards[1], c.Boards[2]
	const port = 7403
	rx2 := udpListen(t, b2, port)
	rx1 := udpListen(t, b1, port)
	to2 := netip.AddrPortFrom(b2.IP, port)
	if err := udpExchange(t, b1, to2, rx2, "before"); err != nil {
		t.Fatal(err)
	}

	if err := b1.LinkDown(); err != nil {
		t.Fatal(err)
	}
	err := b1.Do(func() error {
		ifi, err := net.InterfaceByName("bp0")
		if err != nil {
			return err
		}
		if ifi.Flags&net.FlagRunning != 0 {
			return fmt.Errorf("bp0 still has carrier after LinkDown (flags %v)", ifi.Flags)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Raw frames have no ARP queue to wait in: those sent while the link is
	// down, both ways, must never arrive. They claim site 100 + sender.
	fd1, fd2 := packetSocket(t, b1), packetSocket(t, b2)
	r1, r2, r3 := startReceiver(t, b1), startReceiver(t, b2), startReceiver(t, b3)
	for _, s := range []struct {
		fd int
		b  *Board
	}{{fd1, b1}, {fd2, b2}} {
		for i := range 50 {
			// A send error is a dead link too.
			syscall.Sendto(s.fd, frame(s.b.MAC, 100+s.b.Site, uint32(i)), 0, nil)
		}
	}
	// The rest of the backplane still works.
	if err := udpExchange(t, b3, to2, rx2, "others"); err != nil {
		t.Errorf("board 3 -> 2 with board 1 cut off: %v", err)
	}

	if err := b1.LinkUp(); err != nil {
		t.Fatal(err)
	}
	// After LinkUp frames flow again both ways; keep sending until one
	// arrives, then no frame of the down phase may have arrived before it.
	deadline := time.Now().Add(waitTimeout)
	for r2.from(b1.Site) == 0 || r1.from(b2.Site) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no frame crossed within %v of LinkUp (1->2: %d, 2->1: %d)", waitTimeout, r2.from(b1.Site), r1.from(b2.Site))
		}
		syscall.Sendto(fd1, frame(b1.MAC, b1.Site, 0), 0, nil)
		syscall.Sendto(fd2, frame(b2.MAC, b2.Site, 0), 0, nil)
		time.Sleep(5 * time.Millisecond) // pacing of the resend, not synchronisation
	}
	// Board 2's down-phase broadcasts reached board 3, which was not cut
	// off: they were really sent.
	waitFor(t, "board 2's down-phase frames at board 3", func() bool { return r3.from(100+b2.Site) == 50 })
	if n := r2.from(100 + b1.Site); n != 0 {
		t.Errorf("%d frames board 1 sent while its link was down reached board 2", n)
	}
	if n := r3.from(100 + b1.Site); n != 0 {
		t.Errorf("%d frames board 1 sent while its link was down reached board 3", n)
	}
	if n := r1.from(100 + b2.Site); n != 0 {
		t.Errorf("%d frames board 2 sent while board 1's link was down reached board 1", n)
	}
	// IP traffic heals too. Datagrams sent while down may have waited in
	// the ARP queue and arrive now, as after a real cable pull; the check
	// only needs a fresh one through.
	check := func(rx *net.UDPConn, from *Board, to netip.AddrPort) {
		t.Helper()
		if err := udpExchange(t, from, to, rx, "up"); err != nil {
			t.Error(err)
		}
	}
	check(rx2, b1, to2)
	check(rx1, b2, netip.AddrPortFrom(b1.IP, port))
}

func TestAddAndRemoveBoard(t *testing.T) {
	c := newChassis(t, Options{Boards: 1})
	b2, err := c.AddBoard()
	if err != nil {
		t.Fatal(err)
	}
	if b2.Site != 2 || len(c.Boards) != 2 {
		t.Fatalf("added board site %d, %d boards", b2.Site, len(c.Boards))
	}
	rx := udpListen(t, b2, 7404)
	if err := udpExchange(t, c.Boards[0], netip.AddrPortFrom(b2.IP, 7404), rx, "hello new board"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveBoard(b2); err != nil {
		t.Fatal(err)
	}
	if nsExists(b2.NS) || len(c.Boards) != 1 {
		t.Fatalf("board 2 still present after RemoveBoard (ns exists %v, %d boards)", nsExists(b2.NS), len(c.Boards))
	}
	if err := c.RemoveBoard(b2); !errors.Is(err, ErrUnknownBoard) {
		t.Errorf("second RemoveBoard = %v, want ErrUnknownBoard", err)
	}
	b3, err := c.AddBoard()
	if err != nil {
		t.Fatal(err)
	}
	if b3.Site != 3 {
		t.Errorf("site after a removal = %d, want 3 (sites are never reused)", b3.Site)
	}
}

func TestDo(t *testing.T) {
	c := newChassis(t, Options{Boards: 1})
	b := c.Boards[0]
	var want syscall.Stat_t
	if err := syscall.Stat(nsPath(b.NS), &want); err != nil {
		t.Fatal(err)
	}
	var outside syscall.Stat_t
	runtime.LockOSThread()
	err := syscall.Stat("/proc/thread-self/ns/net", &outside)
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	err = b.Do(func() error {
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		if st.Ino != want.Ino {
			return fmt.Errorf("inside Do: namespace inode %d, want %d", st.Ino, want.Ino)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The namespace switch did not leak into the caller's threads.
	runtime.LockOSThread()
	var after syscall.Stat_t
	err = syscall.Stat("/proc/thread-self/ns/net", &after)
	runtime.UnlockOSThread()
	if err != nil || after.Ino != outside.Ino {
		t.Errorf("after Do: namespace inode %d (%v), want %d", after.Ino, err, outside.Ino)
	}
	sentinel := errors.New("from fn")
	if err := b.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want the panic of fn", v)
			}
		}()
		b.Do(func() error { panic("boom") })
	}()
	// Command runs in the namespace too: `ip link` there shows bp0 and no
	// bridge-side veth.
	out, err := b.Command(t.Context(), "ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("Command: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "bp0") || strings.Contains(string(out), b.Bridgeside()) {
		t.Errorf("ip link inside %s:\n%s", b.NS, out)
	}
	// `ip netns exec` execs the program: the pid the caller holds is the
	// program's own, so signals reach it.
	sleeper := b.Command(t.Context(), "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Wait()
	defer sleeper.Process.Kill()
	waitFor(t, "the command to exec sleep", func() bool {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sleeper.Process.Pid))
		return err == nil && strings.TrimSpace(string(comm)) == "sleep"
	})
	out, err = c.BackplaneCommand(t.Context(), "ip", "-o", "link").CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.Bridge) {
		t.Errorf("BackplaneCommand: %v:\n%s", err, out)
	}
}

func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	const prefix = "bhs"
	ipPath, err := findIP()
	if err != nil {
		t.Fatal(err)
	}
	// A process that has exited gives a pid no live chassis holds.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	type fake struct {
		id     string
		marker []byte // nil: no marker
		stale  bool
	}
	// Random ids keep two runs of this test on one machine apart.
	ids := map[string]bool{}
	for len(ids) < 5 {
		var r [2]byte
		rand.Read(r[:])
		ids[hex.EncodeToString(r[:])] = true
	}
	var hx []string
	for id := range ids {
		hx = append(hx, id)
	}
	fakes := []fake{
		{id: prefix + "z" + hx[0][1:], marker: nil, stale: false}, // not 4 hex digits: not of the scheme
		{id: prefix + hx[1], marker: formatMarker(marker{pid: dead.Process.Pid, start: 1}), stale: true},
		{id: prefix + hx[2], marker: nil, stale: true},
		{id: prefix + hx[3], marker: formatMarker(marker{pid: os.Getpid(), start: start}), stale: false},
		{id: prefix + hx[4], marker: formatMarker(marker{pid: os.Getpid(), start: start + 1}), stale: true}, // pid reused
	}
	var all []string
	t.Cleanup(func() {
		for _, ns := range all {
			deleteNS(ipPath, ns)
		}
		for _, f := range fakes {
			os.Remove(markerDir + "/" + f.id)
		}
	})
	for _, f := range fakes {
		if f.marker != nil {
			if err := os.WriteFile(markerDir+"/"+f.id, f.marker, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, ns := range []string{f.id + "-bp", f.id + "-b1"} {
			if err := runIP(ipPath, "", "netns", "add", ns); err != nil {
				t.Fatal(err)
			}
			all = append(all, ns)
		}
	}
	deleted, err := SweepStale(prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fakes {
		for _, ns := range []string{f.id + "-bp", f.id + "-b1"} {
			if gone := !nsExists(ns); gone != f.stale {
				t.Errorf("%s: deleted %v, want %v", ns, gone, f.stale)
			}
			if slices.Contains(deleted, ns) != f.stale {
				t.Errorf("%s: reported deleted %v, want %v", ns, slices.Contains(deleted, ns), f.stale)
			}
		}
		if f.marker != nil {
			_, err := os.Stat(markerDir + "/" + f.id)
			if gone := errors.Is(err, os.ErrNotExist); gone != f.stale {
				t.Errorf("marker %s: removed %v, want %v", f.id, gone, f.stale)
			}
		}
	}
	if _, err := SweepStale("Bad-Prefix"); !errors.Is(err, ErrBadOptions) {
		t.Errorf("SweepStale(bad prefix) = %v, want ErrBadOptions", err)
	}
}

func TestMarkerAliveness(t *testing.T) {
	start, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !(marker{pid: os.Getpid(), start: start}).alive() {
		t.Error("own marker reported dead")
	}
	if (marker{pid: os.Getpid(), start: start + 1}).alive() {
		t.Error("marker with another start time reported alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(cmd.Process.Pid, 0); err == nil {
		t.Skip("pid of an exited child was reused already")
	}
	if (marker{pid: cmd.Process.Pid}).alive() {
		t.Error("marker of an exited process reported alive")
	}
}

func TestAvailable(t *testing.T) {
	err := Available()
	if os.Geteuid() != 0 {
		if !errors.Is(err, ErrNoPrivilege) {
			t.Fatalf("Available as uid %d = %v, want ErrNoPrivilege", os.Geteuid(), err)
		}
		if _, err := New(Options{Boards: 1}); !errors.Is(err, ErrNoPrivilege) {
			t.Fatalf("New as uid %d = %v, want ErrNoPrivilege", os.Geteuid(), err)
		}
		return
	}
	if reason, _ := missingPrivilege(); (err == nil) != (reason == "") {
		t.Fatalf("Available = %v but skip reason %q", err, reason)
	}
}

// TestCloseRacesAddBoard: boards added while the chassis closes are either
// refused with ErrClosed or removed by Close; nothing is left behind.
func TestCloseRacesAddBoard(t *testing.T) {
	RequireRoot(t)
	c, err := New(Options{Boards: 1, Prefix: testPrefix})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.AddBoard()
		}()
	}
	closeErr := c.Close()
	wg.Wait()
	if closeErr != nil {
		t.Errorf("Close: %v", closeErr)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("AddBoard %d: %v", i, err)
		}
	}
	assertGone(t, c.ID())
}

func TestPartitionAndHeal(t *testing.T) {
	c := newChassis(t, Options{Boards: 5})
	b := c.Boards
	fds := make([]int, len(b))
	rs := make([]*receiver, len(b))
	for i := range b {
		fds[i] = packetSocket(t, b[i])
		rs[i] = startReceiver(t, b[i])
	}
	// Each burst claims a distinct "from" so phases never mix: phase p,
	// board i sends as site 10*p + i + 1.
	burst := func(phase int) {
		for i := range b {
			sendFrames(t, fds[i], b[i].MAC, uint16(10*phase+i+1), 20)
		}
	}
	// expect waits until every board got the bursts of the boards it must
	// hear, then checks it heard nobody else.
	expect := func(phase int, hears func(to, from int) bool) {
		t.Helper()
		for to := range b {
			for from := range b {
				if from == to || !hears(to, from) {
					continue
				}
				site := uint16(10*phase + from + 1)
				waitFor(t, fmt.Sprintf("phase %d: board %d hearing board %d", phase, to+1, from+1),
					func() bool { return rs[to].from(site) >= 20 })
			}
		}
		for to := range b {
			for from := range b {
				site := uint16(10*phase + from + 1)
				if from != to && !hears(to, from) && rs[to].from(site) != 0 {
					t.Errorf("phase %d: board %d heard %d frames of board %d across the partition", phase, to+1, rs[to].from(site), from+1)
				}
			}
		}
	}
	group := func(i int) int { // {1,2} {3,4} and 5 unassigned
		return map[int]int{0: 0, 1: 0, 2: 1, 3: 1, 4: 2}[i]
	}
	if err := c.Partition([]*Board{b[0], b[1]}, []*Board{b[2], b[3]}); err != nil {
		t.Fatal(err)
	}
	burst(1)
	// A bridge floods a frame to all its ports in one pass: once a board's
	// group-mates have its burst, a leak across the partition would have
	// arrived too, so checking for absence then is not racy.
	expect(1, func(to, from int) bool { return group(to) == group(from) })

	// A new partition replaces the old one: {1,3} against the rest.
	if err := c.Partition([]*Board{b[0], b[2]}); err != nil {
		t.Fatal(err)
	}
	burst(2)
	expect(2, func(to, from int) bool { return (to == 0 || to == 2) == (from == 0 || from == 2) })

	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	burst(3)
	expect(3, func(to, from int) bool { return true })
	// IP heals too.
	rx := udpListen(t, b[1], 7407)
	if err := udpExchange(t, b[2], netip.AddrPortFrom(b[1].IP, 7407), rx, "healed"); err != nil {
		t.Error(err)
	}

	if err := c.Partition([]*Board{b[0]}, []*Board{b[0]}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("board in two groups: %v, want ErrBadOptions", err)
	}
	other := newChassis(t, Options{Boards: 1})
	if err := c.Partition([]*Board{other.Boards[0]}); !errors.Is(err, ErrUnknownBoard) {
		t.Errorf("foreign board: %v, want ErrUnknownBoard", err)
	}
	// Close with a partition in place removes the group bridges with the
	// backplane namespace (checked by newChassis's cleanup).
	if err := c.Partition([]*Board{b[4]}); err != nil {
		t.Fatal(err)
	}
}
