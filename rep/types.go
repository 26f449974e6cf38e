package rep

import (
	"errors"
	"fmt"
	"time"
)

// AllSites is the destination of a multicast message.
const AllSites uint16 = 0xFFFF

// NoMaster is Status.Master (and Event.Site) when no master is known. It can be
// the same value as AllSites because a multicast address is never a master.
const NoMaster uint16 = 0xFFFF

// MsgType is the type of a replication message. The names are Berkeley DB's.
type MsgType uint8

// Message types. The numeric values are on the wire (backplane frame header
// msgtype); never renumber.
const (
	MsgAlive      MsgType = 1  // answer to ALIVE_REQ: a site announces itself
	MsgAliveReq   MsgType = 2  // who is alive?
	MsgNewSite    MsgType = 3  // master relays a newly learned site to the group
	MsgNewClient  MsgType = 4  // a replica started and looks for the group
	MsgNewMaster  MsgType = 5  // a master announces itself (gen, end)
	MsgMasterReq  MsgType = 6  // who is master?
	MsgDupMaster  MsgType = 7  // you are a stale/duplicate master: step down
	MsgHeartbeat  MsgType = 8  // master liveness: gen, end, perm
	MsgLog        MsgType = 9  // log records (whole records, usually whole transactions)
	MsgLogMore    MsgType = 10 // log records; more follow: request again from their end
	MsgLogReq     MsgType = 11 // replica asks for a log range [from, to)
	MsgAllReq     MsgType = 12 // replica asks for everything from an LSN (catch-up)
	MsgAck        MsgType = 13 // replica applied every commit up to LSN (optionally a lease grant)
	MsgLeaseGrant MsgType = 14 // lease grant in answer to a heartbeat
	MsgVerifyReq  MsgType = 15 // replica's latest commit points, newest first
	MsgVerify     MsgType = 16 // newest of those points the master holds identically
	MsgVerifyFail MsgType = 17 // none matched (FlagInitRequired: the master's log no longer reaches back)
	MsgUpdateReq  MsgType = 18 // replica asks for internal init
	MsgUpdate     MsgType = 19 // checkpoint LSN, snapshot meta, page count
	MsgPageReq    MsgType = 20 // a window of snapshot pages by index
	MsgPage       MsgType = 21 // snapshot pages
	MsgPageFail   MsgType = 22 // the checkpoint moved: restart internal init
	MsgVote1      MsgType = 23 // election: a site's vote
	MsgVote2      MsgType = 24 // election: second-phase vote for the recipient
	MsgApp        MsgType = 25 // application message (forwarded write)
	MsgAppReply   MsgType = 26 // reply to an application message

	msgTypeMax = MsgAppReply
)

var msgNames = [...]string{
	MsgAlive: "ALIVE", MsgAliveReq: "ALIVE_REQ", MsgNewSite: "NEWSITE", MsgNewClient: "NEWCLIENT",
	MsgNewMaster: "NEWMASTER", MsgMasterReq: "MASTER_REQ", MsgDupMaster: "DUPMASTER",
	MsgHeartbeat: "HEARTBEAT", MsgLog: "LOG", MsgLogMore: "LOG_MORE", MsgLogReq: "LOG_REQ",
	MsgAllReq: "ALL_REQ", MsgAck: "ACK", MsgLeaseGrant: "LEASE_GRANT", MsgVerifyReq: "VERIFY_REQ",
	MsgVerify: "VERIFY", MsgVerifyFail: "VERIFY_FAIL", MsgUpdateReq: "UPDATE_REQ", MsgUpdate: "UPDATE",
	MsgPageReq: "PAGE_REQ", MsgPage: "PAGE", MsgPageFail: "PAGE_FAIL", MsgVote1: "VOTE1",
	MsgVote2: "VOTE2", MsgApp: "APP", MsgAppReply: "APP_REPLY",
}

func (t MsgType) String() string {
	if int(t) < len(msgNames) && msgNames[t] != "" {
		return msgNames[t]
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Message is one replication message as the transport carries it. Payload is
// the encoded header and body (see codec.go).
type Message struct {
	From, To uint16
	Type     MsgType
	Payload  []byte
}

// AckPolicy says which acknowledgements make a commit permanent.
type AckPolicy uint8

const (
	AckNone     AckPolicy = iota // permanent when committed locally
	AckOne                       // any one other site applied it
	AckOnePeer                   // one electable peer applied it
	AckQuorum                    // a majority of electable sites (master included) have it
	AckAllPeers                  // every electable peer applied it
	AckAll                       // every other site applied it
)

func (p AckPolicy) String() string {
	switch p {
	case AckNone:
		return "NONE"
	case AckOne:
		return "ONE"
	case AckOnePeer:
		return "ONE_PEER"
	case AckQuorum:
		return "QUORUM"
	case AckAllPeers:
		return "ALL_PEERS"
	case AckAll:
		return "ALL"
	}
	return fmt.Sprintf("AckPolicy(%d)", uint8(p))
}

// StartMode is how a node enters the group.
type StartMode uint8

const (
	StartClient StartMode = iota // find the master or elect one
	StartMaster                  // designated master (gen+1 at once)
)

// Role is a node's part in the group.
type Role uint8

const (
	RoleReplica Role = iota
	RoleMaster
	RoleElecting // a replica holding an election: log records are ignored
)

func (r Role) String() string {
	switch r {
	case RoleReplica:
		return "replica"
	case RoleMaster:
		return "master"
	case RoleElecting:
		return "electing"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Config configures a Node. Zero durations and sizes take the defaults listed
// in DefaultConfig.
type Config struct {
	Site     uint16
	Priority uint32 // 0: never master (still votes and acks)
	Peers    []uint16

	AckPolicy  AckPolicy
	AckTimeout time.Duration // a commit not permanent by then is reported PermFailed

	HeartbeatSend      time.Duration // master: heartbeat when nothing was sent for this long
	HeartbeatMonitor   time.Duration // replica: elect when the master was silent this long
	ElectionTimeout    time.Duration
	ElectionBackoffMax time.Duration

	Leases       bool
	LeaseTimeout time.Duration
	ClockSkew    float64 // >= 1: the fastest clock's rate over the slowest's; 0 means 1

	TwoSiteStrict bool
	NoAutoInit    bool // JOIN_FAILURE instead of internal init

	// Pace, when above zero, lets replicas whose acks the master does not
	// need read at this pace: the master names in its multicast messages
	// the replicas it waits for, as few as its ack policy needs (those that
	// acked first), and Node.Paced tells the others that their driver may
	// leave received messages unread for up to Pace and apply them as one
	// batch. On CPUs the boards share, the replicas whose acks wait for
	// nothing then take no CPU from the commit; on any board they apply in
	// larger batches. The master's setting decides: it names the sites it
	// waits for only if its Pace is set, and waits for another site when
	// acks from sites it does not wait for release its commits several
	// times in a row.
	Pace time.Duration

	// Promised restores the egen this site last voted in (Node.Promised)
	// across a process restart: the driver keeps it with the environment,
	// as BDB keeps its egen, so a restarted voter does not follow a master
	// elected before the election its vote helped decide.
	Promised uint32

	ReRequestMin, ReRequestMax time.Duration
	MaxMessageBytes            int // payload bound of one message
	InitWindowPages            int // pages requested at once during internal init
	Seed                       uint64
}

// DefaultConfig holds the values NewNode uses for zero fields.
var defaultConfig = Config{
	AckTimeout:         500 * time.Millisecond,
	HeartbeatSend:      100 * time.Millisecond,
	HeartbeatMonitor:   400 * time.Millisecond,
	ElectionTimeout:    300 * time.Millisecond,
	ElectionBackoffMax: 2 * time.Second,
	LeaseTimeout:       300 * time.Millisecond,
	ClockSkew:          1,
	ReRequestMin:       20 * time.Millisecond,
	ReRequestMax:       640 * time.Millisecond,
	MaxMessageBytes:    256 << 10,
	InitWindowPages:    64,
}

// DefaultConfig returns the defaults NewNode fills in for zero fields.
func DefaultConfig() Config { return defaultConfig }

// Limits that bound memory whatever peers send.
const (
	minMessageBytes  = 4 << 10
	maxMessageBytes  = 1 << 20 // the transport's message bound
	maxSites         = 64
	maxVerifyPoints  = 16
	maxInitPages     = 1 << 24 // 64 GiB of 4 KiB pages: more is a corrupt UPDATE
	bufferedMessages = 16      // out-of-order buffer holds this many MaxMessageBytes
	maxSegs          = 1024    // and at most this many runs
)

// Errors. Each says what happened and what to do.
var (
	ErrNotMaster    = errors.New("rep: this site is not the master; send writes to the master (Status.Master) or forward them")
	ErrLockout      = errors.New("rep: locked out while synchronizing with a new master; retry after STARTUP_DONE")
	ErrBadConfig    = errors.New("rep: invalid configuration; fix the named field")
	ErrMalformed    = errors.New("rep: malformed message; dropped and counted")
	ErrUnknownType  = errors.New("rep: unknown message type; dropped and counted")
	ErrLogGone      = errors.New("rep: log records no longer held; internal init required")
	ErrNoSnapshot   = errors.New("rep: no checkpoint snapshot to export; retry after the next checkpoint")
	ErrNotStarted   = errors.New("rep: node not started; call Start first")
	ErrBadSite      = errors.New("rep: message from an invalid site id; dropped")
	ErrJoinFailure  = errors.New("rep: internal init needed but NoAutoInit is set; reinitialize this site or allow auto init")
	ErrApplyStalled = errors.New("rep: the driver did not apply the records handed to it; they will be requested again")
)

// EventKind names an event delivered through Ready.Events.
type EventKind uint8

const (
	EventClient      EventKind = iota + 1 // became a replica
	EventElected                          // won an election
	EventMaster                           // became master
	EventNewMaster                        // a (new) master is known: Site
	EventPermFailed                       // commit LSN not known durable after AckTimeout
	EventStartupDone                      // replica caught up with the master
	EventDupMaster                        // this master stepped down: another master won
	EventJoinFailure                      // internal init needed but NoAutoInit
	EventNewSite                          // a site joined: Site
	EventRollback                         // local log rolled back to LSN (handles are dead)
	EventInitDone                         // internal init finished at LSN
)

func (k EventKind) String() string {
	switch k {
	case EventClient:
		return "CLIENT"
	case EventElected:
		return "ELECTED"
	case EventMaster:
		return "MASTER"
	case EventNewMaster:
		return "NEWMASTER"
	case EventPermFailed:
		return "PERM_FAILED"
	case EventStartupDone:
		return "STARTUP_DONE"
	case EventDupMaster:
		return "DUPMASTER"
	case EventJoinFailure:
		return "JOIN_FAILURE"
	case EventNewSite:
		return "NEWSITE"
	case EventRollback:
		return "ROLLBACK"
	case EventInitDone:
		return "INIT_DONE"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something the application may want to know.
type Event struct {
	Kind EventKind
	Site uint16 // NEWMASTER: the master; NEWSITE: the site
	Gen  uint32
	LSN  uint64 // PERM_FAILED: the commit; ROLLBACK: the new end; INIT_DONE: the checkpoint
}

func (e Event) String() string {
	return fmt.Sprintf("%s(site=%d gen=%d lsn=%d)", e.Kind, e.Site, e.Gen, e.LSN)
}

// InitPage is one snapshot page received during internal init.
type InitPage struct {
	Pgno uint64
	Data []byte // empty: keep the page the import stored here (Resume)
}

// InitAction tells the driver what to do for internal init, in this order:
// Begin (discard any import in progress, start one from Meta), Pages, Finish
// (complete the import; the environment's log then begins at the checkpoint).
type InitAction struct {
	Begin bool
	// Resume (with Begin): the snapshot is a later one of the master the
	// import in progress came from; keep the pages stored so far (the
	// master marks the ones the new snapshot shares: InitPage.Data
	// empty) instead of starting over.
	Resume    bool
	Meta      []byte
	CkptLSN   uint64
	PageCount int
	Pages     []InitPage
	Finish    bool
	// Progress for stats.
	PagesDone, PagesTotal int
}

// Ready is the work the driver must perform, then confirm with Advance.
// Slices alias the node's buffers and stay valid until Advance.
type Ready struct {
	Messages []Message // send each (To AllSites: multicast)

	// The driver performs these in order: Init, RollbackTo, Apply, NewGen.
	Init        *InitAction
	RollbackTo  uint64 // roll the local log back so it ends here
	HasRollback bool
	Apply       []byte // whole encoded transactions starting exactly at the local log end
	NewGen      uint32 // new master: set the env gen and append a RecNewGen commit

	PermLSN      uint64   // master: every commit <= PermLSN is permanent
	PermFailed   []uint64 // master: commits that did not become permanent within AckTimeout
	CheckpointOK uint64   // the log up to this LSN is durable by the ack policy: checkpoint only up to here
	// HoldCheckpoint (master): a replica is copying the current checkpoint
	// (internal init); a new one would restart its copy from scratch
	// (PAGE_FAIL), so the driver should keep the current one while its log
	// and pool have room.
	HoldCheckpoint bool
	// ListPages (master): a replica asked for this snapshot (UPDATE_REQ)
	// and its page list is not known yet. The driver lists it
	// (Snapshot.PageList, a walk of every tree: tens of milliseconds for a
	// few hundred MB, too long to hold the node that long, since its
	// heartbeats wait) off the node's lock, and reports the list with
	// Node.PagesListed; the UPDATE answers wait for it.
	ListPages Snapshot
	Events    []Event
	App       []Message // received APP/APP_REPLY messages for the runtime

	// progressed: PermLSN or CheckpointOK moved since the last Ready, which
	// the driver must see even when nothing else happened.
	progressed bool
}

// Empty reports whether rd holds nothing to do.
func (rd *Ready) Empty() bool {
	return !rd.progressed && len(rd.Messages) == 0 && rd.Init == nil && rd.ListPages == nil && !rd.HasRollback && len(rd.Apply) == 0 &&
		rd.NewGen == 0 && len(rd.PermFailed) == 0 && len(rd.Events) == 0 && len(rd.App) == 0
}

// DropReason classifies a dropped message for the counters.
type DropReason uint8

const (
	DropMalformed   DropReason = iota // decode failed
	DropUnknownType                   // type not known
	DropBadSite                       // from self, from AllSites, or too many sites
	DropStaleGen                      // from an older generation
	DropElecting                      // log records during an election
	DropSyncing                       // log records while verifying or initializing
	DropDuplicate                     // records already applied
	DropBufferFull                    // out-of-order buffer full
	DropMisaligned                    // records that do not line up with the local log
	DropNotMaster                     // a request only a master serves
	DropUnexpected                    // not meaningful in the current state
	DropRecovering                    // an empty site has not yet heard enough sites to act
	dropReasons
)

func (r DropReason) String() string {
	switch r {
	case DropMalformed:
		return "malformed"
	case DropUnknownType:
		return "unknown-type"
	case DropBadSite:
		return "bad-site"
	case DropStaleGen:
		return "stale-gen"
	case DropElecting:
		return "electing"
	case DropSyncing:
		return "syncing"
	case DropDuplicate:
		return "duplicate"
	case DropBufferFull:
		return "buffer-full"
	case DropMisaligned:
		return "misaligned"
	case DropNotMaster:
		return "not-master"
	case DropUnexpected:
		return "unexpected"
	case DropRecovering:
		return "recovering"
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Counters are cumulative since NewNode.
type Counters struct {
	ReRequestsSent   uint64 // LOG_REQ/ALL_REQ sent
	ReRequestsServed uint64 // LOG_REQ/ALL_REQ answered
	Elections        uint64 // elections started
	ElectionsWon     uint64
	Rollbacks        uint64
	Inits            uint64 // internal inits started
	InitRestarts     uint64 // copies started over: PAGE_FAIL during one (the checkpoint moved), or a failed finish
	InitFailures     uint64 // copies the driver could not store (InitFailed): begun again after a back-off
	InitPagesReasked uint64 // init pages asked for again: their PAGE message was lost
	InitResumes      uint64 // inits that resumed a copy the master's moving checkpoint cut short
	InitPagesKept    uint64 // pages a resumed init kept from the copy before instead of receiving them
	DupMasters       uint64 // times this site stepped down as a duplicate master
	PermFailed       uint64
	ApplyStalls      uint64 // Ready.Apply the driver did not apply
	PaceSwaps        uint64 // master: a paced site's acks kept releasing commits, and it joined those waited for
	MasterSilences   uint64 // replica: its master came back after a silence of more than half of HeartbeatMonitor
	MessagesIn       uint64
	MessagesOut      uint64
	Dropped          [dropReasons]uint64
}

// DroppedTotal sums the drop counters.
func (c *Counters) DroppedTotal() uint64 {
	var t uint64
	for _, v := range c.Dropped {
		t += v
	}
	return t
}

// SiteStatus is what this node knows about another site.
type SiteStatus struct {
	Site      uint16
	Priority  uint32
	Learned   bool   // from an announcement, not Config.Peers
	CaughtUp  bool   // counts toward ack quorums
	Waited    bool   // master: among the sites whose acks it waits for (Config.Pace)
	AckedLSN  uint64 // master: highest commit the site applied
	LagBytes  uint64 // master: bytes between AckedLSN and the last commit
	LastHeard time.Duration
	LeaseTo   time.Duration // master: the site's grant is valid until (master clock)
}

// Status is a snapshot of the node's state.
type Status struct {
	Site            uint16
	Role            Role
	Master          uint16 // NoMaster when unknown
	Gen             uint32
	Egen            uint32
	ElectionRunning bool
	StartupDone     bool
	Lockout         bool
	JoinFailed      bool
	EndLSN          uint64 // local log end
	AppliedLSN      uint64 // last commit applied locally
	PermLSN         uint64
	MasterEndLSN    uint64 // replica: master's end as last heard
	Paced           bool   // replica: Node.Paced
	LeaseValid      bool
	LeaseExpires    time.Duration
	InitPagesDone   int
	InitPagesTotal  int
	// Recovering: started empty, this site waits to hear enough witnesses
	// before it follows, acks or votes: it has heard Witnesses of the
	// WitnessesNeeded other electable sites that remember (see recoveryNeed).
	Recovering                 bool
	Witnesses, WitnessesNeeded int
	// VoteFloorGen and VoteFloorEnd: this site lost its memory and votes
	// for no site less current than this point until its own log reaches it
	// (both 0: no floor).
	VoteFloorGen uint32
	VoteFloorEnd uint64
	Sites        []SiteStatus
	Counters     Counters
}

// Duration is time.Duration (short name for signatures).
type Duration = time.Duration
