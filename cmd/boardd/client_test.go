package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// TestPrintStatInit: boardd stat's init line says whether an init runs or
// ran, into the board's own pool or a second region, and how often one
// started over.
func TestPrintStatInit(t *testing.T) {
	for _, c := range []struct {
		init board.InitStat
		want string
	}{
		{board.InitStat{}, "init idle\n"},
		{board.InitStat{Active: true, Percent: 50, PagesDone: 10, PagesTotal: 20, PagesPerSec: 1000, InPlace: true},
			"init 50.0% (10/20 pages, 1000 pages/s), into its own pool\n"},
		{board.InitStat{Count: 2, LastDuration: 1500 * time.Millisecond, LastTotalDuration: 1500 * time.Millisecond, PagesPerSec: 30000},
			"init done x2, last 1.5s at 30000 pages/s, into a second region\n"},
		{board.InitStat{Count: 2, LastDuration: 1500 * time.Millisecond, LastTotalDuration: 2300 * time.Millisecond, PagesPerSec: 30000,
			Restarts: 3, Resumes: 2, PagesKept: 700},
			"init done x2, last 1.5s at 30000 pages/s (2.3s from its first copy), into a second region, 3 restarted (2 resumed, 700 pages kept)\n"},
		{board.InitStat{Active: true, Percent: 0, PagesTotal: 20, Failures: 2, LastError: "no memory"},
			"init 0.0% (0/20 pages, 0 pages/s), into a second region, 2 failed (last: no memory)\n"},
	} {
		var out bytes.Buffer
		printStat(&out, board.Stat{Init: c.init})
		var got string
		for _, line := range strings.SplitAfter(out.String(), "\n") {
			if strings.HasPrefix(line, "init ") {
				got = line
			}
		}
		if got != c.want {
			t.Errorf("init %+v: line %q, want %q", c.init, got, c.want)
		}
	}
}
