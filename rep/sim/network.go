package sim

import (
	"math/rand/v2"
	"time"
)

// Broadcast is the destination that means every other site of the group.
const Broadcast uint16 = 0xFFFF

// simMsg is one message in flight. The payload is a private copy: the sender
// may reuse its buffer once Send returns.
type simMsg struct {
	from, to uint16
	typ      uint8
	payload  []byte
	id       uint64
}

// NetFaults are the network's fault probabilities and delays. Zero values
// make a perfect network with DelayMin latency.
type NetFaults struct {
	Drop     float64       // probability a message is lost
	Dup      float64       // probability a message is delivered twice
	DelayMin time.Duration // one-way latency lower bound
	DelayMax time.Duration // upper bound; a spread larger than the send interval reorders
}

// network is the simulated backplane: it decides, from the run's random
// stream, whether and when each message arrives, and honours partitions given
// per direction.
type network struct {
	n       int
	rng     *rand.Rand
	q       *queue
	faults  NetFaults
	burst   float64 // extra drop probability during a loss burst
	blocked []bool  // (n+1)*(n+1), blocked[from*(n+1)+to]: from cannot reach to
	nextID  uint64

	sent, dropped, duplicated, blockedCount uint64
}

func newNetwork(n int, rng *rand.Rand, q *queue, f NetFaults) *network {
	return &network{n: n, rng: rng, q: q, faults: f, blocked: make([]bool, (n+1)*(n+1))}
}

func (nw *network) idx(from, to uint16) int { return int(from)*(nw.n+1) + int(to) }

// block cuts (or restores) the direction from -> to.
func (nw *network) block(from, to uint16, cut bool) { nw.blocked[nw.idx(from, to)] = cut }

// canReach reports whether from -> to is currently open.
func (nw *network) canReach(from, to uint16) bool { return !nw.blocked[nw.idx(from, to)] }

// healAll removes every partition.
func (nw *network) healAll() { clear(nw.blocked) }

// partitioned reports whether any direction is cut.
func (nw *network) partitioned() bool {
	for _, b := range nw.blocked {
		if b {
			return true
		}
	}
	return false
}

// split cuts the group into side A (inA[site]==true) and side B. When oneWay
// is set only A -> B is cut (an asymmetric fault: B still hears A... no, A's
// messages are lost and B's arrive), which is the nastiest case for leases.
func (nw *network) split(inA []bool, oneWay bool) {
	for f := 1; f <= nw.n; f++ {
		for t := 1; t <= nw.n; t++ {
			if inA[f] == inA[t] {
				continue
			}
			if inA[f] || !oneWay {
				nw.block(uint16(f), uint16(t), true)
			}
		}
	}
}

// send queues a message (or, for Broadcast, one copy per other site).
func (nw *network) send(now time.Duration, from, to uint16, typ uint8, payload []byte) {
	if to == Broadcast {
		for t := 1; t <= nw.n; t++ {
			if uint16(t) != from {
				nw.send1(now, from, uint16(t), typ, payload)
			}
		}
		return
	}
	if to == 0 || int(to) > nw.n || to == from {
		nw.dropped++
		return
	}
	nw.send1(now, from, to, typ, payload)
}

func (nw *network) send1(now time.Duration, from, to uint16, typ uint8, payload []byte) {
	nw.sent++
	// Draw every random number whatever the outcome so that a change in one
	// fault decision does not shift the whole stream behind it.
	rDrop := nw.rng.Float64()
	rDup := nw.rng.Float64()
	d1 := nw.delay()
	d2 := nw.delay()
	if !nw.canReach(from, to) {
		nw.blockedCount++
		return
	}
	if rDrop < nw.faults.Drop+nw.burst {
		nw.dropped++
		return
	}
	nw.nextID++
	m := &simMsg{from: from, to: to, typ: typ, payload: append([]byte(nil), payload...), id: nw.nextID}
	nw.q.push(event{at: now + d1, kind: evDeliver, site: to, msg: m})
	if rDup < nw.faults.Dup {
		nw.duplicated++
		nw.q.push(event{at: now + d2, kind: evDeliver, site: to, msg: m})
	}
}

func (nw *network) delay() time.Duration {
	lo, hi := nw.faults.DelayMin, nw.faults.DelayMax
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(nw.rng.Int64N(int64(hi-lo)))
}
