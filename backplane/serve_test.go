package backplane

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// serveUntil runs Serve on tr in a goroutine whose handler reports every
// message on the returned channel and stops after a message of type stop;
// Serve's result arrives on done.
func serveUntil(tr Transport, stop uint8) (<-chan collected, <-chan error) {
	ch := make(chan collected, 64)
	done := make(chan error, 1)
	go func() {
		msgs := make([]Message, 8)
		done <- Serve(tr, msgs, func(batch []Message) bool {
			for _, m := range batch {
				ch <- collected{m.From, m.To, m.Type, append([]byte(nil), m.Payload...)}
				if m.Type == stop {
					return false
				}
			}
			return true
		})
	}()
	return ch, done
}

// checkServeStopsAndResumes: Serve returns nil once its handler says stop,
// a second Serve goes on with what came after, and Close ends a waiting
// Serve with ErrClosed.
func checkServeStopsAndResumes(t *testing.T, tx, rx Transport) {
	t.Helper()
	ch, done := serveUntil(rx, 2)
	for typ := uint8(1); typ <= 3; typ++ {
		if err := tx.Send(AllSites, typ, []byte{typ}); err != nil {
			t.Fatal(err)
		}
	}
	if got := want(t, ch, 2, 5*time.Second); got[0].Type != 1 || got[1].Type != 2 {
		t.Fatalf("first Serve got %+v, want types 1 and 2", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve stopped by its handler returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its handler said stop")
	}
	// Type 3 may have come in the stopping batch (the handler saw it
	// then) or be waiting: either way nothing after it is lost.
	ch2, done2 := serveUntil(rx, 0)
	if err := tx.Send(AllSites, 4, nil); err != nil {
		t.Fatal(err)
	}
	got := until(t, ch2, 5*time.Second, func(m collected) bool { return m.Type == 4 })
	if len(got) > 2 || len(got) == 2 && got[0].Type != 3 {
		t.Fatalf("second Serve got %+v, want [3] 4", got)
	}
	if err := rx.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done2:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Serve after Close returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still waiting 5 s after Close")
	}
}

func TestMemServe(t *testing.T) {
	hub := NewMemHub(MemConfig{Seed: 1})
	trs := memSites(t, hub, 1, 2)
	checkServeStopsAndResumes(t, trs[0], trs[1])
}

func TestRigRawServe(t *testing.T) {
	c := newChassis(t, 2)
	tx := rawOn(t, c.Boards[0], nil)
	// Carrier first (a fresh rig drops frames until its links are up), on
	// another socket: rx starts with nothing queued.
	collectAll(t, []Transport{tx, rawOn(t, c.Boards[1], nil)})
	checkServeStopsAndResumes(t, tx, rawOn(t, c.Boards[1], nil))
}

// TestRigServePingPong bounces a frame between two boards, each receiving
// through Serve, for many rounds: no wake-up is lost by waiting without the
// read that would say EAGAIN (a lost one stalls a round), and most
// wake-ups find their frame at once (with Recv, every one of them makes a
// read that finds nothing), waiting in the netpoller and in poll(2).
func TestRigServePingPong(t *testing.T) {
	for _, thread := range []bool{false, true} {
		t.Run(map[bool]string{false: "netpoll", true: "thread"}[thread], func(t *testing.T) { servePingPong(t, thread) })
	}
}

func servePingPong(t *testing.T, thread bool) {
	c := newChassis(t, 2)
	mod := func(c *RawConfig) { c.WaitInThread = thread }
	a, b := rawOn(t, c.Boards[0], mod), rawOn(t, c.Boards[1], mod)
	chs := collectAll(t, []Transport{served{a}, served{b}})
	ra, rb := a.(*rawTransport), b.(*rawTransport)
	idle0 := ra.idleReads.Load() + rb.idleReads.Load()
	const rounds = 2000
	var buf [8]byte
	for i := 0; i < rounds; i++ {
		binary.LittleEndian.PutUint64(buf[:], uint64(i))
		if err := a.Send(2, 1, buf[:]); err != nil {
			t.Fatal(err)
		}
		ping := want(t, chs[1], 1, 5*time.Second)[0]
		if err := b.Send(1, 2, ping.Payload); err != nil {
			t.Fatal(err)
		}
		pong := want(t, chs[0], 1, 5*time.Second)[0]
		if pong.Type != 2 || binary.LittleEndian.Uint64(pong.Payload) != uint64(i) {
			t.Fatalf("round %d: got %+v", i, pong)
		}
	}
	idle := ra.idleReads.Load() + rb.idleReads.Load() - idle0
	t.Logf("%d round trips, %d wake-ups, %d reads that found nothing", rounds, 2*rounds, idle)
	if idle > rounds/2 {
		t.Fatalf("%d of %d wake-ups made a read that found nothing", idle, 2*rounds)
	}
}

// TestRigCloseWhileServeHandlerSends: Close while a Serve handler is
// running and about to send on the same transport (a board's handler sends
// acks). In the netpoller Close waits for the handler to leave the
// receive; it must not hold the send lock meanwhile, or the handler's Send
// and Close wait for each other for ever. Waiting in poll(2), Close does
// not wait for the handler, and Serve must not touch the closed
// descriptors after it.
func TestRigCloseWhileServeHandlerSends(t *testing.T) {
	for _, thread := range []bool{false, true} {
		t.Run(map[bool]string{false: "netpoll", true: "thread"}[thread], func(t *testing.T) { closeWhileHandlerSends(t, thread) })
	}
}

func closeWhileHandlerSends(t *testing.T, thread bool) {
	c := newChassis(t, 2)
	tx := rawOn(t, c.Boards[0], nil)
	collectAll(t, []Transport{tx, rawOn(t, c.Boards[1], nil)})
	rx := rawOn(t, c.Boards[1], func(c *RawConfig) { c.WaitInThread = thread })
	inHandler, release := make(chan struct{}), make(chan struct{})
	sendErr := make(chan error, 1)
	served := make(chan error, 1)
	go func() {
		msgs := make([]Message, 8)
		served <- Serve(rx, msgs, func([]Message) bool {
			close(inHandler)
			<-release
			sendErr <- rx.Send(1, 9, []byte("ack"))
			return true
		})
	}()
	if err := tx.Send(AllSites, 1, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inHandler:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never ran")
	}
	closed := make(chan error, 1)
	go func() { closed <- rx.Close() }()
	if thread {
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close waited for the handler")
		}
		close(release)
	} else {
		// Release the handler once Close is waiting for the receive to
		// end: the transport is marked closed and Close's goroutine is
		// blocked in the receiving file's Close. (The stack alone is not
		// enough: another goroutine may wait there before this Close has
		// even started, and the handler's Send would then succeed.)
		raw := rx.(*rawTransport)
		for !raw.closed.Load() || !goroutineWaitsIn("poll.(*FD).Close") {
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) while the handler was still running", err)
			default:
			}
			runtime.Gosched()
		}
		close(release)
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close and the handler's Send wait for each other")
		}
	}
	if err := <-sendErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("Send from the handler during Close returned %v, want ErrClosed", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Serve ended with %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5 s after Close")
	}
}

// goroutineWaitsIn reports whether some goroutine's stack has fn.
func goroutineWaitsIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}
