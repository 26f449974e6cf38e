package board

import (
	"fmt"
	"time"
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
	PermLSN       uint64        `json:"perm_lsn"`
	CheckpointLSN uint64        `json:"checkpoint_lsn"`
	LockedOut     bool          `json:"locked_out"`
	Uptime        time.Duration `json:"uptime_ns"`

	Sites    []SiteStat   `json:"sites"`
	Lease    LeaseStat    `json:"lease"`
	Election ElectionStat `json:"election"`
	Init     InitStat     `json:"init"`
	Pool     PoolStat     `json:"pool"`
	Log      LogStat      `json:"log"`
	Counters Counters     `json:"counters"`
}

// SiteStat is what this board knows about one other site.
type SiteStat struct {
	Site     uint16 `json:"site"`
	AckedLSN uint64 `json:"acked_lsn"` // as seen by the master; replicas report 0
	LagBytes uint64 `json:"lag_bytes"` // master's LSN minus AckedLSN
	// LastHeard is how long ago a message from the site arrived; -1 if never.
	LastHeard time.Duration `json:"last_heard_ns"`
	Electable bool          `json:"electable"`
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
}

// InitStat describes internal initialisation (copying pages from the master).
type InitStat struct {
	Active     bool    `json:"active"`
	PagesDone  uint64  `json:"pages_done"`
	PagesTotal uint64  `json:"pages_total"`
	Percent    float64 `json:"percent"`
	// PagesPerSec is the rate of the current (or last) init.
	PagesPerSec  float64       `json:"pages_per_sec"`
	Count        uint64        `json:"count"` // inits completed
	LastDuration time.Duration `json:"last_duration_ns"`
}

// PoolStat describes the page pool.
type PoolStat struct {
	PageSize   int    `json:"page_size"`
	TotalPages uint64 `json:"total_pages"`
	UsedPages  uint64 `json:"used_pages"`
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
	Commits       uint64 `json:"commits"`        // local Update transactions committed
	Batches       uint64 `json:"batches"`        // group-commit batches (Commits/Batches = batching factor)
	AppForwarded  uint64 `json:"app_forwarded"`  // Apply calls forwarded to the master
	AppServed     uint64 `json:"app_served"`     // forwarded Applies this master executed
	PermFailed    uint64 `json:"perm_failed"`
}
