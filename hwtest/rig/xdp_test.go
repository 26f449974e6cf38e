package rig

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"testing"
)

func TestLossThreshold(t *testing.T) {
	for _, f := range []float64{-0.1, 1.0001, math.NaN(), math.Inf(1)} {
		if _, err := lossThreshold(f); !errors.Is(err, ErrBadFraction) {
			t.Errorf("lossThreshold(%v) = %v, want ErrBadFraction", f, err)
		}
	}
	for f, want := range map[float64]uint64{0: 0, 1: 1 << 32, 0.5: 1 << 31, 0.2: 858993459} {
		if got, err := lossThreshold(f); err != nil || got != want {
			t.Errorf("lossThreshold(%v) = %d, %v; want %d", f, got, err, want)
		}
	}
}

func TestInjectLoss(t *testing.T) {
	c := newChassis(t, Options{Boards: 2})
	b1, b2 := c.Boards[0], c.Boards[1]
	if _, err := b1.InjectLoss(1.5); !errors.Is(err, ErrBadFraction) {
		t.Fatalf("InjectLoss(1.5) = %v, want ErrBadFraction", err)
	}
	inj, err := b1.InjectLoss(0.2)
	if err != nil {
		t.Fatal(err)
	}
	// One program per link and direction: a second one is refused while
	// the first is attached.
	if extra, err := b1.InjectLoss(0.5); !errors.Is(err, ErrInjectorBusy) {
		if extra != nil {
			extra.Close()
		}
		t.Fatalf("second injector on the same link: %v, want ErrInjectorBusy", err)
	}
	tx := packetSocket(t, b1)
	rx := startReceiver(t, b2)

	// 5000 frames at p = 0.2: mean 1000, sigma ~28.3. Six sigma either way
	// makes a false failure rarer than one in 10^8 runs.
	const n, p = 5000, 0.2
	sigma := math.Sqrt(n * p * (1 - p))
	lo, hi := uint64(n*p-6*sigma), uint64(n*p+6*sigma)
	sendFrames(t, tx, b1.MAC, b1.Site, n)
	waitFor(t, "the injector to see every frame", func() bool { seen, _ := inj.Stats(); return seen >= n })
	seen, dropped := inj.Stats()
	if seen != n {
		t.Fatalf("seen %d frames, want %d", seen, n)
	}
	if dropped < lo || dropped > hi {
		t.Errorf("dropped %d of %d at 20%%, want within [%d, %d]", dropped, n, lo, hi)
	}
	t.Logf("20%% loss: dropped %d of %d (bound [%d, %d])", dropped, n, lo, hi)
	// What the injector let through reaches the other board, and nothing more.
	waitFor(t, "the surviving frames at board 2", func() bool { return rx.from(b1.Site) >= n-dropped })
	if got := rx.from(b1.Site); got != n-dropped {
		t.Errorf("board 2 received %d frames, want %d", got, n-dropped)
	}

	// Live changes: no loss, then total loss.
	if err := inj.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	sendFrames(t, tx, b1.MAC, b1.Site, 500)
	waitFor(t, "500 more frames at board 2", func() bool { return rx.from(b1.Site) >= n-dropped+500 })
	if s, d := inj.Stats(); s != n+500 || d != dropped {
		t.Errorf("after SetLoss(0): seen %d dropped %d, want %d and %d", s, d, n+500, dropped)
	}
	if err := inj.SetLoss(1); err != nil {
		t.Fatal(err)
	}
	sendFrames(t, tx, b1.MAC, b1.Site, 300)
	waitFor(t, "300 more frames at the injector", func() bool { s, _ := inj.Stats(); return s >= n+800 })
	if s, d := inj.Stats(); s != n+800 || d != dropped+300 {
		t.Errorf("after SetLoss(1): seen %d dropped %d, want %d and %d", s, d, n+800, dropped+300)
	}

	// Close detaches: frames flow again, the counters freeze.
	if err := inj.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inj.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	before := rx.from(b1.Site)
	sendFrames(t, tx, b1.MAC, b1.Site, 100)
	waitFor(t, "frames after the injector closed", func() bool { return rx.from(b1.Site) >= before+100 })
	if got := rx.from(b1.Site); got != n-dropped+600 {
		t.Errorf("board 2 received %d frames in all, want %d", got, n-dropped+600)
	}
	if s, d := inj.Stats(); s != n+800 || d != dropped+300 {
		t.Errorf("stats after Close: seen %d dropped %d, want %d and %d", s, d, n+800, dropped+300)
	}
	if err := inj.SetLoss(0.5); !errors.Is(err, ErrClosed) {
		t.Errorf("SetLoss after Close = %v, want ErrClosed", err)
	}
}

func TestInjectDropFromSite(t *testing.T) {
	c := newChassis(t, Options{Boards: 3})
	b1, b2, b3 := c.Boards[0], c.Boards[1], c.Boards[2]
	tx1, tx3 := packetSocket(t, b1), packetSocket(t, b3)
	r2, r3 := startReceiver(t, b2), startReceiver(t, b3)

	// Board 2 stops hearing site 1; board 3 still hears it.
	inj, err := b2.InjectDropFromSite(b1.Site)
	if err != nil {
		t.Fatal(err)
	}
	if inj.Direction() != ToBoard {
		t.Errorf("InjectDropFromSite direction %v, want %v", inj.Direction(), ToBoard)
	}
	const n = 300
	sendFrames(t, tx1, b1.MAC, b1.Site, n)
	sendFrames(t, tx3, b3.MAC, b3.Site, n)
	waitFor(t, "board 3 to hear site 1", func() bool { return r3.from(b1.Site) >= n })
	waitFor(t, "board 2 to hear site 3", func() bool { return r2.from(b3.Site) >= n })
	waitFor(t, "the injector to see both sites", func() bool { s, _ := inj.Stats(); return s >= 2*n })
	if got := r2.from(b1.Site); got != 0 {
		t.Errorf("board 2 received %d frames from site 1, want 0", got)
	}
	if s, d := inj.Stats(); s != 2*n || d != n {
		t.Errorf("stats: seen %d dropped %d, want %d and %d", s, d, 2*n, n)
	}
	if got := r3.from(b1.Site); got != n {
		t.Errorf("board 3 received %d frames from site 1, want %d", got, n)
	}

	// Switch the dropped site live.
	if err := inj.SetDropFrom(b3.Site, true); err != nil {
		t.Fatal(err)
	}
	sendFrames(t, tx1, b1.MAC, b1.Site, n)
	sendFrames(t, tx3, b3.MAC, b3.Site, n)
	waitFor(t, "board 2 to hear site 1 again", func() bool { return r2.from(b1.Site) >= n })
	waitFor(t, "the injector to see both sites again", func() bool { s, _ := inj.Stats(); return s >= 4*n })
	if got := r2.from(b3.Site); got != n {
		t.Errorf("board 2 received %d frames from site 3, want %d (the first burst only)", got, n)
	}
	if err := inj.Close(); err != nil {
		t.Fatal(err)
	}

	// Egress variant: board 1's frames claiming site 1 are dropped as they
	// leave it, frames it sends claiming another site (9) pass.
	out, err := b1.Inject(InjectConfig{Direction: FromBoard, DropFromSet: true, DropFrom: b1.Site})
	if err != nil {
		t.Fatal(err)
	}
	before := r3.from(b1.Site)
	sendFrames(t, tx1, b1.MAC, b1.Site, n)
	sendFrames(t, tx1, b1.MAC, 9, n)
	waitFor(t, "site 9 frames at board 3", func() bool { return r3.from(9) >= n })
	waitFor(t, "the egress injector to see both", func() bool { s, _ := out.Stats(); return s >= 2*n })
	if s, d := out.Stats(); s != 2*n || d != n {
		t.Errorf("egress stats: seen %d dropped %d, want %d and %d", s, d, 2*n, n)
	}
	if got := r3.from(b1.Site) - before; got != 0 {
		t.Errorf("board 3 received %d site-1 frames through the egress injector, want 0", got)
	}
	// Left attached on purpose: Chassis.Close must detach it.
}

// TestInjectorInertByDefault: the verifier accepts the program, and with
// no loss and no site it passes and counts every frame.
func TestInjectorInertByDefault(t *testing.T) {
	c := newChassis(t, Options{Boards: 2})
	inj, err := c.Boards[0].Inject(InjectConfig{Direction: FromBoard})
	if err != nil {
		t.Fatal(err)
	}
	tx := packetSocket(t, c.Boards[0])
	rx := startReceiver(t, c.Boards[1])
	sendFrames(t, tx, c.Boards[0].MAC, 1, 50)
	waitFor(t, "50 frames at board 2", func() bool { return rx.from(1) >= 50 })
	waitFor(t, "the injector to count 50", func() bool { s, _ := inj.Stats(); return s >= 50 })
	if s, d := inj.Stats(); s != 50 || d != 0 {
		t.Errorf("inert injector: seen %d dropped %d, want 50 and 0", s, d)
	}
	if _, err := c.Boards[0].Inject(InjectConfig{Direction: Direction(7)}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("Inject with a bad direction = %v, want ErrBadOptions", err)
	}
}

// TestInjectUDP: with UDPPort set, datagrams of the UDP transport are
// matched by destination port and header "from" like raw frames.
func TestInjectUDP(t *testing.T) {
	c := newChassis(t, Options{Boards: 3})
	b1, b2, b3 := c.Boards[0], c.Boards[1], c.Boards[2]
	const port, other = 7405, 7406
	rx, rxOther := udpListen(t, b2, port), udpListen(t, b2, other)
	dst, dstOther := netip.AddrPortFrom(b2.IP, port), netip.AddrPortFrom(b2.IP, other)
	// Resolve ARP first, so no datagram waits in the ARP queue.
	for _, b := range []*Board{b1, b3} {
		if err := udpExchange(t, b, dst, rx, fmt.Sprintf("warm-up %d", b.Site)); err != nil {
			t.Fatal(err)
		}
	}
	u, uOther := startUDPCounter(t, rx), startUDPCounter(t, rxOther)

	inj, err := b2.Inject(InjectConfig{Direction: ToBoard, DropFromSet: true, DropFrom: b1.Site, UDPPort: port})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	sendUDPFrames(t, b1, dst, b1.Site, n)
	sendUDPFrames(t, b3, dst, b3.Site, n)
	sendUDPFrames(t, b1, dstOther, b1.Site, n/2) // other port: not matched
	waitFor(t, "site 3's datagrams", func() bool { return u.from(b3.Site) >= n })
	waitFor(t, "datagrams to the other port", func() bool { return uOther.from(b1.Site) >= n/2 })
	waitFor(t, "the injector to see both sites", func() bool { s, _ := inj.Stats(); return s >= 2*n })
	if got := u.from(b1.Site); got != 0 {
		t.Errorf("board 2 received %d datagrams from site 1 on port %d, want 0", got, port)
	}
	if s, d := inj.Stats(); s != 2*n || d != n {
		t.Errorf("stats: seen %d dropped %d, want %d and %d", s, d, 2*n, n)
	}

	// Total loss on the port, site filter off.
	if err := inj.SetDropFrom(0, false); err != nil {
		t.Fatal(err)
	}
	if err := inj.SetLoss(1); err != nil {
		t.Fatal(err)
	}
	if got := inj.Config(); got.Loss != 1 || got.DropFromSet || got.UDPPort != port {
		t.Errorf("Config() = %+v", got)
	}
	sendUDPFrames(t, b3, dst, b3.Site, n)
	sendUDPFrames(t, b1, dstOther, b1.Site, n/2)
	waitFor(t, "more datagrams to the other port", func() bool { return uOther.from(b1.Site) >= n })
	waitFor(t, "the injector to see the burst", func() bool { s, _ := inj.Stats(); return s >= 3*n })
	if got := u.from(b3.Site); got != n {
		t.Errorf("board 2 received %d datagrams from site 3, want %d (first burst only)", got, n)
	}
	if s, d := inj.Stats(); s != 3*n || d != 2*n {
		t.Errorf("stats: seen %d dropped %d, want %d and %d", s, d, 3*n, 2*n)
	}
}
