package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Lines as boardd's slog text handler writes them.
const (
	lineElection  = `time=2026-12-05T21:08:41.006Z level=WARN msg="election started" site=1 group=bench-st last_master=5 since_master_heard=11.337282ms frames_waiting=false elections=28`
	lineStallProc = `time=2026-12-05T21:08:41.008Z level=WARN msg="board runtime stalled: its timers did not run for longer than the heartbeat monitor" site=5 group=bench-st for=13.46ms held_ticks=0 heartbeat_monitor=10ms role=master`
)

func TestParseLogLine(t *testing.T) {
	kv, ok := parseLogLine(lineStallProc)
	if !ok {
		t.Fatal("a slog text line did not parse")
	}
	for k, want := range map[string]string{"msg": "board runtime stalled: its timers did not run for longer than the heartbeat monitor", "for": "13.46ms", "held_ticks": "0", "role": "master"} {
		if kv[k] != want {
			t.Errorf("%s = %q, want %q", k, kv[k], want)
		}
	}
	for _, bad := range []string{"", "no pairs here", `msg="unterminated`, "=x"} {
		if _, ok := parseLogLine(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestEventFromLine(t *testing.T) {
	e, ok := eventFromLine(lineElection, 1)
	if !ok || !e.election || e.lostMaster != 5 || e.framesWaiting || e.site != 1 {
		t.Fatalf("election line: %+v, %v", e, ok)
	}
	s, ok := eventFromLine(lineStallProc, 5)
	if !ok || !s.stall || s.gap != 13460*time.Microsecond || s.held != 0 {
		t.Fatalf("stall line: %+v, %v", s, ok)
	}
	if _, ok := eventFromLine(`time=2026-12-05T21:08:41.006Z level=INFO msg="board started" site=1`, 1); ok {
		t.Fatal("an unrelated line gave an event")
	}
}

func TestClassifyElections(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	elect := func(ms int, site, lost uint16, waiting bool) logEvent {
		return logEvent{at: at(ms), site: site, election: true, lostMaster: lost, framesWaiting: waiting}
	}
	stall := func(ms int, site uint16, gapMs, held int) logEvent {
		return logEvent{at: at(ms), site: site, stall: true, gap: time.Duration(gapMs) * time.Millisecond, held: held}
	}
	evs := []logEvent{
		// The master (5) did not run from 1000 to 1020 ms: both elections in it.
		stall(1020, 5, 20, 0), elect(1011, 1, 5, false), elect(1012, 2, 5, false),
		// Its loop ran twice in a 15 ms stall: starved too.
		stall(1515, 5, 15, 2), elect(1511, 1, 5, false),
		// Its runtime held from 2000 to 2015 ms while the loop ran every
		// 2 ms or more often.
		stall(2015, 5, 15, 8), elect(2011, 1, 5, false),
		// The electing board itself stalled, then frames were waiting.
		stall(3013, 2, 12, 0), elect(3012, 2, 5, false), elect(4000, 3, 5, true),
		// Nothing in the logs.
		elect(5000, 1, 5, false),
		// A stall of another board than the lost master explains nothing.
		stall(6020, 4, 20, 0), elect(6010, 1, 5, false),
	}
	got := classifyElections(evs, 2*time.Millisecond)
	want := electionCauses{masterStarved: 3, masterHeld: 1, ownLate: 2, unexplained: 2}
	if got != want {
		t.Fatalf("classified %+v, want %+v", got, want)
	}
	if got.total() != 8 {
		t.Fatalf("total %d, want 8", got.total())
	}
}

func TestReadBoardEventsWindow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b5.log")
	data := lineElection + "\n" + `time=2026-12-05T21:08:41.500Z level=INFO msg="something else" site=5` + "\n" + lineStallProc + "\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 12, 5, 21, 8, 41, 7_000_000, time.UTC)
	evs, err := readBoardEvents(path, 5, from, from.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || !evs[0].stall {
		t.Fatalf("events in the window: %+v, want only the stall at 41.008", evs)
	}
}
