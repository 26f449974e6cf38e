package sim

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy mirrors rep.AckPolicy so that configurations can be written (and
// printed) without reaching into rep.
type Policy uint8

const (
	PolicyNone Policy = iota
	PolicyOne
	PolicyOnePeer
	PolicyQuorum
	PolicyAllPeers
	PolicyAll
)

func (p Policy) String() string {
	return [...]string{"NONE", "ONE", "ONE_PEER", "QUORUM", "ALL_PEERS", "ALL"}[p]
}

// Chaos is the fault schedule's mix. Every ChaosEvery (on average) the
// schedule draws one action with these relative weights.
type Chaos struct {
	Every     time.Duration
	Crash     int // crash a site (memory lost), restart it later
	CrashMstr int // crash the current master
	Partition int // split the group (sometimes one-way)
	Isolate   int // cut one site off (often the master)
	Loss      int // a burst of heavy loss
	Heal      int // end partitions early
	Freeze    int // freeze a site's runtime (often the master's) while its process still speaks for it
}

// Buggify turns rare paths on, FoundationDB style.
type Buggify struct {
	TinyLog          bool    // a log so small that it wraps constantly: internal init happens
	CrashAfterCommit float64 // probability the master crashes right after a client commit, before shipping it
	CrashAfterPerm   float64 // probability the master crashes right after answering Perm, before shipping the log
	CrashDuringInit  float64 // probability a site being initialised crashes mid-way
	// InitStoreFails is the probability that the driver reports an init
	// it began as one it could not store (rep.Node.InitFailed, as the
	// board does when the memory for an import is short); a step that
	// stores pages fails a hundred times less often.
	InitStoreFails float64
	LossBurst      float64 // drop probability during a loss burst
	SlowSite       bool    // one site gets 10x the network delay
	// ClockDrift, when > 0, makes the sites' clocks drift this much apart,
	// whatever ClockSkew tells rep: leases are then unsound, and the lease
	// checker must notice (a test of the checker, not of rep).
	ClockDrift float64
	// NaiveReads returns leased reads at once instead of waiting until what
	// they saw is Perm: the linearizability checker must notice.
	NaiveReads bool
}

// FaultKind is a scripted fault's kind.
type FaultKind uint8

const (
	FaultSplit       FaultKind = iota + 1 // cut Sites off from the rest (OneWay: only their sending side)
	FaultCrash                            // crash Sites (memory lost); they restart after For
	FaultHeal                             // remove every partition
	FaultCrashMaster                      // crash whichever sites are master now
	FaultFreeze                           // freeze Sites (none: the masters) for For; see Sim.freeze
)

// Fault is one scripted fault, for scenario tests that need a precise story.
type Fault struct {
	At     time.Duration
	Kind   FaultKind
	Sites  []uint16
	OneWay bool
	For    time.Duration // split: heal after; crash: restart after (0: at the end of the fault phase)
}

// Config is one simulated run.
type Config struct {
	Sites         int
	Policy        Policy
	Leases        bool
	TwoSiteStrict bool
	ZeroPriority  int // how many sites (the highest ids) have priority 0
	ClockSkew     float64
	StartMaster   bool // site 1 starts as master; otherwise everyone elects
	Net           NetFaults
	Chaos         Chaos
	Script        []Fault
	Buggify       Buggify
	// SafeCrashes limits crashes so that at most a minority of sites is
	// without its memory (crashed, or restarted and not yet caught up) at
	// once: beyond that, in-memory replication cannot keep anything.
	SafeCrashes bool
	Duration    time.Duration // workload and faults run this long
	Quiesce     time.Duration // then everything heals; the group must settle within this
	OpEvery     time.Duration // mean client think time
	ValuePad    int           // bytes added to every value put: more pages, longer inits
	ReadFrac    float64       // share of client ops that are leased reads
	DeleteFrac  float64
	PoolSize    int64
	LogSize     int
	CkptKB      int
	Tick        time.Duration
	// Pace, when above zero, is rep.Config.Pace, and a site its master does
	// not wait for reads as a board's receive loop does: after a read it
	// leaves what arrives for Pace, then takes it all (sooner if it stops
	// being paced).
	Pace time.Duration
}

// Guarantee reports whether the configuration promises that Perm writes
// survive: QUORUM or stronger with majority elections.
func (c *Config) Guarantee() bool {
	return c.Policy >= PolicyQuorum && c.MajorityElections()
}

// MajorityElections reports whether elections need a majority of the
// electable sites (so two masters can never be elected at the same gen).
func (c *Config) MajorityElections() bool {
	electable := c.Sites - c.ZeroPriority
	return electable >= 3 || (c.Sites == 2 && c.TwoSiteStrict && c.ZeroPriority == 0)
}

func (c *Config) String() string {
	return fmt.Sprintf("sites=%d zeroprio=%d ack=%s leases=%v strict=%v startmaster=%v skew=%.3f drop=%.2f dup=%.2f delay=%v-%v chaos=%+v buggify=%+v log=%dKiB ckpt=%dKiB pace=%v dur=%v",
		c.Sites, c.ZeroPriority, c.Policy, c.Leases, c.TwoSiteStrict, c.StartMaster, c.ClockSkew,
		c.Net.Drop, c.Net.Dup, c.Net.DelayMin, c.Net.DelayMax, c.Chaos, c.Buggify, c.LogSize>>10, c.CkptKB, c.Pace, c.Duration)
}

// DefaultConfig is a calm 3-site QUORUM group with leases.
func DefaultConfig() Config {
	return Config{
		Sites:       3,
		Policy:      PolicyQuorum,
		Leases:      true,
		ClockSkew:   0.02,
		Net:         NetFaults{Drop: 0.01, Dup: 0.01, DelayMin: 200 * time.Microsecond, DelayMax: 3 * time.Millisecond},
		Chaos:       Chaos{Every: 400 * time.Millisecond, Crash: 2, CrashMstr: 1, Partition: 2, Isolate: 2, Loss: 1, Heal: 2},
		SafeCrashes: true,
		Duration:    5 * time.Second,
		Quiesce:     20 * time.Second,
		OpEvery:     10 * time.Millisecond,
		ReadFrac:    0.25,
		DeleteFrac:  0.08,
		PoolSize:    16 << 20,
		LogSize:     1 << 20,
		CkptKB:      16,
		Tick:        5 * time.Millisecond,
	}
}

// ConfigForSeed derives a configuration from a seed, so that a seed alone
// names a run: the test sweep covers sizes, ack policies, leases, two-site
// groups and fault mixes by walking seeds.
func ConfigForSeed(seed uint64) Config {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	c := DefaultConfig()
	sizes := []int{2, 3, 3, 3, 4, 5, 5, 7}
	c.Sites = sizes[r.IntN(len(sizes))]
	policies := []Policy{PolicyQuorum, PolicyQuorum, PolicyQuorum, PolicyAll, PolicyAllPeers, PolicyOnePeer, PolicyOne, PolicyNone}
	c.Policy = policies[r.IntN(len(policies))]
	c.Leases = r.IntN(3) != 0
	if c.Sites == 2 {
		c.TwoSiteStrict = r.IntN(2) == 0
	}
	if c.Sites >= 5 && r.IntN(4) == 0 {
		c.ZeroPriority = 1
	}
	c.StartMaster = r.IntN(2) == 0
	c.ClockSkew = []float64{0, 0.01, 0.05}[r.IntN(3)]
	switch r.IntN(4) {
	case 0: // calm
		c.Net = NetFaults{DelayMin: 100 * time.Microsecond, DelayMax: time.Millisecond}
		c.Chaos.Every = time.Second
	case 1: // lossy, reordering
		c.Net = NetFaults{Drop: 0.05, Dup: 0.05, DelayMin: 100 * time.Microsecond, DelayMax: 8 * time.Millisecond}
	case 2: // partitions heavy
		c.Chaos = Chaos{Every: 300 * time.Millisecond, Crash: 1, CrashMstr: 1, Partition: 4, Isolate: 4, Loss: 1, Heal: 2}
	case 3: // crash heavy
		c.Chaos = Chaos{Every: 300 * time.Millisecond, Crash: 4, CrashMstr: 3, Partition: 1, Isolate: 1, Loss: 1, Heal: 2}
	}
	if r.IntN(4) == 0 {
		// A log that wraps every few dozen commits: replicas that fall
		// behind find their records gone and need internal init.
		c.Buggify.TinyLog = true
		c.LogSize = 64 << 10 // inmem's minimum
		c.CkptKB = 8
		c.OpEvery = 3 * time.Millisecond
		if seed%2 == 0 {
			// Values of a kilobyte: thousands of pages, so a copy is
			// slow enough for the tiny log's checkpoints to cut it
			// short and the init to resume. (Decided by the seed, not
			// the generator: the other seeds keep their runs.)
			c.ValuePad = 1000
		}
		if seed%3 == 0 {
			// Inits the board cannot store: copies end early and begin
			// again after the node's back-off. (By the seed too.)
			c.Buggify.InitStoreFails = 0.3
		}
	} else {
		c.LogSize = []int{1 << 20, 2 << 20, 4 << 20}[r.IntN(3)]
		c.CkptKB = []int{8, 16, 64}[r.IntN(3)]
	}
	if r.IntN(4) == 0 {
		c.Buggify.CrashAfterCommit = 0.05
	}
	if r.IntN(4) == 0 {
		c.Buggify.CrashDuringInit = 0.3
	}
	if r.IntN(3) == 0 {
		c.Buggify.LossBurst = 0.5 + 0.5*r.Float64()
		c.Chaos.Loss += 2
	}
	c.Buggify.SlowSite = r.IntN(6) == 0
	if r.IntN(3) == 0 {
		c.Chaos.Freeze = 2
	}
	if r.IntN(2) == 0 {
		// A tenth of the heartbeat monitor, as on the board.
		c.Pace = heartbeatMonitor / 10
	}
	return c
}
