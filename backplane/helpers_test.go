package backplane

import (
	"bytes"
	"errors"
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
	ch := make(chan collected, 1<<14)
	done := make(chan error, 1)
	go func() {
		msgs := make([]Message, 16)
		for {
			n, err := tr.Recv(msgs)
			if err != nil {
				done <- err
				close(ch)
				return
			}
			for _, m := range msgs[:n] {
				ch <- collected{m.From, m.To, m.Type, bytes.Clone(m.Payload)}
			}
		}
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
