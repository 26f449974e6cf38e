package rep

import (
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/elect"
)

func vote1Msg(from uint16, egen, lastGen uint32) Message {
	h := Header{Gen: lastGen, Egen: egen, Priority: 100}
	b := appendHeader(nil, &h)
	b = appendVote(b, elect.Vote{Site: from, Egen: egen, LastGen: lastGen, LSN: 1 << 20, Priority: 100, Tiebreaker: 1})
	return Message{From: from, To: AllSites, Type: MsgVote1, Payload: b}
}

// TestVoteNotAboveGenIgnored: a site takes no part in an election whose egen
// is not above its gen. Its winner would take a gen some master already had
// (two masters at one gen, each with Perm writes the other lacks).
func TestVoteNotAboveGenIgnored(t *testing.T) {
	st := newMemStore()
	st.commitTxn("a")
	st.gen = 5
	n, err := NewNode(Config{Site: 2, Priority: 100, Peers: []uint16{1, 3}, ElectionTimeout: 10 * time.Millisecond,
		HeartbeatMonitor: 200 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	n.Start(0, StartClient)
	n.Advance(n.Ready())
	var now time.Duration
	for now < 300*time.Millisecond { // no master: an election, egen above gen 5
		now += 10 * time.Millisecond
		n.Tick(now)
		n.Advance(n.Ready())
	}
	if g := n.Status().Egen; g <= 5 {
		t.Fatalf("own election at egen %d, not above gen 5", g)
	}
	n.Advance(n.Ready())
	// A stale election at egen 5 (a voter of it may elect gen 5 again).
	for _, from := range []uint16{1, 3} {
		if err := n.Step(now, vote1Msg(from, 5, 9)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		now += time.Millisecond
		n.Tick(now)
		rd := n.Ready()
		for _, m := range rd.Messages {
			var d Decoded
			if err := DecodeMessage(m, &d); err != nil {
				t.Fatal(err)
			}
			if m.Type == MsgVote2 && d.Vote.Egen <= 5 {
				t.Fatalf("VOTE2 cast in egen %d, not above gen 5", d.Vote.Egen)
			}
		}
		n.Advance(rd)
	}
	if n.Counters().Dropped[DropStaleGen] < 2 {
		t.Fatalf("stale-egen votes not dropped: %v", n.Counters().Dropped)
	}
}
