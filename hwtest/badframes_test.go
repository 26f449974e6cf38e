package hwtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// TestBadFrames injects random, truncated, corrupted and foreign-group
// frames (EtherType 0x88B5 and others) into the live backplane of a 3-board
// group, from a fourth board's namespace and from the bridge itself, while a
// writer commits. Nothing may break: every board keeps running, commits
// continue, nothing committed is lost, and every frame that passes the
// kernel filter is counted as a drop by each board that received it.
//
// The seed is logged; HWTEST_SEED replays a run's frames.
func TestBadFrames(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HWTEST_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 0, 64); err != nil {
			t.Fatalf("HWTEST_SEED=%q: %v", v, err)
		}
	}
	t.Logf("frame seed %#x (HWTEST_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	// Board 4 runs no boardd: it is the rogue line card.
	s := newScenario(t, 4, []uint16{1, 2, 3}, nil)
	s.start()
	s.monitor()
	s.writer("bad", 1, nil)
	s.waitPerm(30, 30*time.Second, "commits before the injection")

	ctx, cancel := s.within(90 * time.Second)
	defer cancel()
	before := s.cl.Stats(ctx, 2*time.Second)
	if len(before) != 3 {
		t.Fatalf("only %d of 3 boards answered stat", len(before))
	}

	var fromBoard, fromBridge *harness.RawSender
	if err := s.ch.Board(4).Do(func() error {
		var err error
		fromBoard, err = harness.OpenRawSender(rig.BoardIface)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer fromBoard.Close()
	if err := s.ch.DoBackplane(func() error {
		var err error
		fromBridge, err = harness.OpenRawSender(s.ch.Bridge)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer fromBridge.Close()

	group := harness.GroupID(s.opt.Group)
	perClass := 30
	if *soak {
		perClass = 1000
	}
	type dest struct {
		name string
		mac  net.HardwareAddr
		to   []uint16 // boards that receive frames sent there
	}
	dests := []dest{
		{"group", harness.GroupMAC(group), []uint16{1, 2, 3}},
		{"broadcast", net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []uint16{1, 2, 3}},
		{"unicast-1", s.ch.Board(1).MAC, []uint16{1}},
	}
	expect := map[uint16]uint64{} // frames each board must count as dropped
	classes := map[string]int{}
	sent := 0
	for _, snd := range []*harness.RawSender{fromBoard, fromBridge} {
		for _, d := range dests {
			frames := harness.BadFrames(rng, group, snd.MAC, d.mac, 0xFFFE, perClass)
			rng.Shuffle(len(frames), func(i, j int) { frames[i], frames[j] = frames[j], frames[i] })
			for i, f := range frames {
				if err := snd.Send(f.Frame); err != nil {
					t.Fatalf("sending a %s frame to %s: %v", f.Class, d.name, err)
				}
				sent++
				classes[f.Class]++
				if f.ReachesBoard {
					for _, b := range d.to {
						expect[b]++
					}
				}
				// Interleave with the group's own traffic rather than
				// one burst that only tests the socket buffer.
				if i%50 == 49 {
					s.waitPerm(1, 30*time.Second, "commits during the injection")
				}
			}
		}
	}
	s.fault("%d bad frames injected (%d per class, classes %v)", sent, perClass, keys(classes))

	// Every board must count at least the frames that reached it.
	var after map[uint16]harness.Stat
	err := harness.WaitFor(ctx, "drop counters to reflect the injected frames", 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		after = s.cl.Stats(ctx, 2*time.Second)
		for site, n := range expect {
			a, ok := after[site]
			if !ok || a.Counters.FramesDropped-before[site].Counters.FramesDropped < n {
				return false, nil
			}
		}
		return true, nil
	})
	var counted []string
	for _, site := range []uint16{1, 2, 3} {
		counted = append(counted, fmt.Sprintf("%d:%d/%d", site,
			after[site].Counters.FramesDropped-before[site].Counters.FramesDropped, expect[site]))
	}
	if err != nil {
		s.rep.Add(harness.Violation{Kind: "drops-not-counted", Msg: fmt.Sprintf(
			"frames_dropped delta/expected per board %v: malformed frames that reached a board were not counted", counted)})
	}
	if _, ok := after[1].DropsByReason(); !ok {
		s.rep.Missing("per-reason drop counters in `stat` (only counters.frames_dropped, the total, is published; kernel-filter drops of other EtherTypes and foreign groups are not published at all)")
	} else {
		for _, site := range []uint16{1, 2, 3} {
			b, _ := before[site].DropsByReason()
			a, _ := after[site].DropsByReason()
			if a["bad_crc"] <= b["bad_crc"] || a["bad_magic"] <= b["bad_magic"] {
				s.rep.Add(harness.Violation{Kind: "drops-not-counted", Site: site,
					Msg: fmt.Sprintf("per-reason counters did not move: before %v after %v", b, a)})
			}
		}
	}
	for _, site := range []uint16{1, 2, 3} {
		if p := s.cl.Node(site).Proc(); p.Exited() {
			s.rep.Add(harness.Violation{Kind: "crashed", Site: site, Msg: fmt.Sprintf("boardd exited: %v; log tail:\n%s", p.Err(), p.Tail(2000))})
		}
	}
	s.waitPerm(30, 30*time.Second, "commits after the injection")
	s.verify()
	s.finish(fmt.Sprintf("frames=%d counted(delta/expected)=%v seed=%#x", sent, counted, seed))
}

func keys(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}
