package logbuf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// model is the reference: the records in the log as a plain slice.
type model struct {
	recs          []Record // [begin, end), bodies owned by the model
	begin, end    uint64
	retain        uint64
	pins          map[PinID]mpin
	capacity, max uint64
}

type mpin struct {
	lsn      uint64
	deadline time.Time
}

func (m *model) limit(now time.Time) uint64 {
	lim := m.retain
	for id, p := range m.pins {
		if !now.Before(p.deadline) {
			delete(m.pins, id)
			continue
		}
		lim = min(lim, p.lsn)
	}
	return lim
}

// room returns how many leading records must be dropped to fit size, ok false if the
// log is full.
func (m *model) room(size uint64, now time.Time) (int, bool) {
	used := m.end - m.begin
	if m.capacity-used >= size {
		return 0, true
	}
	lim := m.limit(now)
	drop := 0
	pos := m.begin
	for m.capacity-(m.end-pos) < size {
		if drop == len(m.recs) {
			return 0, false
		}
		r := m.recs[drop]
		if r.LSN >= lim || r.LSN+uint64(r.Size()) > lim {
			return 0, false
		}
		pos += uint64(r.Size())
		drop++
	}
	return drop, true
}

func (m *model) drop(k int) {
	for _, r := range m.recs[:k] {
		m.begin += uint64(r.Size())
	}
	m.recs = m.recs[k:]
}

func (m *model) index(lsn uint64) int {
	for i, r := range m.recs {
		if r.LSN == lsn {
			return i
		}
	}
	return -1
}

func sameRecord(a, b Record) bool {
	return a.Type == b.Type && a.Flags == b.Flags && a.Gen == b.Gen && a.Txn == b.Txn && a.LSN == b.LSN && bytes.Equal(a.Body, b.Body)
}

// TestModel drives a small log through thousands of random operations that wrap it many
// times, comparing every observable result with the slice model.
func TestModel(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := 0; round < 12*soak(t); round++ {
		capacity := 1024 + rng.IntN(6000)
		start := rng.Uint64N(1 << 40)
		runModel(t, rng, capacity, start, 4000)
	}
}

func runModel(t *testing.T, rng *rand.Rand, capacity int, start uint64, steps int) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	area := alignedArea(ControlSize + capacity)
	l, err := Format(area, start, Options{Now: clk.now, MaxPins: 4})
	if err != nil {
		t.Fatal(err)
	}
	m := &model{begin: start, end: start, retain: start, pins: map[PinID]mpin{}, capacity: uint64(capacity),
		max: uint64(min(capacity/4, MaxRecordSize))}
	var scratch, dst []byte
	randBody := func() []byte {
		n := rng.IntN(64)
		if rng.IntN(6) == 0 {
			n = rng.IntN(int(m.max) - HeaderSize + 1)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	randRec := func() Record {
		return Record{Type: uint8(1 + rng.IntN(7)), Flags: uint8(rng.Uint32()), Gen: rng.Uint32N(5), Txn: rng.Uint64N(100), Body: randBody()}
	}
	boundary := func() uint64 { // a record boundary in [begin, end]
		i := rng.IntN(len(m.recs) + 1)
		if i == len(m.recs) {
			return m.end
		}
		return m.recs[i].LSN
	}
	wraps := uint64(0)
	for step := 0; step < steps; step++ {
		switch op := rng.IntN(100); {
		case op < 40: // Append
			r := randRec()
			drop, ok := m.room(uint64(r.Size()), clk.now())
			lsn, err := l.Append(r)
			if !ok {
				if !errors.Is(err, ErrLogFull) {
					t.Fatalf("step %d: Append(%d B) = %v, model says full", step, r.Size(), err)
				}
				break
			}
			if err != nil || lsn != m.end {
				t.Fatalf("step %d: Append(%d B) = %d, %v; want LSN %d", step, r.Size(), lsn, err, m.end)
			}
			m.drop(drop)
			r.LSN = lsn
			m.recs = append(m.recs, r)
			m.end += uint64(r.Size())
		case op < 50: // AppendEncoded, sometimes damaged
			var batch []byte
			pos := m.end
			var recs []Record
			for k := 1 + rng.IntN(3); k > 0; k-- {
				r := randRec()
				r.LSN = pos
				batch = EncodeRecord(batch, r)
				recs = append(recs, r)
				pos += uint64(r.Size())
			}
			damage := rng.IntN(5)
			switch damage {
			case 1:
				batch[len(batch)-recs[len(recs)-1].Size()+hCRC] ^= 0x40 // the last record's crc
			case 2:
				batch[hLSN] ^= 1 // first LSN wrong
			}
			before := l.Stats()
			drop, ok := m.room(uint64(len(batch)), clk.now())
			err := l.AppendEncoded(batch)
			switch {
			case damage == 1 && !errors.Is(err, ErrCorrupt), damage == 2 && !errors.Is(err, ErrLSNMismatch):
				t.Fatalf("step %d: damaged batch (%d) = %v", step, damage, err)
			case damage == 0 && !ok && !errors.Is(err, ErrLogFull):
				t.Fatalf("step %d: AppendEncoded(%d B) = %v, model says full", step, len(batch), err)
			case damage == 0 && ok && err != nil:
				t.Fatalf("step %d: AppendEncoded(%d B) = %v", step, len(batch), err)
			}
			if err != nil {
				if after := l.Stats(); after.Begin != before.Begin || after.End != before.End {
					t.Fatalf("step %d: failed AppendEncoded moved the log: %+v -> %+v", step, before, after)
				}
				break
			}
			m.drop(drop)
			m.recs = append(m.recs, recs...)
			m.end = pos
		case op < 55: // Retain
			lsn := m.begin + rng.Uint64N(m.end-m.begin+20)
			l.Retain(lsn)
			if lsn = min(lsn, m.end); lsn > m.retain {
				m.retain = lsn
			}
		case op < 60: // Pin
			lsn := boundary()
			id, err := l.Pin(lsn, time.Duration(1+rng.IntN(50))*time.Millisecond)
			live := 0
			m.limit(clk.now()) // drop expired
			live = len(m.pins)
			if live >= 4 {
				if !errors.Is(err, ErrTooManyPins) {
					t.Fatalf("step %d: Pin with %d live = %v", step, live, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("step %d: Pin(%d): %v", step, lsn, err)
			}
			m.pins[id] = mpin{lsn: lsn, deadline: l.pins[int(uint32(id))-1].deadline}
		case op < 63: // Unpin
			for id := range m.pins {
				l.Unpin(id)
				delete(m.pins, id)
				break
			}
		case op < 68:
			clk.advance(time.Duration(rng.IntN(20)) * time.Millisecond)
		case op < 71: // Truncate to a boundary
			lsn := boundary()
			if err := l.Truncate(lsn); err != nil {
				t.Fatalf("step %d: Truncate(%d) in [%d,%d]: %v", step, lsn, m.begin, m.end, err)
			}
			m.recs = m.recs[:m.index2(lsn)]
			m.end = lsn
			m.retain = min(m.retain, lsn)
			for id, p := range m.pins {
				if p.lsn > lsn {
					p.lsn = lsn
					m.pins[id] = p
				}
			}
		case op < 72: // Truncate to a non-boundary is refused
			if len(m.recs) > 0 {
				lsn := m.recs[0].LSN + 1
				if err := l.Truncate(lsn); err == nil {
					t.Fatalf("step %d: Truncate(%d) to a non-boundary accepted", step, lsn)
				}
			}
		case op < 85: // Read
			if len(m.recs) == 0 {
				if _, _, err := l.Read(m.end, scratch); !errors.Is(err, ErrBeyondEnd) {
					t.Fatalf("step %d: Read(End) on empty log = %v", step, err)
				}
				break
			}
			i := rng.IntN(len(m.recs))
			got, next, err := l.Read(m.recs[i].LSN, scratch)
			if err != nil || !sameRecord(got, m.recs[i]) || next != m.recs[i].LSN+uint64(m.recs[i].Size()) {
				t.Fatalf("step %d: Read(%d) = %v next %d err %v; want %v", step, m.recs[i].LSN, got, next, err, m.recs[i])
			}
			if m.begin > start {
				if _, _, err := l.Read(m.begin-1, scratch); !errors.Is(err, ErrLogGone) {
					t.Fatalf("step %d: Read(Begin-1) = %v, want ErrLogGone", step, err)
				}
			}
		case op < 95: // ReadEncoded
			from := boundary()
			maxBytes := rng.IntN(2 * capacity)
			var want []byte
			i := m.index2(from)
			for ; i < len(m.recs); i++ {
				if len(want) > 0 && len(want)+m.recs[i].Size() > maxBytes {
					break
				}
				want = EncodeRecord(want, m.recs[i])
			}
			got, next, err := l.ReadEncoded(from, maxBytes, dst)
			if err != nil || !bytes.Equal(got, want) || next != from+uint64(len(want)) {
				t.Fatalf("step %d: ReadEncoded(%d, %d) = %d B next %d err %v; want %d B", step, from, maxBytes, len(got), next, err, len(want))
			}
			if cap(got) > cap(dst) && len(got) > 0 && !aliases(got, area) {
				dst = got
			}
		case op < 98: // full iteration
			it := l.Iter(m.begin)
			k := 0
			for it.Next() {
				if k >= len(m.recs) || !sameRecord(it.Record(), m.recs[k]) {
					t.Fatalf("step %d: iteration record %d = %v", step, k, it.Record())
				}
				k++
			}
			if it.Err() != nil || k != len(m.recs) {
				t.Fatalf("step %d: iteration stopped after %d of %d: %v", step, k, len(m.recs), it.Err())
			}
			if err := l.Check(); err != nil {
				t.Fatalf("step %d: Check: %v", step, err)
			}
		default: // Reset, rarely
			if rng.IntN(4) == 0 {
				s := m.end + rng.Uint64N(1000)
				l.Reset(s)
				m.recs, m.begin, m.end, m.retain = nil, s, s, s
				clear(m.pins)
			}
		}
		if b, e := l.Begin(), l.End(); b != m.begin || e != m.end {
			t.Fatalf("step %d: log [%d,%d), model [%d,%d)", step, b, e, m.begin, m.end)
		}
		m.limit(clk.now()) // forget expired pins
		if st := l.Stats(); st.Retain != m.retain || st.Used != m.end-m.begin || st.Pins != len(m.pins) {
			t.Fatalf("step %d: stats %+v, model retain %d pins %d", step, st, m.retain, len(m.pins))
		}
		wraps = (m.end - l.Base()) / uint64(capacity)
	}
	// Reopening the area sees the same log.
	l2, err := Open(area, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Begin() != m.begin || l2.End() != m.end || l2.Check() != nil {
		t.Fatalf("reopened log [%d,%d) check %v, want [%d,%d)", l2.Begin(), l2.End(), l2.Check(), m.begin, m.end)
	}
	st := l.Stats()
	if total := st.Bytes / uint64(capacity); total < 5 {
		t.Errorf("capacity %d: the log wrapped only %d times; the test does not exercise wrap-around", capacity, total)
	}
	t.Logf("capacity %d: %d appends, %d bytes (%d wraps), %d reclaimed, %d full errors, %d wraps since the last reset",
		capacity, st.Appends, st.Bytes, st.Bytes/uint64(capacity), st.ReclaimedBytes, st.FullErrors, wraps)
}

// index2 returns the index of the record at boundary lsn, len(recs) for end.
func (m *model) index2(lsn uint64) int {
	if lsn == m.end {
		return len(m.recs)
	}
	return m.index(lsn)
}

func aliases(b, area []byte) bool {
	if len(b) == 0 {
		return false
	}
	p := &b[0]
	for i := range area {
		if &area[i] == p {
			return true
		}
	}
	return false
}
