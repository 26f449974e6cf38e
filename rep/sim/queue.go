package sim

import "time"

// evKind says what a queued event does when it fires.
type evKind uint8

const (
	evDeliver     evKind = iota + 1 // a message arrives at its destination
	evTick                          // a site's periodic tick
	evClient                        // the workload issues its next operation
	evChaos                         // the fault schedule considers its next action
	evRestart                       // a crashed site boots again, empty
	evHeal                          // a partition ends
	evLossEnd                       // a loss burst ends
	evPhase                         // the run moves to its next phase (stop faults, quiesce, check)
	evScript                        // a scripted fault
	evThaw                          // a frozen site's runtime runs again
	evKeepAlive                     // a frozen master's process speaks for it
	evPaceWake                      // a paced site's rest ends: it reads what arrived
	evPagesListed                   // a master's driver finished listing a snapshot's pages
)

func (k evKind) String() string {
	switch k {
	case evDeliver:
		return "deliver"
	case evTick:
		return "tick"
	case evClient:
		return "client"
	case evChaos:
		return "chaos"
	case evRestart:
		return "restart"
	case evHeal:
		return "heal"
	case evLossEnd:
		return "loss-end"
	case evPhase:
		return "phase"
	case evScript:
		return "script"
	case evThaw:
		return "thaw"
	case evKeepAlive:
		return "keepalive"
	case evPaceWake:
		return "pace-wake"
	case evPagesListed:
		return "pages-listed"
	}
	return "?"
}

// event is one entry of the simulation's agenda. Events at the same virtual
// time fire in the order they were scheduled (seq), which is what makes a run
// a pure function of its seed.
type event struct {
	at   time.Duration
	seq  uint64
	kind evKind
	site uint16 // destination / subject site
	boot uint32 // the subject site's boot epoch when scheduled (stale ticks are ignored)
	msg  *simMsg
	arg  int // evScript: index into Config.Script
	// evPagesListed: the list, of the snapshot at lsn.
	pages []uint64
	lsn   uint64
}

// queue is a binary min-heap of events ordered by (at, seq). Hand-written
// rather than container/heap to keep events unboxed.
type queue struct {
	h   []event
	seq uint64
}

func (q *queue) Len() int { return len(q.h) }

func (q *queue) less(i, j int) bool {
	a, b := &q.h[i], &q.h[j]
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

func (q *queue) push(e event) {
	q.seq++
	e.seq = q.seq
	q.h = append(q.h, e)
	i := len(q.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
}

func (q *queue) pop() event {
	top := q.h[0]
	last := len(q.h) - 1
	q.h[0] = q.h[last]
	q.h[last] = event{}
	q.h = q.h[:last]
	i := 0
	for {
		l, r := 2*i+1, 2*i+2
		m := i
		if l < len(q.h) && q.less(l, m) {
			m = l
		}
		if r < len(q.h) && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
	return top
}

func (q *queue) peekTime() time.Duration { return q.h[0].at }
