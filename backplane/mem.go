package backplane

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Faults describes what the mem hub does to messages on one direction of a
// link. Probabilities are in [0,1]; decisions come from a PRNG seeded from
// MemConfig.Seed and the (from, to) pair, so a given seed and a given order of
// Sends on each link always yields the same decisions. Delays use real timers.
type Faults struct {
	Drop      float64       // probability a message is lost
	Duplicate float64       // probability it is delivered twice
	Reorder   float64       // probability it is held back and delivered after the next one
	Delay     time.Duration // added to every delivery
	Jitter    time.Duration // uniform extra delay in [0, Jitter)
}

// MemConfig configures a MemHub.
type MemConfig struct {
	Seed     uint64
	Faults   Faults // default for every direction
	QueueLen int    // messages queued per receiving site before drops; default 4096
	// ReorderHold bounds how long a reordered message waits for a successor;
	// default 20 ms.
	ReorderHold time.Duration
}

// MemHub connects in-process transports. Safe for concurrent use.
type MemHub struct {
	cfg   MemConfig
	mu    sync.Mutex
	sites map[uint16]*memTransport
	links map[[2]uint16]*memLink
	cut   map[[2]uint16]bool
	pool  sync.Pool // *[]byte payload buffers
	dsts  []uint16  // multicast scratch, under mu
}

type memLink struct {
	rng    *rand.Rand
	faults Faults
	held   *memItem
	timer  *time.Timer
}

type memItem struct {
	from, to uint16
	typ      uint8
	buf      *[]byte
}

// NewMemHub returns an empty hub.
func NewMemHub(cfg MemConfig) *MemHub {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.ReorderHold <= 0 {
		cfg.ReorderHold = 20 * time.Millisecond
	}
	return &MemHub{cfg: cfg, sites: make(map[uint16]*memTransport), links: make(map[[2]uint16]*memLink), cut: make(map[[2]uint16]bool)}
}

// SetFaults sets the faults of the direction from -> to, replacing the default.
func (h *MemHub) SetFaults(from, to uint16, f Faults) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.link(from, to).faults = f
}

// Partition cuts both directions between every site of a and every site of b.
func (h *MemHub) Partition(a, b []uint16) {
	h.PartitionOneWay(a, b)
	h.PartitionOneWay(b, a)
}

// PartitionOneWay cuts messages from any site of from to any site of to.
func (h *MemHub) PartitionOneWay(from, to []uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range from {
		for _, t := range to {
			h.cut[[2]uint16{f, t}] = true
		}
	}
}

// Flush delivers every message held back for reordering now.
func (h *MemHub) Flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, l := range h.links {
		if l.held == nil {
			continue
		}
		it := *l.held
		l.held = nil
		if l.timer != nil {
			l.timer.Stop()
			l.timer = nil
		}
		if dst := h.sites[k[1]]; dst != nil {
			h.deliver(dst, it, 0)
		} else {
			h.putBuf(it.buf)
		}
	}
}

// Heal removes every partition.
func (h *MemHub) Heal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.cut)
}

func (h *MemHub) link(from, to uint16) *memLink {
	k := [2]uint16{from, to}
	l := h.links[k]
	if l == nil {
		l = &memLink{
			rng:    rand.New(rand.NewPCG(h.cfg.Seed, uint64(from)<<16|uint64(to))),
			faults: h.cfg.Faults,
		}
		h.links[k] = l
	}
	return l
}

func (h *MemHub) getBuf(p []byte) *[]byte {
	bp, _ := h.pool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, max(len(p), 256))
		bp = &b
	}
	*bp = append((*bp)[:0], p...)
	return bp
}

func (h *MemHub) putBuf(bp *[]byte) {
	if cap(*bp) <= MaxMessageSize {
		h.pool.Put(bp)
	}
}

// NewMem attaches site to hub. A site can be attached again after Close.
func NewMem(hub *MemHub, site uint16) (Transport, error) {
	if site == AllSites {
		return nil, fmt.Errorf("mem transport site %#x is the all-sites address: %w", site, ErrBadConfig)
	}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.sites[site] != nil {
		return nil, fmt.Errorf("mem transport: site %d already attached to this hub; close it first: %w", site, ErrBadConfig)
	}
	t := &memTransport{hub: hub, site: site, notify: make(chan struct{}, 1), done: make(chan struct{})}
	hub.sites[site] = t
	return t, nil
}

type memTransport struct {
	hub     *MemHub
	site    uint16
	c       counters
	faults  FaultStats // guarded by hub.mu
	unreach uint64

	mu     sync.Mutex // guards queue, closed
	queue  []memItem
	closed bool
	notify chan struct{}
	done   chan struct{}

	out []*[]byte // buffers of the previous Recv batch (receiver goroutine only)
}

func (t *memTransport) Send(to uint16, typ uint8, payload []byte) error {
	if len(payload) > MaxMessageSize {
		return fmt.Errorf("mem send %d bytes from site %d to %d (limit %d): %w", len(payload), t.site, to, MaxMessageSize, ErrMessageTooLarge)
	}
	h := t.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sites[t.site] != t {
		return fmt.Errorf("mem send from site %d: %w", t.site, ErrClosed)
	}
	t.c.msgsOut.Add(1)
	t.c.framesOut.Add(1)
	t.c.bytesOut.Add(uint64(len(payload)))
	if to != AllSites {
		h.sendLinkLocked(t, to, to, typ, payload)
		return nil
	}
	h.dsts = h.dsts[:0]
	for s := range h.sites {
		if s != t.site {
			h.dsts = append(h.dsts, s)
		}
	}
	slices.Sort(h.dsts) // map order is random; link decisions must not depend on it
	for _, d := range h.dsts {
		h.sendLinkLocked(t, d, AllSites, typ, payload)
	}
	return nil
}

func (h *MemHub) sendLinkLocked(t *memTransport, to, hdrTo uint16, typ uint8, payload []byte) {
	dst := h.sites[to]
	if dst == nil {
		t.unreach++
		return
	}
	l := h.link(t.site, to)
	f := l.faults
	// Draw every decision on every message so that one fault's setting does
	// not shift the random stream of the others.
	dropR, dupR, reoR, jit := l.rng.Float64(), l.rng.Float64(), l.rng.Float64(), l.rng.Float64()
	if h.cut[[2]uint16{t.site, to}] {
		t.faults.Partitioned++
		return
	}
	if dropR < f.Drop {
		t.faults.Dropped++
		return
	}
	delay := f.Delay
	if f.Jitter > 0 {
		delay += time.Duration(jit * float64(f.Jitter))
	}
	if delay > 0 {
		t.faults.Delayed++
	}
	copies := 1
	if dupR < f.Duplicate {
		copies = 2
		t.faults.Duplicated++
	}
	held := false
	for i := 0; i < copies; i++ {
		it := memItem{from: t.site, to: hdrTo, typ: typ, buf: h.getBuf(payload)}
		if i == 0 && reoR < f.Reorder && l.held == nil {
			t.faults.Reordered++
			// A copy of its own: taking the address of it would move every
			// message's item to the heap.
			heldIt := it
			l.held = &heldIt
			l.timer = time.AfterFunc(h.cfg.ReorderHold, func() { h.flushHeld(l, dst) })
			held = true
			continue
		}
		h.deliver(dst, it, delay)
	}
	if !held && l.held != nil {
		h.releaseHeldLocked(l, dst, delay)
	}
}

// releaseHeldLocked delivers a held (reordered) message after a later
// message on its link went out.
func (h *MemHub) releaseHeldLocked(l *memLink, dst *memTransport, delay time.Duration) {
	it := *l.held
	l.held = nil
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	h.deliver(dst, it, delay)
}

func (h *MemHub) flushHeld(l *memLink, dst *memTransport) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l.held == nil {
		return
	}
	it := *l.held
	l.held = nil
	l.timer = nil
	h.deliver(dst, it, 0)
}

func (h *MemHub) deliver(dst *memTransport, it memItem, delay time.Duration) {
	if delay > 0 {
		time.AfterFunc(delay, func() { dst.enqueue(it) })
		return
	}
	dst.enqueue(it)
}

func (t *memTransport) enqueue(it memItem) {
	t.mu.Lock()
	if t.closed || len(t.queue) >= t.hub.cfg.QueueLen {
		if !t.closed {
			t.c.drop(DropQueueFull)
		}
		t.mu.Unlock()
		t.hub.putBuf(it.buf)
		return
	}
	t.queue = append(t.queue, it)
	t.mu.Unlock()
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

func (t *memTransport) Recv(msgs []Message) (int, error) {
	for _, b := range t.out {
		t.hub.putBuf(b)
	}
	clear(t.out)
	t.out = t.out[:0]
	if len(msgs) == 0 {
		return 0, nil
	}
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return 0, fmt.Errorf("mem recv at site %d: %w", t.site, ErrClosed)
		}
		if len(t.queue) > 0 {
			n := 0
			for n < len(msgs) && n < len(t.queue) {
				it := t.queue[n]
				msgs[n] = Message{From: it.from, To: it.to, Type: it.typ, Payload: *it.buf}
				t.out = append(t.out, it.buf)
				t.c.framesIn.Add(1)
				t.c.bytesIn.Add(uint64(len(*it.buf)))
				n++
			}
			rest := copy(t.queue, t.queue[n:])
			clear(t.queue[rest:])
			t.queue = t.queue[:rest]
			t.mu.Unlock()
			t.c.msgsIn.Add(uint64(n))
			return n, nil
		}
		t.mu.Unlock()
		select {
		case <-t.notify:
		case <-t.done:
		}
	}
}

// Pending reports whether messages wait in the queue.
func (t *memTransport) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed && len(t.queue) > 0
}

func (t *memTransport) Stats() Stats {
	s := t.c.snapshot()
	t.hub.mu.Lock()
	s.Faults = t.faults
	s.Faults.Unreachable = t.unreach
	t.hub.mu.Unlock()
	return s
}

func (t *memTransport) Close() error {
	h := t.hub
	h.mu.Lock()
	if h.sites[t.site] == t {
		delete(h.sites, t.site)
	}
	h.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	close(t.done)
	for _, it := range t.queue {
		h.putBuf(it.buf)
	}
	clear(t.queue)
	t.queue = nil
	return nil
}
