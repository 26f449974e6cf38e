package board

import (
	"fmt"
	"sync/atomic"
	"time"
)

// EventType names what happened; the set follows BDB's replication events.
type EventType uint8

const (
	EventClient      EventType = iota + 1 // this board is a replica now
	EventMaster                           // this board is master now
	EventElected                          // this board won an election (EventMaster follows)
	EventNewMaster                        // a (possibly different) master is known: Event.Master
	EventPermFailed                       // a commit missed its ack policy before AckTimeout: Event.LSN
	EventStartupDone                      // caught up with the master; lockout over
	EventDupMaster                        // another master in the same gen; this board stepped down
	EventJoinFailure                      // needs internal init but NoAutoInit is set
	EventInitStarted                      // internal init began (memory will be replaced)
	EventInitDone                         // internal init finished
	EventRollback                         // local transactions past Event.LSN were rolled back
	EventSiteAdded                        // a new site announced itself: Event.Site
	EventOther                            // a replication event without a board-level name (Detail)
)

var eventNames = [...]string{
	EventClient: "client", EventMaster: "master", EventElected: "elected",
	EventNewMaster: "newmaster", EventPermFailed: "permfailed", EventStartupDone: "startupdone",
	EventDupMaster: "dupmaster", EventJoinFailure: "joinfailure",
	EventInitStarted: "initstarted", EventInitDone: "initdone", EventRollback: "rollback",
	EventSiteAdded: "siteadded", EventOther: "other",
}

func (t EventType) String() string {
	if int(t) < len(eventNames) && eventNames[t] != "" {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// MarshalText lets JSON carry the name.
func (t EventType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses a name written by MarshalText.
func (t *EventType) UnmarshalText(b []byte) error {
	for i, n := range eventNames {
		if n != "" && n == string(b) {
			*t = EventType(i)
			return nil
		}
	}
	return fmt.Errorf("board: unknown event type %q", b)
}

// Event is one replication event. Events are delivered in the order the
// board's runtime saw them.
type Event struct {
	Type   EventType `json:"type"`
	Time   time.Time `json:"time"`
	Seq    uint64    `json:"seq"`              // 1, 2, ...; a gap means events were dropped
	Site   uint16    `json:"site,omitempty"`   // the site concerned (master, added or lost site)
	Master uint16    `json:"master,omitempty"` // the master known when it happened
	Gen    uint32    `json:"gen,omitempty"`
	LSN    uint64    `json:"lsn,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

func (e Event) String() string {
	s := fmt.Sprintf("#%d %s", e.Seq, e.Type)
	if e.Site != 0 {
		s += fmt.Sprintf(" site=%d", e.Site)
	}
	if e.Master != 0 {
		s += fmt.Sprintf(" master=%d", e.Master)
	}
	if e.Gen != 0 {
		s += fmt.Sprintf(" gen=%d", e.Gen)
	}
	if e.LSN != 0 {
		s += fmt.Sprintf(" lsn=%d", e.LSN)
	}
	if e.Detail != "" {
		s += " " + e.Detail
	}
	return s
}

// eventQueue is the bounded hand-off between the runtime loop and the Events
// channel: push never blocks (the oldest event is dropped and counted).
type eventQueue struct {
	ch      chan Event
	seq     uint64
	dropped atomic.Uint64
}

func newEventQueue(n int) *eventQueue { return &eventQueue{ch: make(chan Event, n)} }

// push is called only by the runtime loop (single producer).
func (q *eventQueue) push(e Event) Event {
	q.seq++
	e.Seq = q.seq
	for {
		select {
		case q.ch <- e:
			return e
		default:
		}
		select {
		case <-q.ch:
			q.dropped.Add(1)
		default:
		}
	}
}
