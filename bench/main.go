// Command bench measures boardha on a chassis of network namespaces built
// on this machine, next to the physical limit of the same links, in one run:
//
//	sudo go run ./bench                 # full run (a few minutes)
//	sudo go run ./bench -quick          # smaller, for a first look
//	sudo go run ./bench -sections bare,commit -out /tmp/b
//
// Sections: bare (plain AF_PACKET round trip and stream rate), commit
// (latency and throughput per ack policy), scale (3..15 boards), init
// (internal init rate), xproc (reads from shared memory in another process),
// failover (SIGKILL and SIGSTOP of a boardd master). Results go to stdout
// and to -out: results.md, results.json, commit_latency_cdf.png and
// failover_hist.png. Every figure is measured in the run that prints it;
// what could not be measured is printed as "not measured: <reason>".
//
// Everything the run creates (namespaces, boardd processes, shared memory
// regions, temporary files) is removed on exit and on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// childEnv selects a helper mode when bench re-executes itself as a child
// process (the cross-process reader).
const childEnv = "BOARDHA_BENCH_CHILD"

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(cliMain(os.Args[1:], os.Stdout, os.Stderr))
}

func cliMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smaller sizes and shorter intervals (a few minutes)")
	tiny := fs.Bool("tiny", false, "smallest sizes, as the smoke test runs them (checks the setup; figures not meaningful)")
	sections := fs.String("sections", strings.Join(allSections(), ","), "comma-separated sections to run: "+strings.Join(allSections(), ","))
	out := fs.String("out", "bench/out", "directory for results.md, results.json and the plots")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	policies := fs.String("policies", "", "comma-separated ack policies for the commit section (default all): NONE,ONE,ONE_PEER,QUORUM,ALL_PEERS,ALL")
	foBoards := fs.Int("failover-boards", 0, "boardd processes in the failover and stability sections (default: 5 full, 3 quick)")
	stability := fs.Duration("stability", 0, "length of the loaded run without faults (default: 10m full, 1m quick)")
	halfLoad := fs.String("half-load", "", `length of the run after it at half its rate (default: 5m full, 30s quick); "off" for none`)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	traceFile := fs.String("trace", "", "write an execution trace of the run to this file (go tool trace)")
	mtu := fs.Int("mtu", 0, "MTU of every link of the chassis, 576..9000 (default: the rig's 1500), to compare a backplane with jumbo frames; the report says so")
	boarddExtra := fs.String("boardd-args", "", `extra arguments for every "boardd run", to compare settings (e.g. "-heartbeat-monitor 12ms"); the report says so`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q; see -h\n", fs.Args())
		return 2
	}
	mode := "full"
	if *quick {
		mode = "quick"
	}
	if *tiny {
		mode = "tiny"
	}
	cfg, err := sized(mode)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	cfg.Out = *out
	if *foBoards > 0 {
		cfg.FailoverBoards = *foBoards
	}
	if *stability > 0 {
		cfg.StabilityTime = *stability
	}
	switch *halfLoad {
	case "":
	case "off":
		cfg.HalfLoadTime = 0
	default:
		d, err := time.ParseDuration(*halfLoad)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "bench: -half-load %q: want a positive duration like 2m, or off\n", *halfLoad)
			return 2
		}
		cfg.HalfLoadTime = d
	}
	cfg.BoarddArgs = strings.Fields(*boarddExtra)
	if *mtu != 0 && (*mtu < 576 || *mtu > rig.MaxMTU) {
		fmt.Fprintf(stderr, "bench: -mtu %d outside 576..%d\n", *mtu, rig.MaxMTU)
		return 2
	}
	cfg.MTU = *mtu
	cfg.Sections = nil
	for _, s := range strings.Split(*sections, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		known := false
		for _, k := range allSections() {
			known = known || k == s
		}
		if !known {
			fmt.Fprintf(stderr, "bench: section %q unknown; choose from %s\n", s, strings.Join(allSections(), ","))
			return 2
		}
		cfg.Sections = append(cfg.Sections, s)
	}
	for _, name := range strings.Split(*policies, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		p, ok := policyByName(name)
		if !ok {
			fmt.Fprintf(stderr, "bench: ack policy %q unknown; choose from NONE,ONE,ONE_PEER,QUORUM,ALL_PEERS,ALL\n", name)
			return 2
		}
		cfg.Policies = append(cfg.Policies, p)
	}
	if len(cfg.Sections) == 0 {
		fmt.Fprintln(stderr, "bench: no section selected")
		return 2
	}
	if !*quiet {
		cfg.Log = stderr
	}
	// The first Ctrl-C ends the run cleanly (sections stop, everything is
	// removed, the partial results are written); stop() then restores the
	// default so a second one kills at once (children die with us through
	// Pdeathsig; the next run sweeps leftover namespaces).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() { <-ctx.Done(); stop() }()
	defer stop()
	stopProfiles, err := startProfiles(*cpuProfile, *traceFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	res, err := Run(ctx, cfg)
	stopProfiles()
	if res != nil {
		fmt.Fprint(stdout, res.Markdown())
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "bench: interrupted; partial results written to", cfg.Out)
		return 130
	}
	return 0
}

// startProfiles starts the CPU profile and the execution trace asked for;
// the function returned stops both and closes their files.
func startProfiles(cpuPath, tracePath string) (func(), error) {
	var stops []func()
	stopAll := func() {
		for _, f := range stops {
			f()
		}
	}
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return nil, fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("bench: -trace: %w", err)
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			stopAll()
			return nil, fmt.Errorf("bench: -trace: %w", err)
		}
		stops = append(stops, func() { trace.Stop(); f.Close() })
	}
	return stopAll, nil
}
