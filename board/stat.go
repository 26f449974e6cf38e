package board

import (
	"context"
	"fmt"
	"github.com/seed61e250c8/boardha/backplane"
	"time"

	"github.com/seed61e250c8/boardha/rep"
)

// Role is a board's part in the group.
type Role uint8

const (
	RoleStarting Role = iota // opened, not started or still finding the group
	RoleClient               // replica
	RoleMaster
	RoleClosed
)

var roleNames = [...]string{"starting", "client", "master", "closed"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// MarshalText lets JSON carry the name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a name written by MarshalText.
func (r *Role) UnmarshalText(b []byte) error {
	for i, n := range roleNames {
		if n == string(b) {
			*r = Role(i)
			return nil
		}
	}
	return fmt.Errorf("board: unknown role %q", b)
}

// QueueStat is the master's write queue: group commit at work.
type QueueStat struct {
	Pending  int `json:"pending"`   // writes waiting for the next group commit
	InFlight int `json:"in_flight"` // commits waiting for their ack policy
}

// Stat is a snapshot of a board's replication state, cheap enough to poll.
type Stat struct {
	Site   uint16 `json:"site"`
	Group  string `json:"group"`
	Role   Role   `json:"role"`
	Master uint16 `json:"master"` // 0 = none known
	Gen    uint32 `json:"gen"`
	Egen   uint32 `json:"egen"`
	// LSN is the end of this board's log (everything before it applied).
	LSN uint64 `json:"lsn"`
	// PermLSN is the highest commit known to meet the ack policy (master).
	PermLSN       uint64 `json:"perm_lsn"`
	CheckpointLSN uint64 `json:"checkpoint_lsn"`
	LockedOut     bool   `json:"locked_out"`
	// Paced: a replica the master does not wait for, reading at
	// Config.Pace.
	Paced  bool          `json:"paced,omitempty"`
	Uptime time.Duration `json:"uptime_ns"`
	// ContentHash is filled only by callers that ask for it (boardd's stat
	// does): see Tx.ContentHash.
	ContentHash uint64 `json:"content_hash,omitempty"`

	Sites    []SiteStat   `json:"sites"`
	Lease    LeaseStat    `json:"lease"`
	Election ElectionStat `json:"election"`
	Init     InitStat     `json:"init"`
	Pool     PoolStat     `json:"pool"`
	Log      LogStat      `json:"log"`
	Counters Counters     `json:"counters"`
	Queue    QueueStat    `json:"queue"`
}

// SiteStat is what this board knows about one other site.
type SiteStat struct {
	Site     uint16 `json:"site"`
	AckedLSN uint64 `json:"acked_lsn"` // as seen by the master; replicas report 0
	LagBytes uint64 `json:"lag_bytes"` // master's LSN minus AckedLSN
	// LastHeard is how long ago a message from the site arrived; -1 if never.
	LastHeard time.Duration `json:"last_heard_ns"`
	Electable bool          `json:"electable"`
	// Waited: the master waits for this site's acks (Config.Pace); the
	// others read at their pace. Replicas report false.
	Waited bool `json:"waited,omitempty"`
}

// LeaseStat describes the master lease from this board's point of view.
type LeaseStat struct {
	Enabled bool `json:"enabled"`
	// Valid: this board is master and holds grants from a majority.
	Valid bool `json:"valid"`
}

// ElectionStat describes elections seen by this board.
type ElectionStat struct {
	InProgress bool   `json:"in_progress"`
	Phase      string `json:"phase,omitempty"`
	// Elections counts attempts this board took part in.
	Elections uint64 `json:"elections"`
	// LastFailover is the time from losing the master (first missed
	// heartbeat monitor period) to a new master being known; 0 if none yet.
	LastFailover time.Duration `json:"last_failover_ns"`
	// Recovering: the board started with empty memory and waits to hear
	// enough boards that remember (half of the electable ones, rounded up)
	// before it follows a master, acks or votes; it has heard Witnesses of
	// the WitnessesNeeded.
	Recovering      bool `json:"recovering,omitempty"`
	Witnesses       int  `json:"witnesses,omitempty"`
	WitnessesNeeded int  `json:"witnesses_needed,omitempty"`
	// VoteFloorLSN (with its gen): having lost its memory, the board votes
	// for no board whose log is less current than this point until its own
	// log reaches it; 0 when it has no floor.
	VoteFloorGen uint32 `json:"vote_floor_gen,omitempty"`
	VoteFloorLSN uint64 `json:"vote_floor_lsn,omitempty"`
}

// InitStat describes internal initialisation (copying pages from the master).
type InitStat struct {
	Active     bool    `json:"active"`
	PagesDone  uint64  `json:"pages_done"`
	PagesTotal uint64  `json:"pages_total"`
	Percent    float64 `json:"percent"`
	// PagesPerSec is the rate of the current (or last) copy.
	PagesPerSec float64 `json:"pages_per_sec"`
	Count       uint64  `json:"count"` // inits completed
	// LastDuration is how long the last init's last copy took;
	// LastTotalDuration counts from its first copy, so it also covers
	// the copies restarted or resumed (Restarts) before it finished.
	LastDuration      time.Duration `json:"last_duration_ns"`
	LastTotalDuration time.Duration `json:"last_total_duration_ns"`
	// PagesReasked counts pages asked for again because their PAGE
	// message was lost, over every init of this process.
	PagesReasked uint64 `json:"pages_reasked"`
	// InPlace: the current (or last) init imports into the board's own
	// pool, which was empty, rather than into a second region beside a
	// pool holding data (twice the pool's memory while it runs).
	InPlace bool `json:"in_place"`
	// Restarts counts copies started over, over every init of this
	// process: the master's checkpoint moved before the copy was whole
	// (its log since the checkpoint reached half the log while the board
	// copied; a larger log, or fewer writes meanwhile, avoid it), or the
	// pages did not make a whole tree. Resumes counts the copies that then
	// went on from the master's later checkpoint, keeping PagesKept pages
	// the master had not written since instead of receiving them again.
	Restarts  uint64 `json:"restarts"`
	Resumes   uint64 `json:"resumes"`
	PagesKept uint64 `json:"pages_kept"`
	// Failures counts init steps this board could not store, over every
	// init of this process: no memory for the import's region (a board
	// holding data imports beside it, into as much memory again as its
	// pool), a snapshot larger than the pool. Each ends the copy; a fresh
	// one begins after a back-off growing to about a second (Active is false
	// while it waits). LastError says why the init in progress last
	// failed (empty once one finishes).
	Failures  uint64 `json:"failures"`
	LastError string `json:"last_error,omitempty"`
}

// PoolStat describes the page pool.
type PoolStat struct {
	PageSize   int    `json:"page_size"`
	TotalPages uint64 `json:"total_pages"`
	UsedPages  uint64 `json:"used_pages"` // HeldPages included
	// HeldPages are pages a transaction freed that an older snapshot may
	// still read, kept from reuse until it is let go. A snapshot held
	// without end (a reader stuck in a view) keeps every page freed after
	// it, and the pool fills (ErrPoolFull): OldestBehind and Readers say
	// whose it is.
	HeldPages uint64 `json:"held_pages"`
	// Snapshots counts this process's open views and pinned snapshots
	// (the checkpoint's among them).
	Snapshots int `json:"snapshots"`
	// OldestBehind is how many transactions the oldest snapshot still
	// read (in this process or an attached one) is behind the newest.
	OldestBehind uint64 `json:"oldest_behind"`
	// Readers are the processes attached to the region (board.Attach).
	Readers []ReaderStat `json:"readers,omitempty"`
}

// ReaderStat is a process attached to the board's region.
type ReaderStat struct {
	PID int `json:"pid"`
	// Reading: in a view now, Behind transactions behind the newest.
	Reading bool   `json:"reading"`
	Behind  uint64 `json:"behind,omitempty"`
}

// LogStat describes the in-memory log buffer.
type LogStat struct {
	Size  uint64 `json:"size"`
	Begin uint64 `json:"begin"`
	End   uint64 `json:"end"`
}

// Counters are monotonic since Open.
type Counters struct {
	EventsDropped uint64 `json:"events_dropped"`
	ReRequests    uint64 `json:"rerequests"`
	Elections     uint64 `json:"elections"`
	MsgsSent      uint64 `json:"msgs_sent"`
	MsgsRecv      uint64 `json:"msgs_recv"`
	SendErrors    uint64 `json:"send_errors"`
	FramesDropped uint64 `json:"frames_dropped"` // bad or foreign frames dropped by the transport
	// FramesRecv and BytesRecv count what the transport received, frames
	// and their bytes on the wire, before any check: the backplane load of
	// this board (an internal init's pages travel compressed and without
	// their free space, so fewer bytes than the pages they restore).
	FramesRecv  uint64 `json:"frames_recv"`
	BytesRecv   uint64 `json:"bytes_recv"`
	MsgsDropped uint64 `json:"msgs_dropped"` // messages the replication layer dropped (stale, duplicate, malformed, ...)
	// PaceSwaps: as master, times a paced replica's acks released the
	// commits several times in a row (the replica waited for did not
	// answer) and the master waited for it instead.
	PaceSwaps uint64 `json:"pace_swaps"`
	// MasterSilences: as replica, times its master came back after a
	// silence of more than half the heartbeat monitor: halfway to an
	// election. Their rise warns of a starved master process (or a lossy
	// link) before elections begin.
	MasterSilences uint64 `json:"master_silences"`
	// MsgDrops breaks MsgsDropped down by reason (rep DropReason names;
	// reasons with none left out).
	MsgDrops map[string]uint64 `json:"msg_drops"`
	// Drops breaks the transport's drops down by reason (backplane
	// DropReason names), plus the raw transport's in-kernel eBPF filter
	// drops as kernel_other_ethertype, kernel_foreign_group, kernel_short,
	// and frames the kernel dropped for want of room in the receive ring
	// (or socket buffer) as kernel_receive_full.
	Drops        map[string]uint64 `json:"drops"`
	Commits      uint64            `json:"commits"`       // local Update transactions committed
	Batches      uint64            `json:"batches"`       // group-commit batches (Commits/Batches = batching factor)
	AppForwarded uint64            `json:"app_forwarded"` // Apply calls forwarded to the master
	AppServed    uint64            `json:"app_served"`    // forwarded Applies this master executed
	PermFailed   uint64            `json:"perm_failed"`
	// Stalls counts the times this board's runtime did not run its timers
	// for longer than the heartbeat monitor: its process got no CPU (an
	// overloaded card, a stopped virtual CPU, SIGSTOP), or the thread
	// holding the runtime did not run. A master that stalls that long
	// looks dead to its replicas, and they elect, unless its loop spoke for
	// it. LongestStall is the longest gap seen, counted or not.
	Stalls       uint64        `json:"stalls"`
	LongestStall time.Duration `json:"longest_stall_ns"`
	// KeepAlives counts the heartbeats the loop sent for this master while
	// its runtime was held (for at most five heartbeat monitors at a time:
	// a runtime held longer is wedged, and the replicas should replace it).
	KeepAlives uint64 `json:"keep_alives"`
	// ReaderHoldWarnings counts the attached processes found holding one
	// snapshot for Config.ReaderHoldWarn (each snapshot once; each also
	// logged with its pid): a forwarding agent stuck inside a view keeps
	// the pages freed since from reuse.
	ReaderHoldWarnings uint64 `json:"reader_hold_warnings"`
}

// Stat returns a snapshot of the board's state. It asks the runtime, so it
// waits (at most a second) for the loop to be free; a closed or unstarted
// board reports what it can without it.
func (b *Board) Stat() Stat {
	st := Stat{Site: b.cfg.Site, Group: b.cfg.Group, Uptime: time.Since(b.origin)}
	p := b.pub.Load()
	st.Role, st.Master, st.Gen = p.role, p.master, p.gen
	st.Lease.Enabled = b.cfg.Leases
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if b.do(ctx, func() { b.rt.fillStat(&st) }) != nil {
		b.envMu.RLock()
		if p.role != RoleClosed {
			fillEnvStat(&st, b.env)
		}
		b.envMu.RUnlock()
	}
	st.Counters.EventsDropped = b.events.dropped.Load()
	st.Counters.Commits = b.ctr.commits.Load()
	st.Counters.Batches = b.ctr.batches.Load()
	st.Counters.AppForwarded = b.ctr.appForwarded.Load()
	st.Counters.AppServed = b.ctr.appServed.Load()
	st.Counters.SendErrors = b.ctr.sendErrors.Load()
	st.Counters.PermFailed = b.ctr.permFailed.Load()
	st.Counters.Stalls = b.ctr.stalls.Load()
	st.Counters.LongestStall = time.Duration(b.ctr.longestStall.Load())
	st.Counters.KeepAlives = b.ctr.keepAlives.Load()
	st.Counters.ReaderHoldWarnings = b.ctr.readerHoldWarnings.Load()
	ts := b.tr.Stats()
	st.Counters.FramesDropped = ts.Dropped()
	st.Counters.FramesRecv, st.Counters.BytesRecv = ts.FramesIn, ts.BytesIn
	st.Counters.Drops = make(map[string]uint64, len(ts.Drops)+3)
	for r, n := range ts.Drops {
		st.Counters.Drops[backplane.DropReason(r).String()] = n
	}
	if ts.Filter.Attached {
		st.Counters.Drops["kernel_other_ethertype"] = ts.Filter.OtherEtherType
		st.Counters.Drops["kernel_foreign_group"] = ts.Filter.ForeignGroup
		st.Counters.Drops["kernel_short"] = ts.Filter.Short
	}
	if ts.SocketDrops > 0 {
		st.Counters.Drops["kernel_receive_full"] = ts.SocketDrops
	}
	return st
}

func (rt *runtime) fillStat(st *Stat) {
	b := rt.b
	now := b.now()
	s := rt.node.Status()
	st.Role = rt.role
	if s.Role == rep.RoleMaster {
		st.Role = RoleMaster
	}
	st.Master = 0
	if s.Master != rep.NoMaster {
		st.Master = s.Master
	}
	st.Gen, st.Egen = s.Gen, s.Egen
	st.PermLSN = s.PermLSN
	st.Queue.Pending = len(rt.pending) + int(rt.b.inboxN.Load())
	for _, w := range rt.waiters {
		st.Queue.InFlight += len(w.reqs)
	}
	st.LockedOut = s.Lockout
	st.CheckpointLSN = rt.store.CheckpointLSN()
	st.Lease.Valid = s.LeaseValid
	st.Election.InProgress = s.ElectionRunning
	if s.ElectionRunning {
		st.Election.Phase = s.Role.String()
	}
	st.Election.Elections = s.Counters.Elections
	st.Election.LastFailover = rt.lastFailover
	st.Election.Recovering = s.Recovering
	st.Election.Witnesses, st.Election.WitnessesNeeded = s.Witnesses, s.WitnessesNeeded
	st.Election.VoteFloorGen, st.Election.VoteFloorLSN = s.VoteFloorGen, s.VoteFloorEnd
	st.Init = InitStat{Active: rt.initActive, PagesDone: uint64(rt.initDone), PagesTotal: uint64(rt.initTotal),
		PagesPerSec: rt.initRate, Count: rt.initCount, LastDuration: rt.initLast, LastTotalDuration: rt.initLastWhole,
		InPlace: rt.initInPlace, PagesReasked: s.Counters.InitPagesReasked,
		Restarts: s.Counters.InitRestarts, Resumes: s.Counters.InitResumes, PagesKept: s.Counters.InitPagesKept,
		Failures: s.Counters.InitFailures, LastError: rt.initErr}
	if rt.initActive && s.InitPagesTotal > 0 {
		st.Init.PagesDone, st.Init.PagesTotal = uint64(s.InitPagesDone), uint64(s.InitPagesTotal)
	}
	if st.Init.PagesTotal > 0 {
		st.Init.Percent = 100 * float64(st.Init.PagesDone) / float64(st.Init.PagesTotal)
	}
	for _, ss := range s.Sites {
		heard := time.Duration(-1)
		if ss.LastHeard > 0 {
			heard = now - ss.LastHeard
		}
		st.Sites = append(st.Sites, SiteStat{Site: ss.Site, AckedLSN: ss.AckedLSN, LagBytes: ss.LagBytes,
			LastHeard: heard, Electable: ss.Priority > 0, Waited: ss.Waited})
	}
	st.Paced = b.paced.Load()
	st.Counters.PaceSwaps = s.Counters.PaceSwaps
	st.Counters.MasterSilences = s.Counters.MasterSilences
	st.Counters.ReRequests = s.Counters.ReRequestsSent
	st.Counters.Elections = s.Counters.Elections
	st.Counters.MsgsSent = s.Counters.MessagesOut
	st.Counters.MsgsRecv = s.Counters.MessagesIn
	st.Counters.MsgsDropped = s.Counters.DroppedTotal()
	st.Counters.MsgDrops = make(map[string]uint64)
	for r, n := range s.Counters.Dropped {
		if n > 0 {
			st.Counters.MsgDrops[rep.DropReason(r).String()] = n
		}
	}
	fillEnvStat(st, b.env)
}
