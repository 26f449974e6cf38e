package board

import (
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"time"
)

// AckPolicy says which acknowledgements make a commit permanent (Commit.Perm).
// The zero value selects the default, AckQuorum.
type AckPolicy uint8

const (
	ackDefault  AckPolicy = iota
	AckNone               // perm as soon as it is committed locally
	AckOne                // any one other site acked
	AckOnePeer            // one electable peer acked
	AckQuorum             // enough electable peers that a majority holds it (default)
	AckAllPeers           // every electable peer acked
	AckAll                // every site acked
)

var ackNames = [...]string{"default", "none", "one", "onepeer", "quorum", "allpeers", "all"}

func (p AckPolicy) String() string {
	if int(p) < len(ackNames) {
		return ackNames[p]
	}
	return fmt.Sprintf("AckPolicy(%d)", uint8(p))
}

// ParseAckPolicy maps a name as printed by AckPolicy.String (case-insensitive,
// "-" and "_" ignored) to the policy.
func ParseAckPolicy(s string) (AckPolicy, error) {
	n := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
	for i, name := range ackNames {
		if i > 0 && n == name {
			return AckPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("%w: ack policy %q unknown; use none, one, onepeer, quorum, allpeers or all", ErrInvalidConfig, s)
}

// StartMode says how Start joins the group.
type StartMode uint8

const (
	// StartClient joins as a replica; an election picks the master when
	// none is found.
	StartClient StartMode = iota
	// StartMaster designates this board master (the application decides,
	// as with BDB's DB_REP_MASTER).
	StartMaster
)

func (m StartMode) String() string {
	switch m {
	case StartClient:
		return "client"
	case StartMaster:
		return "master"
	}
	return fmt.Sprintf("StartMode(%d)", uint8(m))
}

// Defaults. They aim at a chassis backplane: sub-millisecond links, failover
// within tens of milliseconds.
const (
	DefaultHeartbeatSend      = 2 * time.Millisecond
	DefaultHeartbeatMonitor   = 10 * time.Millisecond
	DefaultElectionTimeout    = 10 * time.Millisecond
	DefaultElectionBackoffMax = 200 * time.Millisecond
	DefaultAckTimeout         = 100 * time.Millisecond
	DefaultLeaseTimeout       = 20 * time.Millisecond
	DefaultClockSkew          = 1.05
	DefaultPoolSize           = 256 << 20
	DefaultPageSize           = 4096
	DefaultLogSize            = 64 << 20
	// DefaultCheckpointKiB is small because a checkpoint's pinned snapshot
	// keeps every page freed after it from reuse: the pages a board cycles
	// through between checkpoints are its working set. With 100-byte
	// commits, measured on the 3-board rig (QUORUM, 1 writer, p50): 8 MiB
	// 78 µs, 1 MiB 69 µs, 256 KiB 39 µs, 64 KiB 32 µs, but at 64 KiB 64
	// writers fell from 127k to 55k commits/s.
	DefaultCheckpointKiB = 256
	// DefaultPace is a tenth of the default heartbeat monitor (and a
	// quarter of a shorter monitor at most): a paced replica's view of
	// the master is at most that much older than an unpaced one's, and a
	// vote waits at most that long for it.
	DefaultPace            = time.Millisecond
	DefaultEventBuffer     = 1024
	DefaultMaxMessageBytes = 1 << 20
	DefaultReaderHoldWarn  = 10 * time.Second
)

// minPace is the shortest Config.Pace: a rest shorter than a timer's
// wake-up saves nothing.
const minPace = 100 * time.Microsecond

// Config describes one board. Zero values select the defaults above; Open
// rejects out-of-range values with ErrInvalidConfig naming the field and the
// allowed range.
type Config struct {
	// Site is this board's id (the slot), unique in the group: 1..65534.
	Site uint16
	// Group names the replication group: 1..64 characters of
	// [A-Za-z0-9._-]. Boards of different groups on one backplane ignore
	// each other (the group id on the wire is a hash of the name).
	Group string
	// Peers are the other boards of the group. For the UDP transport the
	// value is the peer's "host:port" (this board's own entry, if present,
	// is its listen address); for raw and mem transports values are
	// ignored and only the sites matter. Sites not listed are learned from
	// their announcements.
	Peers map[uint16]string
	// Priority in elections; 0 means this board never becomes master
	// (except when started with StartMaster).
	Priority uint32
	// Transport: RawTransport, UDPTransport or MemTransport. Required.
	Transport Transport

	// AckPolicy decides when a commit is permanent; default AckQuorum.
	AckPolicy AckPolicy
	// AckTimeout bounds how long a commit waits for its acks before it
	// is reported not permanent (Perm=false). 1ms..10m, default 100ms.
	AckTimeout time.Duration

	// Leases enables master leases (needed by ViewLeased). A replica
	// that granted a lease does not vote until it expires, so leases add
	// up to LeaseTimeout*ClockSkew to failover.
	Leases bool
	// LeaseTimeout: 1ms..1m, default 20ms; must exceed HeartbeatSend.
	LeaseTimeout time.Duration
	// ClockSkew is the worst ratio between two boards' clock rates:
	// 1.0..2.0, default 1.05.
	ClockSkew float64

	// HeartbeatSend: how often the master announces itself. 100µs..10s,
	// default 2ms.
	HeartbeatSend time.Duration
	// HeartbeatMonitor: silence from the master after which a replica
	// calls an election. Above HeartbeatSend, up to 1m, default 10ms.
	HeartbeatMonitor time.Duration
	// ElectionTimeout: how long one election attempt waits for votes.
	// 1ms..1m, default 10ms.
	ElectionTimeout time.Duration
	// ElectionBackoffMax caps the randomized back-off between attempts.
	// ElectionTimeout..10m, default 200ms.
	ElectionBackoffMax time.Duration
	// TwoSiteStrict: in a two-site group, require both votes (no master
	// while partitioned) instead of letting one site win alone.
	TwoSiteStrict bool
	// NoAutoInit: do not internal-init automatically when this board is
	// too far behind; report ErrJoinFailure / EventJoinFailure instead.
	NoAutoInit bool
	// Pace lets replicas whose acks the master does not wait for read the
	// log at this pace (rep.Config.Pace): the master names, in each log
	// message, as few replicas as its ack policy needs (those that answer
	// first); the others leave what arrives unread for up to Pace and
	// apply it in one batch. On a card whose CPUs the replicas share with
	// the master (or with other firmware) they then take no CPU from the
	// commits in flight; a paced replica's data is up to Pace older. The
	// master's setting decides who is named; each replica's how long it
	// rests. 100µs..HeartbeatMonitor/4, default 1ms; negative turns pacing
	// off (every replica reads and acks at once).
	Pace time.Duration

	// LogSize is the in-memory log buffer in bytes: 64 KiB..4 GiB,
	// default 64 MiB.
	LogSize int
	// CheckpointKiB: checkpoint after this much log. 1..LogSize/2048
	// (half the log), default 256 KiB (see DefaultCheckpointKiB).
	CheckpointKiB int
	// PoolSize is the page pool in bytes: 16 pages..1 TiB, default 256 MiB.
	PoolSize int64
	// PageSize: a power of two, 512..65536, default 4096.
	PageSize int
	// ShmName names the shared-memory region (/dev/shm/<name>, or an
	// absolute path on a tmpfs) so other processes can Attach; empty
	// means private memory.
	ShmName string
	// KeepShm leaves a named region in place on Close (by default Close
	// removes it: an orderly shutdown releases the board's memory).
	KeepShm bool
	// ReaderHoldWarn: an attached process (Attach) found holding one
	// snapshot this long is logged and counted (Stat's ReaderHoldWarnings):
	// the pages freed since cannot be reused, and the pool fills unless it
	// lets go. Set it above the longest view a forwarding agent means to
	// hold (a full table walk). 1s..24h, default 10s; negative turns the
	// watch off.
	ReaderHoldWarn time.Duration

	// EventBuffer is the capacity of the Events channel: 1..1<<20,
	// default 1024. When full the oldest event is dropped and counted.
	EventBuffer int
	// MaxMessageBytes bounds one backplane message: 64 KiB..1 MiB,
	// default 1 MiB.
	MaxMessageBytes int
	// Seed for election tiebreakers and back-off jitter; 0 derives one
	// from the site and the time.
	Seed uint64
	// Logger receives the board's log; nil discards it.
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.AckPolicy == ackDefault {
		c.AckPolicy = AckQuorum
	}
	setDur(&c.AckTimeout, DefaultAckTimeout)
	setDur(&c.LeaseTimeout, DefaultLeaseTimeout)
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	setDur(&c.HeartbeatSend, DefaultHeartbeatSend)
	setDur(&c.HeartbeatMonitor, max(DefaultHeartbeatMonitor, 2*c.HeartbeatSend))
	setDur(&c.ElectionTimeout, DefaultElectionTimeout)
	setDur(&c.ElectionBackoffMax, max(DefaultElectionBackoffMax, c.ElectionTimeout))
	if c.Pace == 0 {
		c.Pace = min(DefaultPace, c.HeartbeatMonitor/4)
		if c.Pace < minPace {
			c.Pace = -1 // a monitor this short leaves no room to rest
		}
	}
	if c.LogSize == 0 {
		c.LogSize = DefaultLogSize
	}
	if c.CheckpointKiB == 0 {
		c.CheckpointKiB = min(DefaultCheckpointKiB, max(1, c.LogSize/4096))
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.ReaderHoldWarn == 0 {
		c.ReaderHoldWarn = DefaultReaderHoldWarn
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	return c
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Validate applies the defaults and reports the first field out of range,
// wrapping ErrInvalidConfig. Open calls it; it is exported so tools can
// check a configuration without starting a board.
func (c Config) Validate() error {
	_, err := c.validated()
	return err
}

func (c Config) validated() (Config, error) {
	c = c.withDefaults()
	bad := func(field, format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	if c.Site == 0 || c.Site == 0xFFFF {
		return bad("Site", "is %d; allowed 1..65534 (0 and 65535 are reserved)", c.Site)
	}
	if err := checkName(c.Group); err != nil {
		return bad("Group", "%q %v; allowed 1..64 characters of [A-Za-z0-9._-]", c.Group, err)
	}
	for s := range c.Peers {
		if s == 0 || s == 0xFFFF {
			return bad("Peers", "has site %d; allowed 1..65534", s)
		}
	}
	if len(c.Peers) > 1024 {
		return bad("Peers", "has %d sites; allowed at most 1024", len(c.Peers))
	}
	if err := c.Transport.check(c); err != nil {
		return bad("Transport", "%v", err)
	}
	if c.AckPolicy > AckAll {
		return bad("AckPolicy", "is %d; allowed AckNone..AckAll", c.AckPolicy)
	}
	if err := inRange(c.AckTimeout, time.Millisecond, 10*time.Minute); err != nil {
		return bad("AckTimeout", "%v", err)
	}
	if err := inRange(c.HeartbeatSend, 100*time.Microsecond, 10*time.Second); err != nil {
		return bad("HeartbeatSend", "%v", err)
	}
	if c.HeartbeatMonitor <= c.HeartbeatSend || c.HeartbeatMonitor > time.Minute {
		return bad("HeartbeatMonitor", "is %v; allowed above HeartbeatSend (%v) up to 1m", c.HeartbeatMonitor, c.HeartbeatSend)
	}
	if err := inRange(c.ElectionTimeout, time.Millisecond, time.Minute); err != nil {
		return bad("ElectionTimeout", "%v", err)
	}
	if c.ElectionBackoffMax < c.ElectionTimeout || c.ElectionBackoffMax > 10*time.Minute {
		return bad("ElectionBackoffMax", "is %v; allowed ElectionTimeout (%v)..10m", c.ElectionBackoffMax, c.ElectionTimeout)
	}
	if c.Pace > 0 && (c.Pace < minPace || c.Pace > c.HeartbeatMonitor/4) {
		return bad("Pace", "is %v; allowed 100µs..HeartbeatMonitor/4 (%v), or negative for no pacing", c.Pace, c.HeartbeatMonitor/4)
	}
	if err := inRange(c.LeaseTimeout, time.Millisecond, time.Minute); err != nil {
		return bad("LeaseTimeout", "%v", err)
	}
	if c.Leases && c.LeaseTimeout <= c.HeartbeatSend {
		return bad("LeaseTimeout", "is %v; must exceed HeartbeatSend (%v) so grants are refreshed before they expire", c.LeaseTimeout, c.HeartbeatSend)
	}
	if math.IsNaN(c.ClockSkew) || c.ClockSkew < 1 || c.ClockSkew > 2 {
		return bad("ClockSkew", "is %v; allowed 1.0..2.0", c.ClockSkew)
	}
	if c.LogSize < 64<<10 || int64(c.LogSize) > 4<<30 {
		return bad("LogSize", "is %d bytes; allowed 64 KiB..4 GiB", c.LogSize)
	}
	if maxK := c.LogSize / 2048; c.CheckpointKiB < 1 || c.CheckpointKiB > maxK {
		return bad("CheckpointKiB", "is %d; allowed 1..%d (half of LogSize, so the log cannot fill between checkpoints)", c.CheckpointKiB, maxK)
	}
	if c.PageSize < 512 || c.PageSize > 65536 || c.PageSize&(c.PageSize-1) != 0 {
		return bad("PageSize", "is %d; allowed a power of two 512..65536", c.PageSize)
	}
	if c.PoolSize < 16*int64(c.PageSize) || c.PoolSize > 1<<40 {
		return bad("PoolSize", "is %d bytes; allowed 16 pages (%d)..1 TiB", c.PoolSize, 16*c.PageSize)
	}
	if c.ShmName != "" && !filepath.IsAbs(c.ShmName) {
		if err := checkName(c.ShmName); err != nil {
			return bad("ShmName", "%q %v; allowed a name of [A-Za-z0-9._-] (in /dev/shm) or an absolute path", c.ShmName, err)
		}
	}
	if c.ReaderHoldWarn > 0 && (c.ReaderHoldWarn < time.Second || c.ReaderHoldWarn > 24*time.Hour) {
		return bad("ReaderHoldWarn", "is %v; allowed 1s..24h, or negative for no warning", c.ReaderHoldWarn)
	}
	if c.EventBuffer < 1 || c.EventBuffer > 1<<20 {
		return bad("EventBuffer", "is %d; allowed 1..1048576", c.EventBuffer)
	}
	if c.MaxMessageBytes < 64<<10 || c.MaxMessageBytes > 1<<20 {
		return bad("MaxMessageBytes", "is %d; allowed 65536..1048576", c.MaxMessageBytes)
	}
	return c, nil
}

func inRange(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("is %v; allowed %v..%v", d, lo, hi)
	}
	return nil
}

func checkName(s string) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	if len(s) > 64 {
		return fmt.Errorf("is %d characters long", len(s))
	}
	if s == "." || s == ".." {
		return fmt.Errorf("is a path element")
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}
