package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/seed61e250c8/boardha/board"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// Section ids, in run order. The bare link goes first: every ratio needs it.
const (
	secBare     = "bare"
	secCommit   = "commit"
	secScale    = "scale"
	secInit     = "init"
	secXproc    = "xproc"
	secFailover = "failover"
	// secStability runs last: a loaded group, no fault, counting elections.
	secStability = "stability"
)

// allSections lists the section ids in run order.
func allSections() []string {
	return []string{secBare, secCommit, secScale, secInit, secXproc, secFailover, secStability}
}

// Config sizes a run. sized fills it for a mode; flags and the smoke test
// adjust it.
type Config struct {
	Mode     string
	Sections []string
	Out      string
	Log      io.Writer // progress lines; nil discards them

	RoundTrips   int // per bare and raw ping-pong size
	StreamFrames int // per bare and raw stream

	CommitBoards []int
	Policies     []board.AckPolicy // ack policies of the commit section; nil: all
	Writers      []int
	CommitTime   time.Duration // measured interval per commit configuration

	ScaleBoards []int
	ScaleTime   time.Duration

	InitBytes int64 // values written on the master before a board joins empty (the pages copied are about twice that)

	XprocKeys int
	XprocTime time.Duration

	FailoverBoards int
	Kills          int // SIGKILL rounds
	Stops          int // SIGSTOP rounds

	StabilityTime time.Duration // the loaded run without faults
	HalfLoadTime  time.Duration // then the same group at half the rate it reached (0: not run)
	StallProbe    time.Duration // the CPU stall probe before it

	BoarddArgs []string // added to every `boardd run` (settings to compare)
	MTU        int      // of the chassis's links; 0: the rig's default (1500)
}

func sized(mode string) (Config, error) {
	c := Config{Mode: mode, Sections: allSections(), Out: "bench/out", Writers: []int{1, 64}, CommitBoards: []int{3, 7}}
	switch mode {
	case "full":
		c.RoundTrips, c.StreamFrames = 5000, 200000
		c.CommitTime = 1500 * time.Millisecond
		c.ScaleBoards, c.ScaleTime = []int{3, 5, 7, 9, 11, 13, 15}, 1500*time.Millisecond
		// 128 MiB of values are about 300 MB of pages to restore. A larger
		// init measures more of this VM than of the init: per page it
		// costs about twice as much at 320 MiB (2026-12-06), and the
		// import alone jumps from 1 to 2-7 µs a page past 256 MiB
		// depending on what memory the guest used before
		// (docs/PERFORMANCE.md).
		c.InitBytes = 128 << 20
		c.XprocKeys, c.XprocTime = 200000, time.Second
		c.FailoverBoards, c.Kills, c.Stops = 5, 24, 12
		c.StabilityTime, c.StallProbe = 10*time.Minute, 30*time.Second
		c.HalfLoadTime = 5 * time.Minute
	case "quick":
		c.RoundTrips, c.StreamFrames = 1000, 30000
		c.CommitTime = 300 * time.Millisecond
		c.ScaleBoards, c.ScaleTime = []int{3, 7, 15}, 300*time.Millisecond
		c.InitBytes = 24 << 20
		c.XprocKeys, c.XprocTime = 20000, 300*time.Millisecond
		c.FailoverBoards, c.Kills, c.Stops = 3, 5, 3
		c.StabilityTime, c.StallProbe = time.Minute, 10*time.Second
		c.HalfLoadTime = 30 * time.Second
	case "tiny": // the smoke test: shape only, numbers meaningless
		c.RoundTrips, c.StreamFrames = 100, 2000
		c.CommitTime = 60 * time.Millisecond
		c.CommitBoards = []int{3}
		c.ScaleBoards, c.ScaleTime = []int{3, 5}, 60*time.Millisecond
		c.InitBytes = 4 << 20
		c.XprocKeys, c.XprocTime = 2000, 60*time.Millisecond
		c.FailoverBoards, c.Kills, c.Stops = 3, 2, 1
		c.StabilityTime, c.StallProbe = 3*time.Second, time.Second
		c.HalfLoadTime = time.Second
	default:
		return c, fmt.Errorf("bench: mode %q unknown; use full, quick or tiny", mode)
	}
	return c, nil
}

// suite is one run: the chassis shared by the sections and what later
// sections compare against.
type suite struct {
	cfg     Config
	res     *Results
	chassis *rig.Chassis
	logw    io.Writer
	logMu   sync.Mutex // sections log from several goroutines (a failover round's reaper), and Config.Log need not be safe for that
	dbg     *slog.Logger

	// boardd is the boardd binary built for this run (in binDir, removed
	// at the end), empty until a section needs it.
	boardd, binDir string

	bare     *bareFigures
	latency  map[string]Samples // commit latency samples by ack policy (3 boards, 1 writer), for the CDF plot
	failover map[string]Samples // by fault kind, for the histogram
}

func (s *suite) logf(format string, args ...any) {
	line := fmt.Sprintf("bench: "+format+"\n", args...)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	_, _ = io.WriteString(s.logw, line)
}

// Run measures the selected sections and writes results.md, results.json
// and the plots to cfg.Out. A section that fails is recorded as not
// measured with the reason; Run fails only when nothing could be set up or
// written.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	start := time.Now()
	s := &suite{cfg: cfg, logw: cfg.Log, latency: map[string]Samples{}, failover: map[string]Samples{}}
	if s.logw == nil {
		s.logw = io.Discard
	}
	s.res = &Results{Date: start.UTC().Format("2006-01-02 15:04 MST"), Mode: cfg.Mode, Machine: machine(), BoarddArgs: cfg.BoarddArgs, MTU: cfg.MTU}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench: creating the output directory: %w", err)
	}

	if os.Geteuid() != 0 {
		s.skipAll(ctx, "needs root to build the network-namespace chassis (run `sudo go run ./bench`)")
	} else if err := rig.Available(); err != nil {
		s.skipAll(ctx, fmt.Sprintf("no network namespaces on this machine: %v", err))
	} else {
		n := 2
		for _, id := range cfg.Sections {
			switch id {
			case secCommit:
				n = max(n, slices.Max(cfg.CommitBoards))
			case secScale:
				n = max(n, slices.Max(cfg.ScaleBoards))
			case secFailover, secStability:
				n = max(n, cfg.FailoverBoards)
			}
		}
		s.logf("building a chassis of %d boards", n)
		c, err := rig.New(rig.Options{Boards: n, Prefix: "bnch", MTU: cfg.MTU})
		if err != nil {
			s.skipAll(ctx, fmt.Sprintf("building the chassis failed: %v", err))
		} else {
			s.chassis = c
			defer func() {
				if err := c.Close(); err != nil {
					s.logf("removing the chassis: %v", err)
				}
			}()
			s.runSections(ctx)
		}
	}
	if s.binDir != "" {
		_ = os.RemoveAll(s.binDir)
	}
	s.targets()
	s.res.Elapsed = time.Since(start).Round(time.Second).String()
	return s.res, s.write()
}

func (s *suite) selected(id string) bool { return slices.Contains(s.cfg.Sections, id) }

func (s *suite) runSections(ctx context.Context) {
	run := map[string]func(context.Context) Section{
		secBare:      s.runBare,
		secCommit:    s.runCommit,
		secScale:     s.runScale,
		secInit:      s.runInit,
		secXproc:     s.runXproc,
		secFailover:  s.runFailover,
		secStability: s.runStability,
	}
	for _, id := range allSections() {
		if !s.selected(id) {
			continue
		}
		if ctx.Err() != nil {
			sec := emptySection(id)
			sec.NotMeasured = "interrupted before this section ran"
			s.res.Sections = append(s.res.Sections, sec)
			continue
		}
		t0 := time.Now()
		s.logf("section %s", id)
		sec := run[id](ctx)
		if sec.NotMeasured == "" && !sec.measured() {
			sec.NotMeasured = "no row could be measured (see the row reasons)"
		}
		s.logf("section %s done in %v", id, time.Since(t0).Round(time.Millisecond))
		s.res.Sections = append(s.res.Sections, sec)
	}
}

// skipAll records every selected section as not measured for reason,
// except the shared-memory reads, which need no chassis and run anyway.
func (s *suite) skipAll(ctx context.Context, reason string) {
	s.logf("%s", reason)
	for _, id := range allSections() {
		if !s.selected(id) {
			continue
		}
		if id == secXproc && ctx.Err() == nil {
			s.res.Sections = append(s.res.Sections, s.runXproc(ctx))
			continue
		}
		sec := emptySection(id)
		sec.NotMeasured = reason
		s.res.Sections = append(s.res.Sections, sec)
	}
}

func emptySection(id string) Section {
	titles := map[string]string{
		secBare:      "Bare link (physical limit)",
		secCommit:    "Commit latency and throughput by ack policy",
		secScale:     "Scaling with the number of boards (QUORUM)",
		secInit:      "Internal init rate",
		secXproc:     "Reads from shared memory",
		secFailover:  "Failover",
		secStability: "Stability under load (no fault)",
	}
	return Section{ID: id, Title: titles[id]}
}

func (s *suite) section(id string) *Section {
	for i := range s.res.Sections {
		if s.res.Sections[i].ID == id {
			return &s.res.Sections[i]
		}
	}
	return nil
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// errInterrupted marks a measurement cut short by Ctrl-C.
var errInterrupted = errors.New("bench: interrupted")

// isolate leaves boards 1..n of the chassis alone on a bridge for the group
// about to run on them, the chassis's other boards on another (rig
// Partition; all of them together when n covers the chassis). The bridge
// floods the group's multicast frames to every port, and on the rig the
// kernel's receive work for every copy runs on the sending board's CPU
// inside its send: a 3-board group on the 15-board chassis paid for twelve
// idle boards' copies in every commit's send, where in a chassis those
// boards' own CPUs would. Partition replaces the layout of the group
// before, so groups of any size can follow each other.
func (s *suite) isolate(n int) error {
	var err error
	if n >= len(s.chassis.Boards) {
		err = s.chassis.Heal()
	} else {
		err = s.chassis.Partition(s.chassis.Boards[:n])
	}
	if err != nil {
		return fmt.Errorf("leaving boards 1..%d alone on a bridge: %w", n, err)
	}
	return nil
}
