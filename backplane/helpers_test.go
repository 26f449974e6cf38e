package backplane

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"
)

// collected is a copied message.
type collected struct {
	From, To uint16
	Type     uint8
	Payload  []byte
}

// collect runs a receive loop on tr, copying messages into the returned
// channel, until tr is closed. Cleanup closes tr and waits for the loop.
func collect(t testing.TB, tr Transport) <-chan collected {
	t.Helper()
	return collectW(t, tr, 0, nil)
}

// served wraps a transport whose test receive loop (collect) uses Serve
// rather than Recv.
type served struct{ Transport }

// typeWarm marks warm-up messages (see awaitConnected): collectW reports
// them on warm, tagged with the receiver's index, so tests never see them.
const typeWarm = 250

type warmMsg struct {
	rcv  int
	from uint16
}

func collectW(t testing.TB, tr Transport, idx int, warm chan<- warmMsg) <-chan collected {
	t.Helper()
	ch := make(chan collected, 1<<14)
	done := make(chan error, 1)
	go func() {
		msgs := make([]Message, 16)
		handle := func(batch []Message) bool {
			for _, m := range batch {
				if m.Type == typeWarm && warm != nil {
					select {
					case warm <- warmMsg{idx, m.From}:
					default:
					}
					continue
				}
				ch <- collected{m.From, m.To, m.Type, bytes.Clone(m.Payload)}
			}
			return true
		}
		var err error
		if s, ok := tr.(served); ok {
			err = Serve(s.Transport, msgs, handle)
			if err == nil {
				err = errors.New("Serve returned nil while its handler wanted more")
			}
		} else {
			for err == nil {
				var n int
				if n, err = tr.Recv(msgs); err == nil {
					handle(msgs[:n])
				}
			}
		}
		done <- err
		close(ch)
	}()
	t.Cleanup(func() {
		_ = tr.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("receive loop ended with %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Recv still blocked 10 s after Close")
		}
	})
	return ch
}

// collectAll starts collect loops on every transport and waits until each
// has heard every other one: a freshly built rig drops frames until its links
// report carrier (linkwatch runs asynchronously), so the first messages of a
// test could vanish. Each site multicasts warm-up messages every 50 ms until
// all others heard it.
func collectAll(t testing.TB, trs []Transport) []<-chan collected {
	t.Helper()
	warm := make(chan warmMsg, 4096)
	var chs []<-chan collected
	for i, tr := range trs {
		chs = append(chs, collectW(t, tr, i, warm))
	}
	heard := make([]map[uint16]bool, len(trs))
	for i := range heard {
		heard[i] = map[uint16]bool{}
	}
	missing := len(trs) * (len(trs) - 1)
	deadline := time.After(10 * time.Second)
	for missing > 0 {
		for _, tr := range trs {
			if err := tr.Send(AllSites, typeWarm, nil); err != nil {
				t.Fatal(err)
			}
		}
		tick := time.After(50 * time.Millisecond)
	wait:
		for missing > 0 {
			select {
			case w := <-warm:
				if !heard[w.rcv][w.from] {
					heard[w.rcv][w.from] = true
					missing--
				}
			case <-tick:
				break wait
			case <-deadline:
				t.Fatalf("sites not all connected after 10 s: %v", heard)
			}
		}
	}
	// Flush: warm-ups still in flight arrive before these markers (each
	// link is FIFO), so once every site has every marker, none is left.
	for _, tr := range trs {
		if err := tr.Send(AllSites, typeSync, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range chs {
		if got := want(t, ch, len(trs)-1, 10*time.Second); slices.ContainsFunc(got, func(m collected) bool { return m.Type != typeSync }) {
			t.Fatalf("site index %d: unexpected message during warm-up: %+v", i, got)
		}
	}
	return chs
}

const typeSync = 251

// want waits for n messages on ch.
func want(t testing.TB, ch <-chan collected, n int, within time.Duration) []collected {
	t.Helper()
	var out []collected
	deadline := time.After(within)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("transport closed after %d of %d messages", len(out), n)
			}
			out = append(out, m)
		case <-deadline:
			t.Fatalf("got %d of %d messages within %v", len(out), n, within)
		}
	}
	return out
}

// until waits for a message satisfying stop, returning those before it.
func until(t testing.TB, ch <-chan collected, within time.Duration, stop func(collected) bool) []collected {
	t.Helper()
	var out []collected
	deadline := time.After(within)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("transport closed after %d messages", len(out))
			}
			if stop(m) {
				return out
			}
			out = append(out, m)
		case <-deadline:
			t.Fatalf("no end marker within %v (%d messages)", within, len(out))
		}
	}
}

// quiet asserts no message arrives on ch before a marker sent afterwards:
// the caller sends marker-typed message and we check it is the first.
func firstIs(t testing.TB, ch <-chan collected, typ uint8, within time.Duration) {
	t.Helper()
	got := want(t, ch, 1, within)
	if got[0].Type != typ {
		t.Fatalf("first message type %d (from %d, %d bytes), want marker %d", got[0].Type, got[0].From, len(got[0].Payload), typ)
	}
}
