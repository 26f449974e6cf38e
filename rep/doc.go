// Package rep is Berkeley DB HA's replication protocol for a single-master
// group, as a pure state machine in the style of etcd's raft package: no I/O,
// no clock reads, no goroutines.
//
// # Driving a node
//
// Inputs are received messages (Step), time (Tick, every input carries the
// driver's monotonic now; tick at least every HeartbeatSend, since a longer
// pause between inputs is taken as time the node could not listen) and local
// commits on the master (Committed). The output is a Ready: messages to
// send (To AllSites = multicast), and in this order an internal-init action,
// a rollback, whole encoded transactions to apply at the local log end, and
// a new generation to record; plus the
// permanent LSN, commits that failed to become permanent, the LSN up to which
// checkpoints are allowed, events, and application messages. The driver
// performs it and calls Advance, after which the node re-reads its Storage to
// learn what was really done: an apply or rollback that failed is noticed,
// never assumed. EnvStorage is the driver work for an inmem environment.
//
// # Roles
//
// Each role is a step function (stepMaster, stepReplica, stepElecting).
//
// Master: multicasts log records as they are written; all commits since the
// previous Ready travel in one LOG (group commit), split only at
// MaxMessageBytes and at transaction boundaries. Idle, it sends HEARTBEAT
// (gen, end, permanent LSN) every HeartbeatSend. It serves LOG_REQ/ALL_REQ
// from its log (at most 256 KiB per request, so that serving a catch-up does
// not silence it for a heartbeat-monitor period, in messages of the size the
// request asks for, the whole 256 KiB by default, at most 64 of them;
// LOG_MORE ends an answer the budget cut short), VERIFY_REQ, UPDATE_REQ and
// PAGE_REQ. It tracks every
// site's acknowledged commit and computes the permanent LSN by the ack
// policy (PolicyLSN); a commit not permanent within AckTimeout is reported
// PermFailed: committed locally, not known durable.
//
// With Config.Pace, the master names in each multicast LOG and HEARTBEAT
// the replicas it waits for: as many as its policy needs of those it counts,
// filled with the ones that acked furthest. The others see Paced and may
// read at their own pace; when their acks release the commits three times
// in a row (paceSwapAfter), a waited replica is slow or gone and the acker
// takes its place.
//
// Replica: keeps a stream of records starting at its log end and hands whole
// transactions to the driver in LSN order, each apply ending at the first
// checkpoint record if there is one (so that the driver can promote it
// before the pages the next commits replace fill the pool or the log stays
// pinned behind it). Records ahead of a gap are buffered
// (bounded; records that follow on from a buffered run join it, so the live
// stream behind a hole takes one run however many messages bring it) and
// the gap [end, next) is re-requested with LOG_REQ, at once and
// then with exponential back-off from ReRequestMin to ReRequestMax while no
// answer arrives; a heartbeat end beyond the local end is a gap too. The
// replica keeps its requests in order: since the master answers in order
// and the backplane delivers in order, an answer to one request shows that
// what the requests before it did not bring was lost, and it is asked for
// again at once, in messages half as large (a message is lost if any of its
// frames is; two retry intervals in a row without an answer halve them
// too); whole answers grow the messages back by an eighth. Each
// answer's end asks for what remains, so a catch-up needs no timer, but
// not for the records past the newest live message buffered behind a hole:
// those are on their way; and while the buffer has no room for another
// message, for nothing past the first hole (an answer dropped for a full
// buffer settles nothing). It acks
// a commit only after Advance shows the driver applied it (the seeds'
// ISPERM/NOTPERM: an ack covers every earlier commit).
//
// Electing: a replica that heard nothing from its master for
// HeartbeatMonitor (not counting time it could not run itself: a pause
// between inputs beyond HeartbeatSend, or a quarter of the monitor if that
// is more), or found none at start, holds an election (package elect); log
// records are ignored meanwhile. A VOTE1 it received while it still heard
// its master counts only until it hears the master again. A master told to
// elect re-announces itself (phase 0). The winner takes as gen the egen it
// won, announces NEWMASTER and has the driver log a RecNewGen commit. A site
// starts and joins only elections whose egen is above its gen and its
// promise (votes of older egens are dropped), so the egen won is above the
// winner's gen, and since an egen has at most one winner, two elected
// masters never share a gen.
//
// # Synchronizing with a new master
//
// A replica that adopts a master is locked out (CanWrite and Status.Lockout
// give ErrLockout) while it verifies its log: VERIFY_REQ carries up to 16 of
// its commit points (LSN, gen, chain), newest first, 1, 2, 4, ... commits
// apart; the master answers with the newest it holds identically, and the
// replica narrows the search between the best match and the oldest known
// difference until no local commit lies between them, so it finds exactly the
// last common commit. Equal (LSN, gen) with a different chain is a
// difference: two masters may share a gen in a non-strict two-site group. It
// then rolls back to that commit (or needs internal init if that is below its
// checkpoint), catches up with ALL_REQ, and reports STARTUP_DONE once its end
// reaches the master's end as of the adoption. A replica whose log holds no
// commit (its state came from an internal init, or a checkpoint reclaimed
// the log) but ends past the master's end verifies its newest commit all
// the same.
//
// Internal init, when the log needed is gone, nothing is common, or a rollback
// would go below the checkpoint, or applies keep failing at the same LSN
// (maxApplyStalls in a row: a full log that under ALL/ALL_PEERS only this
// replica's own progress could free, since its checkpoints are promoted once
// durable): UPDATE_REQ; the master answers UPDATE from
// its pinned checkpoint snapshot (LSN, meta, page count) once its driver
// listed the snapshot's pages off the node (Ready.ListPages, PagesListed: a
// walk of every tree, too long to hold a master's heartbeats); the replica keeps
// two windows of InitWindowPages pages asked for (the master sends one while
// the replica applies the other), in PAGE_REQs of up to a window, answered
// with as many PAGE messages as a request needs. Its requests are kept in
// order, so an answer to a later one shows what an earlier one did not bring
// was lost: that is asked for again at once, in requests half as large (a
// lossy backplane loses large messages), and whole messages grow them back
// by an eighth; a retry after a back-off that progress resets takes
// everything outstanding as lost (answers to what it gave up on that still
// arrive settle nothing). It restarts if the master's checkpoint moved
// (PAGE_FAIL: the master keeps the checkpoint a replica is copying,
// Ready.HoldCheckpoint, but not past the room its log and pool have), then
// catches up from the checkpoint; while it copies, it asks for no log (a
// late "log gone" answer to the catch-up that led to the init would start
// a second one). A driver that cannot store the copy (no
// memory for the import, a page it cannot put) says so with InitFailed: the
// copy ends there, and a fresh one begins after a back-off from
// ReRequestMax that doubles while failures repeat (to 16 ReRequestMax).
// With NoAutoInit it reports JOIN_FAILURE instead and stays locked out.
//
// # Guarantees and the settings they need
//
//   - Durability of permanent commits: with AckQuorum (or AckAllPeers, AckAll)
//     and majority elections (TwoSiteStrict in a two-site group), a commit
//     reported permanent is never rolled back, whatever sites crash, restart or
//     get partitioned — as long as no majority of electable sites loses its
//     memory at once (total group failure). A site that starts with an empty
//     environment (it may have lost its memory, and with it what it acked and
//     voted) first asks ALIVE_REQ until ALIVEs from half of the electable
//     sites, rounded up (the other one in a strict two-site group), that are
//     not blank (no gen, no log, no election held: just started, or emptied and
//     still recovering), or from a majority of blank electable sites (a group
//     that lost its memory as a whole), have come in; it then follows no master
//     below the highest gen or promise heard (a site that voted for the newest
//     master may not have heard from it yet) and votes in no election at or
//     below the highest egen heard (it may have voted there before), and only
//     then follows a master, acks or votes. (The egen heard only bounds what
//     was promised; refusing masters below it made a recovered site depose the
//     one master holding the writes it had acked before losing them.) Otherwise
//     its acks could make a stale master's writes permanent while a newer
//     master, elected with its lost vote, exists. Each ALIVE also carries a
//     point at or above every permanent write the sender holds (a replica's log
//     end, a master's newest permanent commit); until its own log reaches the
//     most current point heard, the recovered site votes for no site less
//     current (elect's floor), as if it still had the log it lost, or its vote
//     could elect a site missing writes made permanent with its lost ack. An
//     election in which every electable site voted ignores the floor. An ack
//     quorum and an election quorum always share a site, and the vote order
//     (last gen, then LSN) elects a site holding every permanent commit. Voters
//     promise: after casting a VOTE2 in egen E a site follows no master of a
//     gen below E (a master elected earlier is told with DUPMASTER, steps down
//     and re-elects); an elected master's gen is the egen it won. Without this
//     an older master could complete commits with acks from sites whose votes
//     had already elected its successor. The promise is kept across restarts by
//     the driver (Node.Promised, Config.Promised). With AckNone, AckOne,
//     AckOnePeer a permanent commit can be lost if the sites that had it fail
//     before the others catch up; replicas still only ever hold a prefix of
//     some master's history.
//   - Prefix: every replica's applied log is a prefix of its master's at the
//     same gen: records are applied only in LSN order, whole transactions,
//     from the master followed, after verifying the common prefix.
//   - Leases (Leases on; ClockSkew bounds the clocks' rate difference): a
//     replica grants a lease in every ack and in answer to heartbeats, echoing
//     the master's send time of the newest message it saw; the master counts a
//     grant valid until echo + LeaseTimeout/ClockSkew on its own clock, and
//     LeaseValid holds while grants from enough electable sites that, with
//     itself, they form a majority are unexpired. A replica grants to one
//     master at a time (a grant to another must expire first), waits its
//     grant out before voting (phase 2), and a (re)started site waits a whole
//     LeaseTimeout before granting or voting. A new master's lease is not
//     valid until its own former grant expired. So no two masters hold valid
//     leases at once, and leased reads on the master are authoritative.
//   - Duplicate masters: a master seeing another master's message compares
//     (gen, end LSN, site); the lower steps down (DUPMASTER event), re-syncs
//     and rolls back what the winner lacks. Any message with a newer gen also
//     makes a master step down.
//   - Membership: configured Peers plus sites learned from their messages
//     (NEWSITE). A learned site counts toward ack quorums only after it has
//     acked the master's last commit at the time it joined; elections count
//     every known electable site (a larger election quorum is only safer).
//   - Bad input: DecodeMessage validates every length and the framing of log
//     records and pages; malformed messages are dropped and counted by
//     reason (Counters.Dropped), never a panic (fuzzed: FuzzDecodeMessage,
//     FuzzStep).
package rep
