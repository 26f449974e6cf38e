package sim

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// traceLen is how many of the last steps a failure report shows.
const traceLen = 200

// step is one traced simulation step. note is set only for rare steps
// (faults, elections, client results) so that tracing costs no allocation on
// the hot path of message delivery.
type step struct {
	at   time.Duration
	kind evKind
	site uint16
	from uint16
	typ  uint8
	size int
	note string
}

// tracer keeps a ring of the last traceLen steps and a running hash of every
// step, used to prove that a seed replays exactly.
type tracer struct {
	ring  [traceLen]step
	next  int
	count uint64
	hash  uint64
	// typeName renders message types in dumps; rep supplies its names.
	typeName func(uint8) string
	// all, when set, keeps every step (replaying one seed), not just the ring.
	all  bool
	full []step
}

func newTracer() *tracer {
	return &tracer{hash: 14695981039346656037}
}

func (t *tracer) add(s step) {
	t.ring[t.next] = s
	t.next = (t.next + 1) % traceLen
	if t.all {
		t.full = append(t.full, s)
	}
	t.count++
	// FNV-1a over the fixed fields; notes are hashed too (they are rare).
	h := t.hash
	mix := func(v uint64) {
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= 1099511628211
			v >>= 8
		}
	}
	mix(uint64(s.at))
	mix(uint64(s.kind) | uint64(s.site)<<8 | uint64(s.from)<<24 | uint64(s.typ)<<40)
	mix(uint64(s.size))
	if s.note != "" {
		f := fnv.New64a()
		f.Write([]byte(s.note))
		mix(f.Sum64())
	}
	t.hash = h
}

// notef traces a rare step with a formatted note.
func (t *tracer) notef(at time.Duration, kind evKind, site uint16, format string, args ...any) {
	t.add(step{at: at, kind: kind, site: site, note: fmt.Sprintf(format, args...)})
}

// dump renders the ring (or every step when all is set), oldest first.
func (t *tracer) dump() string {
	var b strings.Builder
	n := traceLen
	if t.count < traceLen {
		n = int(t.count)
	}
	start := (t.next - n + traceLen) % traceLen
	at := func(i int) step { return t.ring[(start+i)%traceLen] }
	if t.all {
		n = len(t.full)
		at = func(i int) step { return t.full[i] }
	}
	fmt.Fprintf(&b, "last %d of %d steps:\n", n, t.count)
	for i := 0; i < n; i++ {
		s := at(i)
		fmt.Fprintf(&b, "  %12v site %d %-8s", s.at, s.site, s.kind)
		if s.kind == evDeliver {
			name := fmt.Sprint(s.typ)
			if t.typeName != nil {
				name = t.typeName(s.typ)
			}
			fmt.Fprintf(&b, " from %d %s %dB", s.from, name, s.size)
		}
		if s.note != "" {
			b.WriteString(" ")
			b.WriteString(s.note)
		}
		b.WriteString("\n")
	}
	return b.String()
}
