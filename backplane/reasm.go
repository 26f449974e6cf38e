package backplane

import (
	"sync/atomic"
	"time"
)

// ReassemblyConfig bounds the memory and time spent on partially received
// messages. Zero fields take the defaults.
type ReassemblyConfig struct {
	Timeout        time.Duration // a message must complete within this of its first fragment; default 1 s
	PerSourceMsgs  int           // partial messages per sending site; default 8
	PerSourceBytes int           // memory per sending site; default 4 MiB
	MaxBytes       int           // memory over all sites; default 16 MiB
	MaxMsgs        int           // partial messages over all sites; default 64
}

func (c ReassemblyConfig) withDefaults() ReassemblyConfig {
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if c.PerSourceMsgs <= 0 {
		c.PerSourceMsgs = 8
	}
	if c.PerSourceBytes <= 0 {
		c.PerSourceBytes = 4 << 20
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 16 << 20
	}
	if c.MaxMsgs <= 0 {
		c.MaxMsgs = 64
	}
	return c
}

const (
	recentDone   = 32 // completed message ids remembered per source to spot late duplicates
	maxFreeBufs  = 4  // reassembly buffers kept for reuse
	bufRoundUp   = 64 << 10
	maxSourceTab = 1024 // sources tracked before idle ones are forgotten
)

type rentry struct {
	from     uint16
	id       uint32
	typ      uint8
	to       uint16
	flags    uint16
	nfrags   int
	fragSize int // 0 until a non-last fragment fixes it
	lastLen  int // -1 until the last fragment arrived
	got      int
	charge   int
	start    time.Time
	have     []uint64
	buf      []byte
	tail     []byte // the last fragment, parked while fragSize is unknown
}

type srcState struct {
	msgs, bytes int
	done        [recentDone]uint32
	doneN       int
}

func (s *srcState) recentlyDone(id uint32) bool {
	n := min(s.doneN, recentDone)
	for i := 0; i < n; i++ {
		if s.done[i] == id {
			return true
		}
	}
	return false
}

func (s *srcState) markDone(id uint32) {
	s.done[s.doneN%recentDone] = id
	s.doneN++
}

// reassembler rebuilds fragmented messages. It is used by the receiving
// goroutine only; the gauges are atomic so Stats can read them.
type reassembler struct {
	cfg       ReassemblyConfig
	maxFrag   int
	c         *counters
	active    []*rentry // arrival order, oldest first; short, so linear scans win over a map
	srcs      map[uint16]*srcState
	used      int
	free      []*rentry
	delivered []*rentry
	nGauge    atomic.Int64
	bGauge    atomic.Int64
}

func newReassembler(cfg ReassemblyConfig, maxFrag int, c *counters) *reassembler {
	return &reassembler{cfg: cfg.withDefaults(), maxFrag: maxFrag, c: c, srcs: make(map[uint16]*srcState)}
}

func (r *reassembler) src(from uint16) *srcState {
	s := r.srcs[from]
	if s == nil {
		if len(r.srcs) >= maxSourceTab {
			// Forget idle sources: only their duplicate-detection memory is lost.
			for k, v := range r.srcs {
				if v.msgs == 0 {
					delete(r.srcs, k)
				}
			}
		}
		s = &srcState{}
		r.srcs[from] = s
	}
	return s
}

// release recycles the buffers of messages handed out by the previous Recv.
func (r *reassembler) release() {
	for _, e := range r.delivered {
		r.recycle(e)
	}
	clear(r.delivered)
	r.delivered = r.delivered[:0]
}

func (r *reassembler) recycle(e *rentry) {
	if len(r.free) < maxFreeBufs {
		r.free = append(r.free, e)
	}
}

func (r *reassembler) gauges() {
	r.nGauge.Store(int64(len(r.active)))
	r.bGauge.Store(int64(r.used))
}

// remove takes e out of the active set, uncharging its memory.
func (r *reassembler) remove(e *rentry) {
	for i, a := range r.active {
		if a == e {
			copy(r.active[i:], r.active[i+1:])
			r.active[len(r.active)-1] = nil
			r.active = r.active[:len(r.active)-1]
			break
		}
	}
	s := r.srcs[e.from]
	if s != nil {
		s.msgs--
		s.bytes -= e.charge
	}
	r.used -= e.charge
}

func (r *reassembler) abandon(e *rentry, why DropReason) {
	r.remove(e)
	r.c.drop(why)
	r.recycle(e)
	r.gauges()
}

// expire drops messages older than the timeout and returns when the next one
// will expire (zero if none is pending).
func (r *reassembler) expire(now time.Time) time.Time {
	var next time.Time
	for i := 0; i < len(r.active); {
		e := r.active[i]
		dl := e.start.Add(r.cfg.Timeout)
		if !now.Before(dl) {
			r.abandon(e, DropReasmTimeout)
			continue
		}
		if next.IsZero() || dl.Before(next) {
			next = dl
		}
		i++
	}
	return next
}

func (r *reassembler) newEntry(charge int) *rentry {
	best := -1
	for i, e := range r.free {
		if cap(e.buf) >= charge && (best < 0 || cap(e.buf) < cap(r.free[best].buf)) {
			best = i
		}
	}
	if best >= 0 {
		e := r.free[best]
		r.free[best] = r.free[len(r.free)-1]
		r.free[len(r.free)-1] = nil
		r.free = r.free[:len(r.free)-1]
		return e
	}
	if len(r.free) > 0 {
		// Reuse the entry (bitmap, tail) and grow its buffer.
		e := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		e.buf = make([]byte, (charge+bufRoundUp-1)/bufRoundUp*bufRoundUp)
		return e
	}
	return &rentry{buf: make([]byte, (charge+bufRoundUp-1)/bufRoundUp*bufRoundUp)}
}

// add files one fragment (NFrags > 1) and returns the whole message payload
// when it was the last one missing. The payload stays valid until release.
func (r *reassembler) add(h Header, p []byte, now time.Time) ([]byte, bool) {
	var e *rentry
	for _, a := range r.active {
		if a.from == h.From && a.id == h.MsgID {
			e = a
			break
		}
	}
	nf := int(h.NFrags)
	last := int(h.Frag) == nf-1
	if e == nil {
		s := r.src(h.From)
		if s.recentlyDone(h.MsgID) {
			r.c.drop(DropDupFragment)
			return nil, false
		}
		if len(p) == 0 || len(p) > r.maxFrag {
			r.c.drop(DropStrayFragment)
			return nil, false
		}
		var charge int
		if last {
			charge = min((nf-1)*r.maxFrag+len(p), MaxMessageSize)
		} else {
			if (nf-1)*len(p)+1 > MaxMessageSize {
				r.c.drop(DropAbsurdLength)
				return nil, false
			}
			charge = min(nf*len(p), MaxMessageSize)
		}
		if charge > r.cfg.PerSourceBytes || charge > r.cfg.MaxBytes {
			r.c.drop(DropReasmOverflow)
			return nil, false
		}
		r.expire(now)
		for s.msgs >= r.cfg.PerSourceMsgs || s.bytes+charge > r.cfg.PerSourceBytes {
			if !r.evictOldest(h.From, true) {
				break
			}
		}
		for r.used+charge > r.cfg.MaxBytes || len(r.active) >= r.cfg.MaxMsgs {
			if !r.evictOldest(0, false) {
				break
			}
		}
		e = r.newEntry(charge)
		words := (nf + 63) / 64
		if cap(e.have) < words {
			e.have = make([]uint64, words)
		}
		e.have = e.have[:words]
		clear(e.have)
		e.from, e.id, e.typ, e.to, e.flags = h.From, h.MsgID, h.Type, h.To, h.Flags
		e.nfrags, e.fragSize, e.lastLen, e.got = nf, 0, -1, 0
		e.charge, e.start = charge, now
		e.tail = e.tail[:0]
		r.active = append(r.active, e)
		s.msgs++
		s.bytes += charge
		r.used += charge
		r.gauges()
	} else if nf != e.nfrags || h.Type != e.typ || h.To != e.to || h.Flags != e.flags {
		r.c.drop(DropStrayFragment)
		return nil, false
	}
	idx := int(h.Frag)
	if e.have[idx/64]&(1<<(idx%64)) != 0 {
		r.c.drop(DropDupFragment)
		return nil, false
	}
	if last {
		if len(p) == 0 || (e.fragSize > 0 && len(p) > e.fragSize) || len(p) > r.maxFrag {
			r.c.drop(DropStrayFragment)
			return nil, false
		}
		if e.fragSize > 0 {
			if (nf-1)*e.fragSize+len(p) > min(e.charge, MaxMessageSize) {
				r.c.drop(DropStrayFragment)
				return nil, false
			}
			copy(e.buf[(nf-1)*e.fragSize:], p)
		} else {
			e.tail = append(e.tail[:0], p...)
		}
		e.lastLen = len(p)
	} else {
		if e.fragSize == 0 {
			if len(p) == 0 || len(p) > r.maxFrag || (e.lastLen > len(p)) ||
				(nf-1)*len(p)+max(e.lastLen, 1) > min(e.charge, MaxMessageSize) {
				r.c.drop(DropStrayFragment)
				return nil, false
			}
			e.fragSize = len(p)
			if e.lastLen >= 0 {
				copy(e.buf[(nf-1)*e.fragSize:], e.tail)
			}
		} else if len(p) != e.fragSize {
			r.c.drop(DropStrayFragment)
			return nil, false
		}
		copy(e.buf[idx*e.fragSize:], p)
	}
	e.have[idx/64] |= 1 << (idx % 64)
	e.got++
	if e.got < nf {
		return nil, false
	}
	total := (nf-1)*e.fragSize + e.lastLen
	if total > len(e.buf) { // unreachable given the checks above; never slice past the buffer
		r.abandon(e, DropStrayFragment)
		return nil, false
	}
	r.remove(e)
	r.src(e.from).markDone(e.id)
	r.delivered = append(r.delivered, e)
	r.gauges()
	return e.buf[:total], true
}

func (r *reassembler) evictOldest(from uint16, bySource bool) bool {
	for _, e := range r.active {
		if !bySource || e.from == from {
			r.abandon(e, DropReasmOverflow)
			return true
		}
	}
	return false
}
