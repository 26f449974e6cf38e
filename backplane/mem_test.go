package backplane

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"
)

func memSites(t *testing.T, hub *MemHub, sites ...uint16) []Transport {
	t.Helper()
	var out []Transport
	for _, s := range sites {
		tr, err := NewMem(hub, s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		out = append(out, tr)
	}
	return out
}

func TestMemBasic(t *testing.T) {
	hub := NewMemHub(MemConfig{Seed: 1})
	trs := memSites(t, hub, 1, 2, 3)
	ch2, ch3 := collect(t, trs[1]), collect(t, trs[2])
	if err := trs[0].Send(2, 5, []byte("uni")); err != nil {
		t.Fatal(err)
	}
	if err := trs[0].Send(AllSites, 6, []byte("multi")); err != nil {
		t.Fatal(err)
	}
	got2 := want(t, ch2, 2, 5*time.Second)
	if got2[0].Type != 5 || string(got2[0].Payload) != "uni" || got2[0].From != 1 || got2[0].To != 2 {
		t.Fatalf("unicast: %+v", got2[0])
	}
	if got2[1].Type != 6 || got2[1].To != AllSites {
		t.Fatalf("multicast at 2: %+v", got2[1])
	}
	if got3 := want(t, ch3, 1, 5*time.Second); string(got3[0].Payload) != "multi" {
		t.Fatalf("multicast at 3: %+v", got3[0])
	}
	if err := trs[0].Send(2, 1, make([]byte, MaxMessageSize+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if err := trs[0].Send(2, 1, make([]byte, MaxMessageSize)); err != nil {
		t.Fatalf("1 MiB: %v", err)
	}
	if got := want(t, ch2, 1, 5*time.Second); len(got[0].Payload) != MaxMessageSize {
		t.Fatalf("1 MiB message arrived with %d bytes", len(got[0].Payload))
	}
	if _, err := NewMem(hub, 2); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("second attach of site 2: %v", err)
	}
	_ = trs[0].Close()
	if err := trs[0].Send(2, 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := trs[0].Recv(make([]Message, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("recv after close: %v", err)
	}
	if s := trs[1].Stats(); s.MsgsIn != 3 {
		t.Fatalf("site 2 MsgsIn %d", s.MsgsIn)
	}
}

// runFaulty sends 300 numbered messages 1 -> 2 through a faulty link and
// returns the sequence numbers in delivery order.
func runFaulty(t *testing.T, seed uint64) ([]uint32, FaultStats) {
	hub := NewMemHub(MemConfig{Seed: seed, Faults: Faults{Drop: 0.2, Duplicate: 0.1, Reorder: 0.15}, ReorderHold: time.Hour})
	trs := memSites(t, hub, 1, 2)
	ch := collect(t, trs[1])
	var b [4]byte
	for i := uint32(0); i < 300; i++ {
		binary.LittleEndian.PutUint32(b[:], i)
		if err := trs[0].Send(2, 1, b[:]); err != nil {
			t.Fatal(err)
		}
	}
	hub.Flush()
	hub.SetFaults(1, 2, Faults{})
	if err := trs[0].Send(2, 99, nil); err != nil {
		t.Fatal(err)
	}
	var seq []uint32
	for _, m := range until(t, ch, 10*time.Second, func(m collected) bool { return m.Type == 99 }) {
		seq = append(seq, binary.LittleEndian.Uint32(m.Payload))
	}
	return seq, trs[0].Stats().Faults
}

func TestMemFaultsReproducible(t *testing.T) {
	a, fa := runFaulty(t, 7)
	b, fb := runFaulty(t, 7)
	if !slices.Equal(a, b) || fa != fb {
		t.Fatalf("same seed, different delivery:\n%v %+v\n%v %+v", a, fa, b, fb)
	}
	c, _ := runFaulty(t, 8)
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave identical delivery")
	}
	if fa.Dropped == 0 || fa.Duplicated == 0 || fa.Reordered == 0 {
		t.Fatalf("faults not exercised: %+v", fa)
	}
	// Delivered = sent - dropped + duplicated.
	if want := 300 - int(fa.Dropped) + int(fa.Duplicated); len(a) != want {
		t.Fatalf("delivered %d, want %d (%+v)", len(a), want, fa)
	}
	if slices.IsSorted(a) {
		t.Fatal("no reordering visible")
	}
}

func TestMemPartitionAndDirection(t *testing.T) {
	hub := NewMemHub(MemConfig{Seed: 3})
	trs := memSites(t, hub, 1, 2, 3)
	ch1, ch2, ch3 := collect(t, trs[0]), collect(t, trs[1]), collect(t, trs[2])
	hub.Partition([]uint16{1}, []uint16{2, 3})
	for _, tr := range trs {
		if err := tr.Send(AllSites, 1, []byte("cut?")); err != nil {
			t.Fatal(err)
		}
	}
	hub.Heal()
	for _, tr := range trs {
		if err := tr.Send(AllSites, 2, nil); err != nil {
			t.Fatal(err)
		}
	}
	// 1 saw nothing before the heal; 2 and 3 saw each other's pre-heal message.
	firstIs(t, ch1, 2, 5*time.Second)
	for _, ch := range []<-chan collected{ch2, ch3} {
		got := want(t, ch, 1, 5*time.Second)
		if got[0].Type != 1 || got[0].From == 1 {
			t.Fatalf("pre-heal message %+v", got[0])
		}
	}
	if p := trs[0].Stats().Faults.Partitioned; p != 2 {
		t.Fatalf("site 1 partitioned count %d, want 2", p)
	}

	// One direction only.
	hub.SetFaults(2, 3, Faults{Drop: 1})
	if err := trs[1].Send(3, 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := trs[2].Send(2, 4, nil); err != nil {
		t.Fatal(err)
	}
	hub.SetFaults(2, 3, Faults{})
	if err := trs[1].Send(3, 5, nil); err != nil {
		t.Fatal(err)
	}
	until(t, ch2, 5*time.Second, func(m collected) bool { return m.Type == 4 })
	if got := until(t, ch3, 5*time.Second, func(m collected) bool { return m.Type == 5 }); slices.ContainsFunc(got, func(m collected) bool { return m.Type == 3 }) {
		t.Fatal("dropped direction delivered")
	}
}

func TestMemDelay(t *testing.T) {
	hub := NewMemHub(MemConfig{Seed: 1, Faults: Faults{Delay: 30 * time.Millisecond}})
	trs := memSites(t, hub, 1, 2)
	ch := collect(t, trs[1])
	start := time.Now()
	if err := trs[0].Send(2, 1, nil); err != nil {
		t.Fatal(err)
	}
	want(t, ch, 1, 5*time.Second)
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("delivered after %v, before the 30ms delay", el)
	}
}
