package sim

import (
	"strings"
	"testing"
	"time"
)

// calm is a configuration with a perfect network and no random faults, for
// scenarios whose story is scripted.
func calm(sites int, p Policy) Config {
	c := DefaultConfig()
	c.Sites = sites
	c.Policy = p
	c.Leases = false
	c.StartMaster = true
	c.Net = NetFaults{DelayMin: 200 * time.Microsecond, DelayMax: 2 * time.Millisecond}
	c.Chaos = Chaos{}
	c.SafeCrashes = false
	c.Duration = 4 * time.Second
	// Pinned, not taken from DefaultConfig: the scripted stories (and the
	// seeds that reproduce open bugs) depend on the exact workload.
	c.OpEvery = 8 * time.Millisecond
	c.PoolSize = 16 << 20
	c.LogSize = 1 << 20
	c.CkptKB = 16
	c.Tick = 5 * time.Millisecond
	return c
}

func hasViolation(r *Result, prefix string) bool {
	for _, v := range r.Violations {
		if strings.Contains(v, prefix) {
			return true
		}
	}
	return false
}

func story(r *Result) string { return "  " + strings.Join(r.Story, "\n  ") }

// TestWeakPolicyNoneLosesPerm shows the documented weakness of NONE: a write
// is Perm as soon as the master committed it, so a master that crashes before
// its log leaves takes the write with it. The checker, told to hold the run
// to the QUORUM promise, must report the loss for some seed.
func TestWeakPolicyNoneLosesPerm(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		c := calm(3, PolicyNone)
		c.Buggify.CrashAfterPerm = 0.01
		r := runHeldToGuarantee(seed, c)
		if hasViolation(r, "perm-lost") {
			t.Logf("NONE lost a Perm write with seed %d:\n%s\nstory:\n%s", seed, firstViolation(r, "perm-lost"), story(r))
			return
		}
	}
	t.Fatal("no seed in 1..40 lost a Perm write under NONE with the master crashing right after answering Perm: the scenario or the checker is broken")
}

// TestWeakPolicyOneLosesPerm: under ONE, a write acked by one replica is
// Perm; if that replica is cut off and the master crashes, the other
// majority elects a master without the write. The same script under QUORUM
// loses nothing (the write cannot become Perm with only two of five).
func TestWeakPolicyOneLosesPerm(t *testing.T) {
	script := []Fault{
		{At: 500 * time.Millisecond, Kind: FaultSplit, Sites: []uint16{1, 2}, For: time.Second},
		{At: 1200 * time.Millisecond, Kind: FaultCrash, Sites: []uint16{1}, For: 3 * time.Second},
		{At: 1501 * time.Millisecond, Kind: FaultSplit, Sites: []uint16{2}, For: 2 * time.Second},
	}
	var lost *Result
	for seed := uint64(1); seed <= 10 && lost == nil; seed++ {
		c := calm(5, PolicyOne)
		c.Script = script
		c.Duration = 6 * time.Second
		if r := runHeldToGuarantee(seed, c); hasViolation(r, "perm-lost") {
			lost = r
		}
	}
	if lost == nil {
		t.Fatal("under ONE, no seed in 1..10 lost a write acked by the one replica that was then cut off: scenario or checker broken")
	}
	t.Logf("ONE lost a Perm write with seed %d:\n%s\nstory:\n%s", lost.Seed, firstViolation(lost, "perm-lost"), story(lost))
	for seed := uint64(1); seed <= 3; seed++ {
		c := calm(5, PolicyQuorum)
		c.Script = script
		c.Duration = 6 * time.Second
		if r := Run(seed, c); len(r.Violations) > 0 {
			report(t, r)
		}
	}
}

// TestTwoSiteNonStrictDupMaster: a non-strict two-site group elects on one
// vote, so a partition gives two masters; after healing DUPMASTER makes one
// side step down and roll back, and the boards converge.
func TestTwoSiteNonStrictDupMaster(t *testing.T) {
	c := calm(2, PolicyOne)
	c.Script = []Fault{{At: 500 * time.Millisecond, Kind: FaultSplit, Sites: []uint16{1}, For: 1500 * time.Millisecond}}
	r := Run(7, c)
	if len(r.Violations) > 0 {
		report(t, r)
	}
	if r.Stats.MaxMasters < 2 {
		t.Fatalf("partitioned non-strict two-site group never had two masters (max %d):\n%s", r.Stats.MaxMasters, story(r))
	}
	if r.Stats.Rollbacks == 0 && r.Stats.Inits == 0 {
		t.Fatalf("after healing the duplicate masters, no side rolled back or re-initialised:\n%s", story(r))
	}
	t.Logf("two masters, reconciled:\n%s", story(r))

	// The same partition in a strict group: the cut-off replica cannot elect.
	c.TwoSiteStrict = true
	c.Policy = PolicyQuorum
	r = Run(7, c)
	if len(r.Violations) > 0 {
		report(t, r)
	}
	if r.Stats.MaxMasters > 1 {
		t.Fatalf("strict two-site group had %d masters at once:\n%s", r.Stats.MaxMasters, story(r))
	}
}

// TestQuorumSurvivesMasterCrashAfterPerm: the crash that loses writes under
// NONE loses nothing under QUORUM.
func TestQuorumSurvivesMasterCrashAfterPerm(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		c := calm(3, PolicyQuorum)
		c.Buggify.CrashAfterPerm = 0.2
		c.SafeCrashes = true
		r := Run(seed, c)
		if len(r.Violations) > 0 {
			report(t, r)
		}
	}
}

func firstViolation(r *Result, prefix string) string {
	for _, v := range r.Violations {
		if strings.Contains(v, prefix) {
			return v
		}
	}
	return ""
}

// runHeldToGuarantee runs a weak configuration but checks it as if it
// promised Perm durability, to show where the promise breaks.
func runHeldToGuarantee(seed uint64, c Config) *Result {
	r := Run(seed, c)
	r.History.Guarantee = true
	r.Violations = Check(r.History)
	return r
}

// TestQuorumAmnesiacRejoin: a three-site QUORUM group. Site 1 (master) is cut
// off; 2 and 3 elect one of them, which takes Perm writes; site 2 crashes and
// restarts empty just before the partition heals. Without the empty-board
// rule (Node.recoveryNeed) the empty site 2 could find the stale master 1
// first, catch up from it and ack its gen-1 writes into Perm; then 3
// (holding the newer gen) forces DUPMASTER, wins, and 1's Perm writes are
// rolled back: lost with one crash and one partition. The seeds are those
// of the first 300 that lost Perm writes with recoveryNeed made to return 0
// (checked 2026-12-05; seed 2 first showed the story); with the rule none
// of the 300 loses anything. They depend on rep's exact timing: after a
// change to it, search again with the rule disabled.
func TestQuorumAmnesiacRejoin(t *testing.T) {
	c := calm(3, PolicyQuorum)
	c.Duration = 5 * time.Second
	c.Script = []Fault{
		{At: 500 * time.Millisecond, Kind: FaultSplit, Sites: []uint16{1}, For: 2500 * time.Millisecond},
		{At: 1500 * time.Millisecond, Kind: FaultCrash, Sites: []uint16{2}, For: 1420 * time.Millisecond},
	}
	for _, seed := range []uint64{2, 35, 114, 143, 144, 173} {
		if r := Run(seed, c); len(r.Violations) > 0 {
			report(t, r)
		}
	}
}

// TestLeaseCheckerCatchesDrift: clocks drifting far beyond the bound rep is
// configured with make leases unsound; the every-step lease check or the
// linearizability check must report it for some seed. This tests the
// checkers end to end (rep is configured wrongly on purpose).
func TestLeaseCheckerCatchesDrift(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		c := calm(3, PolicyQuorum)
		c.Leases = true
		c.ClockSkew = 0.001
		c.Buggify.ClockDrift = 3.0 // one clock may run four times as fast as another
		c.Chaos = Chaos{Every: 300 * time.Millisecond, Isolate: 3, Heal: 1}
		r := Run(seed, c)
		if hasViolation(r, "lease:") || hasViolation(r, "linearizability") {
			t.Logf("seed %d: clocks outside the configured skew broke leases: %s", seed, r.Violations[0])
			return
		}
	}
	t.Fatal("no seed in 1..60 showed two lease holders or a non-linearizable read with clocks drifting 300% under a 0.1% bound: the lease checks cannot fail")
}

// TestLinearizabilityCatchesNaiveReads: a leased read that returns local
// data before it is Perm can show a write a later master does not have; the
// porcupine check must report it for some seed.
func TestLinearizabilityCatchesNaiveReads(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		c := calm(3, PolicyQuorum)
		c.Leases = true
		c.ReadFrac = 0.5
		c.Buggify.NaiveReads = true
		c.Buggify.CrashAfterCommit = 0.05
		c.SafeCrashes = true
		c.Chaos = Chaos{Every: 300 * time.Millisecond, Isolate: 3, CrashMstr: 1, Heal: 1}
		r := Run(seed, c)
		if hasViolation(r, "linearizability") && !hasViolation(r, "perm-lost") {
			t.Logf("seed %d: %s", seed, firstViolation(r, "linearizability"))
			return
		}
	}
	t.Fatal("no seed in 1..60 caught a leased read returning a not-yet-Perm write that was then lost: the linearizability check cannot fail")
}

// TestQuorumDuplicateGenMasters: three sites, QUORUM, leases, master crashes
// and one-way isolations. Seed 14 once elected site 1 gen 3 while its sends
// were cut, and sites 2 and 3 elected 3, also gen 3 (site 2 voting in both
// elections); at heal, DUPMASTER between equal gens made 3 step down and roll
// back its Perm writes. Elections have changed since (a master's gen is the
// egen it won, voteIgnored) and no seed of the first 200 reproduces the story
// now, even with voteIgnored disabled (checked 2026-12-05): this is a guard
// of the invariant (the checker reports two masters elected at one gen, and
// lost Perm writes) over that configuration, not a reproduction.
func TestQuorumDuplicateGenMasters(t *testing.T) {
	c := calm(3, PolicyQuorum)
	c.Leases = true
	c.ReadFrac = 0.5
	c.Buggify.CrashAfterCommit = 0.05
	c.SafeCrashes = true
	c.Chaos = Chaos{Every: 300 * time.Millisecond, Isolate: 3, CrashMstr: 1, Heal: 1}
	for seed := uint64(1); seed <= 20; seed++ {
		if r := Run(seed, c); len(r.Violations) > 0 {
			report(t, r)
		}
	}
}

// TestFrozenMasterKeepAlive: a master whose runtime is frozen for three
// heartbeat monitors while its process speaks for it (KeepAlive) stays
// master: nobody elects. Frozen for longer than the keepalives last, it is
// replaced; after it thaws the run's final check finds one master and
// every site converged. Leases on: a frozen master's lease runs out on its
// own clock, and the checkers see no read or write lost either way.
func TestFrozenMasterKeepAlive(t *testing.T) {
	c := calm(3, PolicyQuorum)
	c.Leases = true
	c.ReadFrac = 0.25
	c.Script = []Fault{{At: time.Second, Kind: FaultFreeze, For: 3 * heartbeatMonitor}}
	r := Run(11, c)
	if len(r.Violations) > 0 {
		report(t, r)
	}
	if r.Stats.Freezes != 1 || r.Stats.KeepAlives == 0 {
		t.Fatalf("%d freezes, %d keepalives; want 1 freeze of the master and its keepalives:\n%s", r.Stats.Freezes, r.Stats.KeepAlives, story(r))
	}
	if r.Stats.Elections != 1 {
		t.Fatalf("%d masters elected with a master frozen for %v under keepalives; want only the first:\n%s", r.Stats.Elections, 3*heartbeatMonitor, story(r))
	}

	c.Script = []Fault{{At: time.Second, Kind: FaultFreeze, For: keepAliveLimit + 3*heartbeatMonitor}}
	r = Run(11, c)
	if len(r.Violations) > 0 {
		report(t, r)
	}
	if r.Stats.Elections < 2 {
		t.Fatalf("a master frozen past its keepalives (%v) was not replaced:\n%s", keepAliveLimit+3*heartbeatMonitor, story(r))
	}
}

// TestQuorumEmptiedSiteFloor: sweep seeds 1648 and 1966 (three sites,
// QUORUM, leases, chaos). In 1966 the master's Perm writes were acked by
// one replica while the other was cut off; the master lost its memory,
// restarted, heard both replicas, and then elected the stale one with its
// vote while the holder was cut off again: the Perm writes were lost with
// one site's memory, not a majority's. The sweep tolerated it as a loss
// explained by amnesia. An emptied site now votes as if it still had the
// most current log it heard while recovering (elect's floor); both seeds
// lose Perm writes without it (checked 2026-12-05 by lifting the floor).
func TestQuorumEmptiedSiteFloor(t *testing.T) {
	for _, seed := range []uint64{1648, 1966} {
		if r := Run(seed, ConfigForSeed(seed)); len(r.Violations) > 0 {
			report(t, r)
		}
	}
}

// TestInitResumesUnderWrites: a replica that lost its memory copies the
// master's checkpoint over a lossy network while writes fill the master's
// small log, so the master moves the checkpoint before the copy is whole.
// The replica resumes the copy from the later checkpoint, keeping the pages
// the master has not written since, and the checker holds the run to every
// guarantee, the content of the resumed replica included.
func TestInitResumesUnderWrites(t *testing.T) {
	var resumed *Result
	for seed := uint64(1); seed <= 20 && resumed == nil; seed++ {
		c := calm(3, PolicyQuorum)
		c.LogSize, c.CkptKB = 64<<10, 8 // inmem's smallest log: half of it fills in tens of writes
		c.OpEvery = time.Millisecond
		c.ValuePad = 1000 // a few thousand pages by the crash
		c.Net.Drop = 0.2
		c.Duration = 6 * time.Second
		c.Script = []Fault{{At: time.Second, Kind: FaultCrash, Sites: []uint16{3}, For: 500 * time.Millisecond}}
		r := Run(seed, c)
		if len(r.Violations) > 0 {
			report(t, r)
		}
		if r.Stats.InitResumes > 0 && r.Stats.InitPagesKept > 0 {
			resumed = r
		}
	}
	if resumed == nil {
		t.Fatal("no seed in 1..20 resumed an init with pages kept: the scenario no longer cuts a copy short")
	}
	t.Logf("seed %d: %d inits, %d resumed, %d pages kept", resumed.Seed, resumed.Stats.Inits, resumed.Stats.InitResumes, resumed.Stats.InitPagesKept)
}
