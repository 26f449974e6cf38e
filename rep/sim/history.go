package sim

import (
	"fmt"
	"time"
)

// CommitID names a commit. Because a commit record's chain hashes every
// record before it, two sites holding the same CommitID hold the same log up
// to that point, whatever gen or master produced it.
type CommitID struct {
	LSN   uint64
	Chain uint64
}

func (c CommitID) String() string { return fmt.Sprintf("%d/%016x", c.LSN, c.Chain) }

// commitNode is one commit some master made. Parents link each commit to the
// commit before it on that master, so the set of all commits forms a tree
// whose root is the empty environment; a site's state is a node of it.
type commitNode struct {
	id        CommitID
	parent    CommitID
	hasParent bool
	gen       uint32
	site      uint16 // the master that made it
	hash      uint64 // ContentHash on the master right after it
	hashKnown bool
}

// commitTree is every commit any master made during a run.
type commitTree struct {
	nodes map[CommitID]*commitNode
}

func newCommitTree() *commitTree { return &commitTree{nodes: make(map[CommitID]*commitNode)} }

// addRoot records an empty environment's state.
func (t *commitTree) addRoot(id CommitID, hash uint64) {
	if _, ok := t.nodes[id]; !ok {
		t.nodes[id] = &commitNode{id: id, hash: hash, hashKnown: true}
	}
}

// add records a master's commit made on top of parent. It returns an error
// when the same CommitID was seen with a different parent (a chain collision
// or a chain that does not cover the history).
func (t *commitTree) add(id, parent CommitID, gen uint32, site uint16, hash uint64, hashKnown bool) error {
	if n, ok := t.nodes[id]; ok {
		if n.hasParent && n.parent != parent {
			return fmt.Errorf("commit %v made by site %d on top of %v, but site %d made it on top of %v",
				id, site, parent, n.site, n.parent)
		}
		return nil
	}
	t.nodes[id] = &commitNode{id: id, parent: parent, hasParent: true, gen: gen, site: site, hash: hash, hashKnown: hashKnown}
	return nil
}

func (t *commitTree) known(id CommitID) bool { _, ok := t.nodes[id]; return ok }

// ancestor reports whether a is b or an ancestor of b.
func (t *commitTree) ancestor(a, b CommitID) bool {
	for {
		if a == b {
			return true
		}
		n, ok := t.nodes[b]
		if !ok || !n.hasParent || b.LSN < a.LSN {
			return false
		}
		b = n.parent
	}
}

// OpKind is a client operation's kind.
type OpKind uint8

const (
	OpPut OpKind = iota + 1
	OpDelete
	OpGet // a leased read on the master
)

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpDelete:
		return "del"
	case OpGet:
		return "get"
	}
	return "?"
}

// Outcome is what the client learnt about a write.
type Outcome uint8

const (
	Pending  Outcome = iota // no answer yet
	Perm                    // the ack policy held: reported durable
	NotPerm                 // PERM_FAILED: committed on the master, durability unknown
	Orphaned                // the master crashed or lost mastership before answering
	Done                    // a read that returned
)

func (o Outcome) String() string {
	return [...]string{"pending", "perm", "not-perm", "orphaned", "done"}[o]
}

// Op is one client operation as the history records it.
type Op struct {
	ID     int
	Kind   OpKind
	Key    string
	Value  string // put: the value written; get: the value read
	Found  bool   // get: the key was present
	Site   uint16
	Gen    uint32
	Commit CommitID // writes: the commit on the master
	// Call and Return order operations for the linearizability checker; a
	// write without a definite answer has Return == never.
	Call, Return     int64
	CallAt, ReturnAt time.Duration
	Outcome          Outcome
	// Amnesia: the write's durability rests on a site that lost its memory:
	// a site holding it crashed afterwards, or a site that acked it had
	// restarted empty after a newer gen than the write's existed (so it
	// no longer knew that the write's master was stale). A loss of such a
	// write is the in-memory weakness (an empty restarted site votes and
	// acks as if it never knew anything), reported apart from losses no
	// memory loss explains.
	Amnesia bool
}

const never = int64(1) << 62

// AmnesiaTag marks violations explained by a site that held the write
// losing its memory (see Op.Amnesia).
const AmnesiaTag = "[amnesia: a site holding or acking it had lost its memory]"

// Rollback says that a site's state stopped containing a Perm write.
type Rollback struct {
	Site uint16
	Op   int // index into History.Ops
	At   time.Duration
	How  string
}

// PoolFullTag marks a convergence failure of a site whose last environment
// error was a full page pool (a replica stalls: applies keep failing while
// the checkpoint that would free pages cannot advance).
const PoolFullTag = "[pool-full stall]"

// LogFullTag marks a convergence failure of a site whose last environment
// error was a full log (a replica stalls: it cannot append until a
// checkpoint is promoted, which waits for durability that waits for it).
const LogFullTag = "[log-full stall]"

// FinalSite is one site's state after healing and quiescing.
type FinalSite struct {
	Site    uint16
	LastErr string // the last environment error the site's driver saw
	Alive   bool
	Master  bool
	Last    CommitID
	Hash    uint64
	Data    map[string]string
}

// History is everything a run recorded for the checkers. Checkers take a
// History (rather than the live simulation) so that tests can plant
// violations in one and see them reported.
type History struct {
	Sites      int
	Guarantee  bool // Perm writes are promised durable (QUORUM+ with majority elections)
	Leases     bool
	Ops        []Op
	Rollbacks  []Rollback
	Violations []string // invariants that failed during the run
	Final      []FinalSite
	Converged  bool
	tree       *commitTree
}
