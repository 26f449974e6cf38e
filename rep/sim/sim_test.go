package sim

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeeds  = flag.Int("sim.seeds", 0, "number of seeds TestSeeds runs (default 500, 5000 with -sim.soak)")
	flagSeed   = flag.Uint64("sim.seed", 0, "replay one seed of TestSeeds, printing its story and trace")
	flagSoak   = flag.Bool("sim.soak", false, "run thousands of seeds")
	flagFirst  = flag.Uint64("sim.first", 1, "first seed of the sweep")
	flagFull   = flag.Bool("sim.fulltrace", false, "with -sim.seed: print every step, not just the last 200")
	flagStrict = flag.Bool("sim.strict", true, "fail TestSeeds on every violation; -sim.strict=false tolerates the known weaknesses (losses explained by a site losing its memory, replicas stalled on a full pool or log) and lists them")
)

// buildTags is what `go test` needs to include the simulation (nothing now
// that rep.EnvStorage is part of the default build).
const buildTags = ""

func replayCmd(seed uint64) string {
	return fmt.Sprintf("go test %s./rep/sim/ -run 'TestSeeds$' -sim.seed=%d -v", buildTags, seed)
}

func report(t *testing.T, r *Result) {
	t.Helper()
	var b strings.Builder
	replay := replayCmd(r.Seed)
	if !strings.HasPrefix(t.Name(), "TestSeeds") {
		replay = fmt.Sprintf("go test %s./rep/sim/ -run '%s$' -v (scripted, seed %d)", buildTags, t.Name(), r.Seed)
	}
	fmt.Fprintf(&b, "seed %d FAILED (%d violations)\n  replay: %s\n  config: %s\n", r.Seed, len(r.Violations), replay, r.Config.String())
	for i, v := range r.Violations {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d more\n", len(r.Violations)-10)
			break
		}
		fmt.Fprintf(&b, "  violation: %s\n", v)
	}
	fmt.Fprintf(&b, "  stats: %+v\n", r.Stats)
	for _, l := range r.Sites {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if *flagSeed != 0 {
		b.WriteString("  story:\n")
		for _, l := range r.Story {
			b.WriteString("    " + l + "\n")
		}
	}
	b.WriteString(r.Trace)
	t.Error(b.String())
}

func containsSeed(s []uint64, x uint64) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// allKnown reports whether every violation belongs to a known, reported
// weakness: a loss explained by a site losing its memory, or a replica
// stalled on a full page pool or log.
func allKnown(v []string) bool {
	for _, x := range v {
		if !strings.Contains(x, AmnesiaTag) && !strings.Contains(x, PoolFullTag) && !strings.Contains(x, LogFullTag) {
			return false
		}
	}
	return true
}

// TestSeeds is the sweep: every seed names a configuration (ConfigForSeed)
// and a run; every run must uphold the guarantees its configuration claims.
func TestSeeds(t *testing.T) {
	if *flagSeed != 0 {
		cfg := ConfigForSeed(*flagSeed)
		r := Run(*flagSeed, cfg)
		if *flagFull {
			r = RunTraced(*flagSeed, cfg)
		}
		t.Logf("seed %d: %s\n  steps %d trace hash %016x\n  stats %+v", r.Seed, cfg.String(), r.Steps, r.TraceHash, r.Stats)
		if len(r.Violations) > 0 {
			report(t, r)
			return
		}
		if testing.Verbose() {
			t.Logf("story:\n  %s", strings.Join(r.Story, "\n  "))
		}
		return
	}
	n := 500
	if *flagSoak {
		n = 5000
	}
	if *flagSeeds > 0 {
		n = *flagSeeds
	}
	if testing.Short() {
		n = min(n, 100)
	}
	start := time.Now()
	seeds := make(chan uint64)
	results := make([]*Result, n)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				r := Run(seed, ConfigForSeed(seed))
				r.History = nil // keep memory flat over thousands of seeds
				results[seed-*flagFirst] = r
			}
		}()
	}
	for i := 0; i < n; i++ {
		seeds <- *flagFirst + uint64(i)
	}
	close(seeds)
	wg.Wait()
	var total Stats
	failed := 0
	var amnesia []uint64
	cover := map[string]int{}
	for _, r := range results {
		total.add(r.Stats)
		c := r.Config
		cover[fmt.Sprintf("sites=%d ack=%s leases=%v", c.Sites, c.Policy, c.Leases)]++
		if len(r.Violations) > 0 && !*flagStrict && allKnown(r.Violations) {
			amnesia = append(amnesia, r.Seed)
			continue
		}
		if len(r.Violations) > 0 {
			failed++
			if failed <= 5 {
				report(t, r)
			} else {
				t.Errorf("seed %d FAILED: %s (replay: %s)", r.Seed, r.Violations[0], replayCmd(r.Seed))
			}
		}
	}
	var keys []string
	for k := range cover {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cv strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&cv, "\n  %4d  %s", cover[k], k)
	}
	t.Logf("%d seeds (%d..%d), %d failed, in %v\n  totals: %+v\n  configurations:%s",
		n, *flagFirst, *flagFirst+uint64(n)-1, failed, time.Since(start).Round(time.Millisecond), total, cv.String())
	if len(amnesia) > 0 {
		byTag := map[string][]uint64{}
		for _, r := range results {
			if !containsSeed(amnesia, r.Seed) {
				continue
			}
			for _, tag := range []string{AmnesiaTag, PoolFullTag, LogFullTag} {
				if strings.Contains(strings.Join(r.Violations, "\n"), tag) {
					byTag[tag] = append(byTag[tag], r.Seed)
				}
			}
		}
		var b strings.Builder
		for _, tag := range []string{AmnesiaTag, PoolFullTag, LogFullTag} {
			if len(byTag[tag]) > 0 {
				fmt.Fprintf(&b, "\n  %s: seeds %v (replay: %s)", tag, byTag[tag], replayCmd(byTag[tag][0]))
			}
		}
		t.Logf("KNOWN WEAKNESSES, reported in rep/sim's findings and not failed here (-sim.strict=false): %d seeds%s", len(amnesia), b.String())
	}
}

// TestReplayDeterministic: the same seed gives the same run, step for step,
// including the runs that roll back and internally initialise (where map
// iteration or a wall clock anywhere in the stack would show).
func TestReplayDeterministic(t *testing.T) {
	var picked []uint64
	var rolled, inited bool
	for seed := uint64(1); seed <= 200 && len(picked) < 4; seed++ {
		r := Run(seed, ConfigForSeed(seed))
		switch {
		case r.Stats.Inits > 0 && !inited:
			inited = true
		case r.Stats.Rollbacks > 0 && !rolled:
			rolled = true
		case len(picked) < 2:
		default:
			continue
		}
		picked = append(picked, seed)
		again := Run(seed, ConfigForSeed(seed))
		if r.TraceHash != again.TraceHash || r.Steps != again.Steps {
			t.Errorf("seed %d replayed differently: %d steps hash %016x, then %d steps hash %016x (replay: %s)",
				seed, r.Steps, r.TraceHash, again.Steps, again.TraceHash, replayCmd(seed))
		}
	}
	if !rolled || !inited {
		t.Errorf("seeds 1..200 had no run with a rollback (%v) or an internal init (%v): the sweep no longer reaches those paths", rolled, inited)
	}
	t.Logf("replayed seeds %v identically", picked)
}
