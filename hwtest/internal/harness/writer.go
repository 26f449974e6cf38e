package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target is a board a writer may send to.
type Target struct {
	Site uint16
	Sock string
}

// Writer writes new keys continuously and records every attempt in a
// History. Keys are Prefix + a zero-padded sequence number, each written
// once; a failed write is not retried (the next attempt takes a new key), so
// the history says exactly what each key may hold.
type Writer struct {
	DB     string
	Prefix string
	// Pick returns where attempt number attempt (0, 1, ... since the last
	// success) of worker goes; ok=false means no board is available now.
	Pick func(worker, attempt int) (Target, bool)
	// Workers writing in parallel (default 1).
	Workers int
	// Timeout bounds one write (default 2s).
	Timeout time.Duration
	// Interval between the starts of a worker's writes; 0 = back to back.
	// It shapes the load on a shared machine, it synchronises nothing.
	Interval time.Duration
	// ValueSize pads values to at least this many bytes.
	ValueSize int
	// Incompressible pads with pseudo-random letters (from the key's
	// sequence number) instead of one repeated letter, so the pages that
	// hold the values do not shrink under the backplane's lz4.
	Incompressible bool
	// Tag labels every write (Write.Tag).
	Tag string
	// OnWrite, if set, sees every recorded write.
	OnWrite func(Write)

	seq     atomic.Uint64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
}

// Start launches the workers; they run until Stop or ctx ends. A Writer
// runs once: a second Start is an error.
func (w *Writer) Start(ctx context.Context, h *History) error {
	if w.started {
		return fmt.Errorf("harness: writer %q started twice; make a new Writer", w.Prefix)
	}
	if w.Pick == nil {
		return fmt.Errorf("harness: writer %q has no Pick function", w.Prefix)
	}
	w.started = true
	ctx, w.cancel = context.WithCancel(ctx)
	n := max(1, w.Workers)
	for i := range n {
		w.wg.Add(1)
		go w.run(ctx, i, h)
	}
	return nil
}

// Stop ends the workers and waits for their last writes to be recorded.
func (w *Writer) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// Next returns the key and value the next write will use.
func (w *Writer) next(worker int) (string, string) {
	n := w.seq.Add(1)
	key := fmt.Sprintf("%s%09d", w.Prefix, n)
	val := fmt.Sprintf("%s/w%d", key, worker)
	if pad := w.ValueSize - len(val); pad > 0 {
		if w.Incompressible {
			val += "/" + randomLetters(n, pad)
		} else {
			val += "/" + strings.Repeat(string(rune('a'+n%26)), pad)
		}
	}
	return key, val
}

func (w *Writer) run(ctx context.Context, worker int, h *History) {
	defer w.wg.Done()
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	clients := map[string]*Client{}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var tick <-chan time.Time
	if w.Interval > 0 {
		t := time.NewTicker(w.Interval)
		defer t.Stop()
		tick = t.C
	}
	attempt := 0
	for ctx.Err() == nil {
		tg, ok := w.Pick(worker, attempt)
		if !ok {
			// Nothing to write to; poll again shortly.
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		c := clients[tg.Sock]
		if c == nil {
			c = NewClient(tg.Sock)
			clients[tg.Sock] = c
		}
		key, val := w.next(worker)
		wr := Write{Key: key, Value: val, Via: tg.Site, Start: time.Now(), Tag: w.Tag}
		// The write gets its own deadline, detached from Stop: a write
		// in flight when the scenario stops must still be recorded with
		// its real outcome, or a Perm commit could go unrecorded.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		cm, err := c.Put(wctx, w.DB, []byte(key), []byte(val))
		cancel()
		wr.End = time.Now()
		switch {
		case err != nil:
			wr.Outcome, wr.Err = Failed, err.Error()
			attempt++
		case cm.Perm:
			wr.Outcome, wr.LSN = Perm, cm.LSN
			attempt = 0
		default:
			wr.Outcome, wr.LSN = NotPerm, cm.LSN
			attempt = 0
		}
		h.Add(wr)
		if w.OnWrite != nil {
			w.OnWrite(wr)
		}
		if err != nil {
			// Give the group a moment before the next board is tried,
			// so a dead socket does not turn into a busy loop.
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	}
}

// randomLetters returns n pseudo-random characters of a 64-letter alphabet,
// the same for the same seed.
func randomLetters(seed uint64, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.Uint64()%uint64(len(alphabet))]
	}
	return string(b)
}
