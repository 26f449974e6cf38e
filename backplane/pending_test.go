package backplane

import (
	"runtime"
	"testing"
	"time"
)

// TestPending: Pending tells whether a message waits, without receiving it.
func TestPending(t *testing.T) {
	for name, trs := range map[string][]Transport{
		"mem": memSites(t, NewMemHub(MemConfig{Seed: 1}), 1, 2),
		"udp": udpSites(t, 2, nil),
	} {
		t.Run(name, func(t *testing.T) {
			a, b := trs[0], trs[1]
			if b.Pending() {
				t.Fatal("pending before anything was sent")
			}
			if err := a.Send(2, 5, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			// Delivery may finish after Send returns (a softirq on
			// another CPU): wait for it, bounded.
			deadline := time.Now().Add(5 * time.Second)
			for !b.Pending() {
				if time.Now().After(deadline) {
					t.Fatal("the message sent never showed as pending")
				}
				runtime.Gosched()
			}
			if !b.Pending() {
				t.Fatal("asking twice consumed the message")
			}
			msgs := make([]Message, 4)
			n, err := b.Recv(msgs)
			if err != nil || n != 1 || string(msgs[0].Payload) != "hello" {
				t.Fatalf("recv: n=%d err=%v", n, err)
			}
			if b.Pending() {
				t.Fatal("pending after the only message was received")
			}
			_ = b.Close()
			if b.Pending() {
				t.Fatal("a closed transport reports pending frames")
			}
		})
	}
}
