package board

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
)

// TestTickShouldWait: a replica's tick lets received messages go first when
// its receive goroutine holds a batch, or when the master has been silent
// nearly a heartbeat monitor and frames wait in the socket (this board, not
// the master, was late); otherwise the tick runs.
func TestTickShouldWait(t *testing.T) {
	hub := backplane.NewMemHub(backplane.MemConfig{Seed: 1})
	tr1, err := backplane.NewMem(hub, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer tr1.Close()
	tr2, err := backplane.NewMem(hub, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	cfg := Config{Site: 2}.withDefaults()
	// The origin lies a minute back so that "heard long ago" is positive.
	b := &Board{cfg: cfg, tr: tr2, origin: time.Now().Add(-time.Minute)}
	heard := func(ago time.Duration) { b.masterHeardAt.Store(int64(b.now() - ago)) }
	near := cfg.HeartbeatMonitor - tickEvery(cfg)

	b.pub.Store(&published{role: RoleClient, master: 1})
	heard(0)
	if b.tickShouldWait() {
		t.Fatal("waits with the master just heard and nothing received")
	}
	b.rxPending.Store(true)
	if !b.tickShouldWait() {
		t.Fatal("runs while the receive goroutine holds a batch")
	}
	b.rxPending.Store(false)

	heard(near + time.Millisecond)
	if b.tickShouldWait() {
		t.Fatal("waits on a silent master with nothing queued: a dead master would be noticed late")
	}
	if err := tr1.Send(2, 1, []byte("heartbeat")); err != nil {
		t.Fatal(err)
	}
	if !b.tickShouldWait() {
		t.Fatal("declares the master silent while its frames wait in the socket")
	}
	heard(0)
	if b.tickShouldWait() {
		t.Fatal("waits for queued frames long before the monitor's deadline")
	}

	heard(time.Second)
	b.pub.Store(&published{role: RoleClient})
	if b.tickShouldWait() {
		t.Fatal("waits with no master known: elections would slow down")
	}
	b.pub.Store(&published{role: RoleMaster, master: 2})
	if b.tickShouldWait() {
		t.Fatal("a master's tick waits")
	}
	if got := maxTickDefers(cfg); got != 5 {
		t.Fatalf("maxTickDefers(default) = %d, want 5 (half of a 10ms monitor in 1ms ticks)", got)
	}
}

// TestNoteStall: a gap between ticks above the heartbeat monitor is counted
// as a stall; every gap feeds the longest.
func TestNoteStall(t *testing.T) {
	cfg := Config{Site: 1}.withDefaults()
	b := &Board{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b.pub.Store(&published{role: RoleMaster, master: 1})
	b.noteStall(cfg.HeartbeatMonitor/2, 0)
	if st := b.ctr.stalls.Load(); st != 0 {
		t.Fatalf("half a monitor counted as %d stalls", st)
	}
	b.noteStall(cfg.HeartbeatMonitor+time.Millisecond, 3)
	b.noteStall(3*cfg.HeartbeatMonitor, 0)
	b.noteStall(cfg.HeartbeatMonitor, 0) // not above: not a stall
	if st := b.ctr.stalls.Load(); st != 2 {
		t.Fatalf("%d stalls counted, want 2", st)
	}
	if l := time.Duration(b.ctr.longestStall.Load()); l != 3*cfg.HeartbeatMonitor {
		t.Fatalf("longest stall %v, want %v", l, 3*cfg.HeartbeatMonitor)
	}
}
