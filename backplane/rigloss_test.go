package backplane

import (
	"bytes"
	"math"
	"testing"
	"time"
)

// TestRigRawLoss drops frames with the rig's XDP injector and checks the
// receiver sees the configured loss rate (within a binomial bound) and that
// fragmented messages under loss are either delivered intact or counted as
// reassembly timeouts, receiving through Recv and through Serve (whose
// wait must also end at the reassembly deadline).
func TestRigRawLoss(t *testing.T) {
	for _, serve := range []bool{false, true} {
		t.Run(map[bool]string{false: "recv", true: "serve"}[serve], func(t *testing.T) { rigRawLoss(t, serve) })
	}
}

func rigRawLoss(t *testing.T, serve bool) {
	c := newChassis(t, 2)
	tx := rawOn(t, c.Boards[0], nil)
	rx := rawOn(t, c.Boards[1], func(cfg *RawConfig) { cfg.Reassembly.Timeout = 200 * time.Millisecond })
	rxLoop := rx
	if serve {
		rxLoop = served{rx}
	}
	ch := collectAll(t, []Transport{tx, rxLoop})[1]
	inj, err := c.Boards[0].InjectLoss(0.3)
	if err != nil {
		t.Fatal(err)
	}
	defer inj.Close()

	const n, p = 2000, 0.3
	for i := 0; i < n; i++ {
		if err := tx.Send(AllSites, 1, []byte("small")); err != nil {
			t.Fatal(err)
		}
	}
	if err := inj.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Send(AllSites, 99, nil); err != nil {
		t.Fatal(err)
	}
	got := len(until(t, ch, 10*time.Second, func(m collected) bool { return m.Type == 99 }))
	seen, dropped := inj.Stats()
	lost := n - got
	bound := 5 * math.Sqrt(n*p*(1-p))
	t.Logf("loss 0.3: %d of %d delivered, injector saw %d dropped %d (bound ±%.0f)", got, n, seen, dropped, bound)
	if math.Abs(float64(lost)-n*p) > bound {
		t.Fatalf("lost %d of %d, expected %.0f ± %.0f", lost, n, n*p, bound)
	}
	if uint64(lost) != dropped || seen != n+1 {
		t.Fatalf("receiver lost %d, injector dropped %d of %d seen", lost, dropped, seen)
	}

	// Fragmented messages under light loss.
	if err := inj.SetLoss(0.005); err != nil {
		t.Fatal(err)
	}
	msg := randBytes(3, 64<<10)
	const msgs = 20
	for i := 0; i < msgs; i++ {
		if err := tx.Send(AllSites, 2, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := inj.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Send(AllSites, 99, nil); err != nil {
		t.Fatal(err)
	}
	delivered := until(t, ch, 10*time.Second, func(m collected) bool { return m.Type == 99 })
	for _, m := range delivered {
		if !bytes.Equal(m.Payload, msg) {
			t.Fatalf("corrupt reassembled message of %d bytes", len(m.Payload))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for rx.Stats().Reassembling != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("partial messages never expired: %+v", rx.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := rx.Stats()
	// A slow receiver (the race detector) holds many partial messages at
	// once, and the reassembly memory limit may evict one: counted too.
	timedOut, evicted := int(s.Drop(DropReasmTimeout)), int(s.Drop(DropReasmOverflow))
	t.Logf("64 KiB x %d at 0.5%% loss: %d delivered, %d timed out, %d evicted", msgs, len(delivered), timedOut, evicted)
	if len(delivered)+timedOut+evicted != msgs {
		t.Fatalf("%d delivered + %d timed out + %d evicted != %d sent (receiver: %+v)", len(delivered), timedOut, evicted, msgs, s)
	}
}
