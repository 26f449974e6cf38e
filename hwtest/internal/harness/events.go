package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is a board event as the socket streams it (board.Event's JSON).
type Event struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	Seq    uint64    `json:"seq"`
	Site   uint16    `json:"site,omitempty"`
	Master uint16    `json:"master,omitempty"`
	Gen    uint32    `json:"gen,omitempty"`
	LSN    uint64    `json:"lsn,omitempty"`
	Detail string    `json:"detail,omitempty"`

	// Board is the site whose stream delivered the event (filled in here).
	Board uint16 `json:"-"`
}

// EventLog collects the event streams of several boards.
type EventLog struct {
	mu     sync.Mutex
	events []Event
	errs   []error
	wg     sync.WaitGroup
}

// Follow subscribes to the events of the board at sock (site board) until
// ctx ends or the board goes away. It returns once the subscription is
// acknowledged, so no event after the return is missed.
func (l *EventLog) Follow(ctx context.Context, board uint16, sock string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("%w: events of site %d: %v", ErrUnreachable, board, err)
	}
	if _, err := conn.Write([]byte(`{"op":"events"}` + "\n")); err != nil {
		conn.Close()
		return fmt.Errorf("%w: events of site %d: %v", ErrUnreachable, board, err)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack, err := readResponse(r)
	if err != nil || ack.Code != CodeOK {
		conn.Close()
		return fmt.Errorf("%w: events subscription of site %d not acknowledged: %v %s", ErrProtocol, board, err, ack.Err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		defer l.wg.Done()
		for {
			resp, err := readResponse(r)
			if errors.Is(err, ErrProtocol) {
				// One undecodable line; the stream is still in step.
				l.mu.Lock()
				l.errs = append(l.errs, fmt.Errorf("events of site %d: %w", board, err))
				l.mu.Unlock()
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Errorf("events of site %d ended: %w", board, err))
					l.mu.Unlock()
				}
				return
			}
			if len(resp.Event) == 0 {
				continue
			}
			var ev Event
			if err := json.Unmarshal(resp.Event, &ev); err != nil {
				l.mu.Lock()
				l.errs = append(l.errs, fmt.Errorf("%w: event of site %d: %v", ErrProtocol, board, err))
				l.mu.Unlock()
				continue
			}
			ev.Board = board
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
		}
	}()
	return nil
}

// Wait waits for every stream's goroutines (after their contexts ended).
func (l *EventLog) Wait() { l.wg.Wait() }

// Events returns the events seen so far, per board in stream order.
func (l *EventLog) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// Errors returns stream failures other than the ones Follow's context ended.
func (l *EventLog) Errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// First returns the earliest event (by its board-side time) from board of
// one of the types, at or after since.
func (l *EventLog) First(board uint16, since time.Time, types ...string) (Event, bool) {
	var best Event
	found := false
	for _, ev := range l.Events() {
		if ev.Board != board || ev.Time.Before(since) {
			continue
		}
		for _, t := range types {
			if ev.Type == t && (!found || ev.Time.Before(best.Time)) {
				best, found = ev, true
			}
		}
	}
	return best, found
}
