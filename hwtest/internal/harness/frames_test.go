package harness

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/seed61e250c8/boardha/backplane"
)

// TestBadFramesAgainstDecoder checks the injected frames against the
// backplane's own decoder: each class fails (or passes) the way its name
// says, so the scenario's expectations about drop counters hold.
func TestBadFramesAgainstDecoder(t *testing.T) {
	const name = "hwtest-group"
	g := GroupID(name)
	if g != backplane.GroupID(name) || !bytes.Equal(GroupMAC(g), backplane.GroupMAC(g)) {
		t.Fatalf("GroupID/GroupMAC disagree with backplane: %#x %v vs %#x %v", g, GroupMAC(g), backplane.GroupID(name), backplane.GroupMAC(g))
	}
	good := EncodeFrame(FrameHeader{Type: 9, Group: g, From: 300, To: allSites, MsgID: 7, NFrags: 1}, []byte("payload"))
	h, p, err := backplane.DecodeFrame(good)
	if err != nil || h.Group != g || h.From != 300 || h.Type != 9 || string(p) != "payload" {
		t.Fatalf("well-formed frame: %+v %q %v", h, p, err)
	}
	want := map[string]error{
		"bad-crc": backplane.ErrBadCRC, "bad-magic": backplane.ErrBadMagic, "bad-version": backplane.ErrBadVersion,
		"absurd-length": backplane.ErrAbsurdLength, "truncated-payload": backplane.ErrShortFrame,
		"stray-fragment": backplane.ErrBadFragment, "short-header": backplane.ErrShortFrame,
	}
	seed := uint64(0x5eed)
	rng := rand.New(rand.NewPCG(seed, seed))
	src := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	frames := BadFrames(rng, g, src, GroupMAC(g), 0xFFFE, 20)
	classes := map[string]int{}
	for _, f := range frames {
		classes[f.Class]++
		if !bytes.Equal(f.Frame[0:6], GroupMAC(g)) || !bytes.Equal(f.Frame[6:12], src) {
			t.Fatalf("%s: Ethernet addresses %x", f.Class, f.Frame[:12])
		}
		body := f.Frame[ethHeader:]
		_, _, err := backplane.DecodeFrame(body)
		switch f.Class {
		case "foreign-group":
			if err != nil {
				t.Fatalf("foreign-group frame should be well-formed (only the group differs): %v", err)
			}
		case "random", "other-ethertype":
			// Anything goes; the filter or the decoder drops them.
		default:
			if !errors.Is(err, want[f.Class]) {
				t.Fatalf("%s frame decoded with %v, want %v", f.Class, err, want[f.Class])
			}
		}
		if f.ReachesBoard != (f.Class != "random" && f.Class != "other-ethertype" && f.Class != "short-header" && f.Class != "foreign-group") {
			t.Fatalf("%s: ReachesBoard=%v", f.Class, f.ReachesBoard)
		}
	}
	if len(classes) != 10 {
		t.Fatalf("classes %v, want 10", classes)
	}
}
