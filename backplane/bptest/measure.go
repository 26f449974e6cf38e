// Package bptest measures backplane transports against the bare link:
// round-trip latency (ping-pong) and one-way streaming throughput, for any
// backplane.Transport and for plain AF_PACKET sockets carrying no header, no
// checksum and no filter (the physical limit of the link). Suite runs the
// whole comparison between two rig boards so the bench command and tests
// share one implementation.
package bptest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
)

// ErrStalled is returned when a measurement makes no progress (a frame was
// lost and the peer waits forever); the transports involved are closed.
var ErrStalled = errors.New("bptest: measurement stalled (message lost?); transports closed, reopen them to retry")

// Message types used by the measurements.
const (
	typePing   = 1
	typeStop   = 2
	typeData   = 3
	typeEnd    = 4
	stallAfter = 5 * time.Second
)

// Latencies are round-trip times, in measurement order.
type Latencies []time.Duration

// Percentile returns the p-th percentile (0..100) of the samples.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Median is the 50th percentile.
func (l Latencies) Median() time.Duration { return l.Percentile(50) }

// Mean is the arithmetic mean.
func (l Latencies) Mean() time.Duration {
	if len(l) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range l {
		t += d
	}
	return t / time.Duration(len(l))
}

// Throughput is the result of a one-way stream.
type Throughput struct {
	Sent, Received int           // messages
	Size           int           // payload bytes per message
	Elapsed        time.Duration // from the first send to the end marker's arrival
}

// MsgsPerSec is the received message rate.
func (t Throughput) MsgsPerSec() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Received) / t.Elapsed.Seconds()
}

// MBPerSec is the received payload rate in 10^6 bytes per second.
func (t Throughput) MBPerSec() float64 { return t.MsgsPerSec() * float64(t.Size) / 1e6 }

// watchdog closes the transports when fn has not called kick for stallAfter.
type watchdog struct {
	mu    sync.Mutex
	last  time.Time
	fired bool
	stop  chan struct{}
}

func newWatchdog(onStall func()) *watchdog {
	w := &watchdog{last: time.Now(), stop: make(chan struct{})}
	go func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
				w.mu.Lock()
				stalled := time.Since(w.last) > stallAfter
				if stalled {
					w.fired = true
				}
				w.mu.Unlock()
				if stalled {
					onStall()
					return
				}
			}
		}
	}()
	return w
}

func (w *watchdog) kick() {
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
}

func (w *watchdog) done() bool {
	close(w.stop)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

// PingPong measures n round trips of size-byte messages: a sends to site
// bSite, b echoes each message back to its sender. a and b must be otherwise
// idle. A lost message stalls the exchange: after 5 s both transports are
// closed and ErrStalled is returned.
func PingPong(a, b backplane.Transport, bSite uint16, size, n int) (Latencies, error) {
	wd := newWatchdog(func() { a.Close(); b.Close() })
	echoErr := make(chan error, 1)
	go func() {
		msgs := make([]backplane.Message, 16)
		for {
			k, err := b.Recv(msgs)
			if err != nil {
				echoErr <- err
				return
			}
			for _, m := range msgs[:k] {
				if m.Type == typeStop {
					echoErr <- nil
					return
				}
				if err := b.Send(m.From, m.Type, m.Payload); err != nil {
					echoErr <- err
					return
				}
			}
		}
	}()
	payload := make([]byte, size)
	msgs := make([]backplane.Message, 16)
	lat := make(Latencies, 0, n)
	var err error
	for i := 0; i < n && err == nil; i++ {
		payload[0] = byte(i)
		start := time.Now()
		if err = a.Send(bSite, typePing, payload); err != nil {
			break
		}
		for err == nil {
			var k int
			if k, err = a.Recv(msgs); err == nil && k > 0 && msgs[k-1].Type == typePing && len(msgs[k-1].Payload) == size && msgs[k-1].Payload[0] == byte(i) {
				lat = append(lat, time.Since(start))
				break
			}
		}
		wd.kick()
	}
	if err == nil {
		err = a.Send(bSite, typeStop, nil)
	}
	eerr := <-echoErr
	if wd.done() {
		return lat, fmt.Errorf("ping-pong of %d-byte messages after %d of %d round trips: %w", size, len(lat), n, ErrStalled)
	}
	if err != nil {
		return lat, fmt.Errorf("ping-pong of %d-byte messages: %w", size, err)
	}
	if eerr != nil {
		return lat, fmt.Errorf("ping-pong echo: %w", eerr)
	}
	return lat, nil
}

// Stream sends n size-byte messages from a to bSite as fast as Send allows
// and measures what b receives from the first send until the end marker
// arrives (the sender's clock and the receiver's are the same). Messages the receiver could not keep up with are lost, not
// retransmitted: Received says how many arrived.
func Stream(a, b backplane.Transport, bSite uint16, size, n int) (Throughput, error) {
	wd := newWatchdog(func() { a.Close(); b.Close() })
	type result struct {
		got int
		end time.Time
		err error
	}
	res := make(chan result, 1)
	ready := make(chan struct{})
	go func() {
		msgs := make([]backplane.Message, 64)
		got := 0
		close(ready)
		for {
			k, err := b.Recv(msgs)
			if err != nil {
				res <- result{got, time.Time{}, err}
				return
			}
			for _, m := range msgs[:k] {
				switch m.Type {
				case typeData:
					got++
				case typeEnd:
					res <- result{got, time.Now(), nil}
					return
				}
			}
			wd.kick()
		}
	}()
	<-ready
	payload := make([]byte, size)
	var err error
	start := time.Now()
	for i := 0; i < n && err == nil; i++ {
		err = a.Send(bSite, typeData, payload)
	}
	// A few end markers: one lost marker must not stall the run.
	for i := 0; i < 3 && err == nil; i++ {
		err = a.Send(bSite, typeEnd, nil)
	}
	r := <-res
	if wd.done() {
		return Throughput{}, fmt.Errorf("stream of %d-byte messages: %w", size, ErrStalled)
	}
	if err != nil {
		return Throughput{}, fmt.Errorf("stream of %d-byte messages: %w", size, err)
	}
	if r.err != nil {
		return Throughput{}, fmt.Errorf("stream receiver: %w", r.err)
	}
	return Throughput{Sent: n, Received: r.got, Size: size, Elapsed: r.end.Sub(start)}, nil
}
