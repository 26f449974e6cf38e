package backplane

import "testing"

// TestSteadyStateAllocs: an unfragmented message costs no allocation on the
// send or the receive side once buffers are warm.
func TestSteadyStateAllocs(t *testing.T) {
	trs := udpSites(t, 2, nil)
	payload := make([]byte, 200)
	msgs := make([]Message, 4)
	roundTrip := func() {
		if err := trs[0].Send(2, 1, payload); err != nil {
			t.Fatal(err)
		}
		if n, err := trs[1].Recv(msgs); err != nil || n != 1 {
			t.Fatalf("recv: %d, %v", n, err)
		}
	}
	roundTrip()
	if a := testing.AllocsPerRun(200, roundTrip); a != 0 {
		t.Fatalf("%.1f allocations per unicast message", a)
	}
	multicast := func() {
		if err := trs[0].Send(AllSites, 1, payload); err != nil {
			t.Fatal(err)
		}
		if n, err := trs[1].Recv(msgs); err != nil || n != 1 {
			t.Fatalf("recv: %d, %v", n, err)
		}
	}
	if a := testing.AllocsPerRun(200, multicast); a != 0 {
		t.Fatalf("%.1f allocations per multicast (fan-out) message", a)
	}
}
