package logbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEncodeDecode(t *testing.T) {
	r := Record{Type: RecPut, Flags: 3, Gen: 9, Txn: 77, LSN: 1 << 50, Body: []byte("key=value")}
	b := EncodeRecord([]byte("prefix"), r)
	if len(b) != 6+HeaderSize+9 || binary.LittleEndian.Uint32(b[6:]) != uint32(HeaderSize+9) {
		t.Fatalf("encoding %x", b)
	}
	got, n, err := DecodeRecord(b[6:])
	if err != nil || n != HeaderSize+9 || !sameRecord(got, r) {
		t.Fatalf("DecodeRecord = %v, %d, %v", got, n, err)
	}
	for i := 6; i < len(b); i++ {
		c := bytes.Clone(b[6:])
		c[i-6] ^= 0x10
		if _, _, err := DecodeRecord(c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: DecodeRecord = %v, want ErrCorrupt", i-6, err)
		}
	}
	if _, _, err := DecodeRecord(b[6 : len(b)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short record: %v", err)
	}
}

func TestFormatOpen(t *testing.T) {
	l, area := testLog(t, 4096, 1000, nil)
	for i := 0; i < 5; i++ {
		if _, err := l.Append(Record{Type: RecPut, Body: body(100, byte(i))}); err != nil {
			t.Fatal(err)
		}
	}
	l.Retain(1000 + 132*2)
	o, err := Open(area, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Begin() != 1000 || o.End() != 1000+5*132 || o.Retained() != 1000+264 || o.Check() != nil {
		t.Fatalf("reopened: begin %d end %d retain %d check %v", o.Begin(), o.End(), o.Retained(), o.Check())
	}
	r, _, err := o.Read(1000+132*4, nil)
	if err != nil || !bytes.Equal(r.Body, body(100, 4)) {
		t.Fatalf("read through reopened log: %v %v", r, err)
	}
	ro, err := Open(area, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Append(Record{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append read-only = %v", err)
	}
	if err := ro.AppendEncoded(EncodeRecord(nil, Record{LSN: ro.End()})); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("AppendEncoded read-only = %v", err)
	}
	if err := ro.Truncate(ro.End()); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Truncate read-only = %v", err)
	}

	corrupt := func(name string, f func(b []byte)) {
		c := alignedArea(len(area))
		copy(c, area)
		f(c)
		if _, err := Open(c, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Open = %v, want ErrCorrupt", name, err)
		}
	}
	corrupt("magic", func(b []byte) { b[0] = 'x' })
	corrupt("version", func(b []byte) { b[cVersion] = 9 })
	corrupt("capacity", func(b []byte) { binary.LittleEndian.PutUint64(b[cCapacity:], 100) })
	corrupt("begin after end", func(b []byte) { binary.LittleEndian.PutUint64(b[cBegin:], 1<<40) })
	corrupt("end too far", func(b []byte) { binary.LittleEndian.PutUint64(b[cEnd:], 1<<40) })
	corrupt("retain after end", func(b []byte) { binary.LittleEndian.PutUint64(b[cRetain:], 1<<40) })
	corrupt("base after begin", func(b []byte) { binary.LittleEndian.PutUint64(b[cBase:], 1<<40) })
	if _, err := Open(area[:len(area)-8], Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of a shorter area = %v, want ErrCorrupt (capacity mismatch)", err)
	}
	if _, err := Format(alignedArea(ControlSize+100), 0, Options{}); !errors.Is(err, ErrBadArea) {
		t.Errorf("Format of a tiny area = %v, want ErrBadArea", err)
	}
	if _, err := Format(alignedArea(8192)[1:], 0, Options{}); !errors.Is(err, ErrBadArea) {
		t.Errorf("Format of a misaligned area = %v, want ErrBadArea", err)
	}
	if _, err := Format(alignedArea(8192), 0, Options{MaxPins: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Format with MaxPins -1 = %v, want ErrInvalid", err)
	}
}

func fill(t *testing.T, l *Log, bodyLen int) int {
	t.Helper()
	n := 0
	for {
		_, err := l.Append(Record{Type: RecPut, Txn: uint64(n), Body: body(bodyLen, byte(n))})
		if errors.Is(err, ErrLogFull) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
}

func TestLogFullLeavesLogIntact(t *testing.T) {
	l, area := testLog(t, 2048, 0, nil)
	n := fill(t, l, 90) // 122-byte records
	if n != 2048/122 {
		t.Fatalf("%d records fit, want %d", n, 2048/122)
	}
	before := bytes.Clone(area)
	st := l.Stats()
	_, err := l.Append(Record{Type: RecPut, Body: body(90, 1)})
	if !errors.Is(err, ErrLogFull) {
		t.Fatalf("Append to a full log = %v", err)
	}
	for _, want := range []string{"need 122 bytes", "of 2048 free", "retain 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ErrLogFull message %q lacks %q", err, want)
		}
	}
	if !bytes.Equal(area, before) {
		t.Fatal("ErrLogFull changed the area")
	}
	if err := l.AppendEncoded(EncodeRecord(nil, Record{LSN: l.End(), Body: body(200, 0)})); !errors.Is(err, ErrLogFull) || !bytes.Equal(area, before) {
		t.Fatalf("AppendEncoded to a full log = %v (area changed: %v)", err, !bytes.Equal(area, before))
	}
	// Retaining part of the log makes exactly that part reclaimable.
	l.Retain(3 * 122)
	for i := 0; i < 3; i++ {
		if _, err := l.Append(Record{Type: RecPut, Body: body(90, 1)}); err != nil {
			t.Fatalf("append %d after Retain: %v", i, err)
		}
	}
	if _, err := l.Append(Record{Type: RecPut, Body: body(90, 1)}); !errors.Is(err, ErrLogFull) {
		t.Fatalf("4th append after Retain(3 records) = %v, want ErrLogFull", err)
	}
	if l.Begin() != 3*122 || l.Stats().FullErrors != 4 || st.FullErrors != 1 {
		t.Fatalf("begin %d stats %+v", l.Begin(), l.Stats())
	}
}

func TestLogGone(t *testing.T) {
	l, _ := testLog(t, 2048, 500, nil)
	first, _ := l.Append(Record{Body: body(90, 0)})
	for i := 0; i < 100; i++ {
		l.Retain(l.End())
		if _, err := l.Append(Record{Body: body(90, byte(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := l.Read(first, nil); !errors.Is(err, ErrLogGone) {
		t.Fatalf("Read of an overwritten LSN = %v, want ErrLogGone", err)
	}
	if _, _, err := l.ReadEncoded(first, 1000, nil); !errors.Is(err, ErrLogGone) {
		t.Fatalf("ReadEncoded of an overwritten LSN = %v", err)
	}
	if _, err := l.Pin(first, time.Second); !errors.Is(err, ErrLogGone) {
		t.Fatalf("Pin of an overwritten LSN = %v", err)
	}
	if err := l.Truncate(first); !errors.Is(err, ErrLogGone) {
		t.Fatalf("Truncate below Begin = %v", err)
	}
	it := l.Iter(first)
	if it.Next() || !errors.Is(it.Err(), ErrLogGone) {
		t.Fatalf("iterating from a gone LSN: %v", it.Err())
	}
	if _, _, err := l.Read(l.End(), nil); !errors.Is(err, ErrBeyondEnd) {
		t.Fatalf("Read(End) = %v", err)
	}
	if _, _, err := l.ReadEncoded(l.End()+1, 10, nil); !errors.Is(err, ErrBeyondEnd) {
		t.Fatalf("ReadEncoded past End = %v", err)
	}
	if b, next, err := l.ReadEncoded(l.End(), 10, nil); err != nil || len(b) != 0 || next != l.End() {
		t.Fatalf("ReadEncoded(End) = %d B, %d, %v", len(b), next, err)
	}
}

// TestSplitRecords places records across the physical end of the ring at every offset
// (header split, body split) and reads them back through every path.
func TestSplitRecords(t *testing.T) {
	const capacity = 1024
	for shift := 0; shift < 80; shift++ {
		l, area := testLog(t, capacity, 7, nil)
		// Move the write position to capacity-shift, then wrap a 100-byte record over it.
		pad := capacity - shift - HeaderSize
		if pad < HeaderSize {
			continue
		}
		for rem := pad + HeaderSize; rem > 0; {
			sz := min(l.MaxRecord(), rem)
			if rem-sz > 0 && rem-sz < HeaderSize {
				sz = rem - HeaderSize
			}
			if _, err := l.Append(Record{Body: make([]byte, sz-HeaderSize)}); err != nil {
				t.Fatal(err)
			}
			rem -= sz
		}
		l.Retain(l.End())
		want := Record{Type: RecCommit, Gen: 3, Txn: 11, Body: body(68, byte(shift))}
		lsn, err := l.Append(want)
		if err != nil {
			t.Fatalf("shift %d: %v", shift, err)
		}
		want.LSN = lsn
		got, next, err := l.Read(lsn, nil)
		if err != nil || !sameRecord(got, want) || next != lsn+100 {
			t.Fatalf("shift %d: Read = %v %v", shift, got, err)
		}
		split := shift < 100 && shift > 0
		if aliases(got.Body, area) == split && len(got.Body) > 0 {
			t.Fatalf("shift %d: body aliases the area: %v, want %v", shift, !split, !split)
		}
		enc, _, err := l.ReadEncoded(lsn, 1<<20, nil)
		if err != nil || !bytes.Equal(enc, EncodeRecord(nil, want)) {
			t.Fatalf("shift %d: ReadEncoded = %x, %v", shift, enc, err)
		}
		// A replica receiving it appends it at the same place (also split).
		r, _ := testLog(t, capacity, 7, nil)
		r.Reset(lsn)
		if err := r.AppendEncoded(enc); err != nil {
			t.Fatalf("shift %d: replica AppendEncoded: %v", shift, err)
		}
		if got, _, err := r.Read(lsn, make([]byte, 0, 200)); err != nil || !sameRecord(got, want) {
			t.Fatalf("shift %d: replica Read = %v, %v", shift, got, err)
		}
	}
}

func TestAppendEncodedRejects(t *testing.T) {
	l, area := testLog(t, 4096, 100, nil)
	l.Append(Record{Body: body(10, 1)})
	end := l.End()
	good := EncodeRecord(nil, Record{Type: RecPut, LSN: end, Body: body(20, 2)})
	good = EncodeRecord(good, Record{Type: RecCommit, LSN: end + 52, Body: body(8, 3)})
	before := bytes.Clone(area)
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"gap at start": {EncodeRecord(nil, Record{LSN: end + 1}), ErrLSNMismatch},
		"old LSN":      {EncodeRecord(nil, Record{LSN: end - 42}), ErrLSNMismatch},
		"gap inside": {append(EncodeRecord(nil, Record{LSN: end, Body: body(20, 2)}),
			EncodeRecord(nil, Record{LSN: end + 53})...), ErrLSNMismatch},
		"bad crc in second": {func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), ErrCorrupt},
		"stray tail":        {append(bytes.Clone(good), 1, 2, 3), ErrCorrupt},
		"short length":      {func() []byte { b := bytes.Clone(good); b[0] = 4; return b }(), ErrCorrupt},
		"length past batch": {good[:60], ErrCorrupt},
		"too large":         {EncodeRecord(nil, Record{LSN: end, Body: make([]byte, 2000)}), ErrRecordTooLarge},
	}
	for name, tc := range cases {
		if err := l.AppendEncoded(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: AppendEncoded = %v, want %v", name, err, tc.want)
		}
		if !bytes.Equal(area, before) || l.End() != end {
			t.Fatalf("%s: rejected batch changed the log", name)
		}
	}
	if err := l.AppendEncoded(good); err != nil || l.End() != end+52+40 {
		t.Fatalf("good batch: %v, end %d", err, l.End())
	}
	if err := l.AppendEncoded(nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

func TestReadEncodedLimits(t *testing.T) {
	l, area := testLog(t, 8192, 0, nil)
	for i := 0; i < 10; i++ {
		l.Append(Record{Body: body(68, byte(i))}) // 100-byte records
	}
	big, _ := l.Append(Record{Body: body(968, 9)}) // 1000 bytes
	b, next, err := l.ReadEncoded(0, 350, nil)
	if err != nil || len(b) != 300 || next != 300 || !aliases(b, area) {
		t.Fatalf("ReadEncoded(0, 350) = %d B next %d alias %v err %v", len(b), next, aliases(b, area), err)
	}
	b, next, err = l.ReadEncoded(big, 10, nil)
	if err != nil || len(b) != 1000 || next != big+1000 {
		t.Fatalf("first record larger than maxBytes: %d B next %d err %v; want it alone", len(b), next, err)
	}
	if _, _, err := l.ReadEncoded(50, 1000, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadEncoded from a non-boundary = %v, want ErrCorrupt", err)
	}
}

func TestPins(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	l, _ := testLog(t, 2048, 0, clk)
	n := fill(t, l, 90)
	l.Retain(l.End())
	id, err := l.Pin(122, time.Second) // holds everything from the second record on
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Record{Body: body(90, 0)}); err != nil {
		t.Fatalf("first record is not pinned: %v", err)
	}
	if _, err := l.Append(Record{Body: body(90, 0)}); !errors.Is(err, ErrLogFull) || !strings.Contains(err.Error(), "1 live pins") {
		t.Fatalf("append over a pin = %v", err)
	}
	clk.advance(time.Second) // expired: no longer holds
	if _, err := l.Append(Record{Body: body(90, 0)}); err != nil {
		t.Fatalf("append after the pin expired: %v", err)
	}
	l.Unpin(id) // stale: ignored
	if l.Stats().Pins != 0 {
		t.Fatalf("pins %d", l.Stats().Pins)
	}
	var ids []PinID
	for i := 0; i < DefaultMaxPins; i++ {
		id, err := l.Pin(l.End(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := l.Pin(l.End(), time.Minute); !errors.Is(err, ErrTooManyPins) {
		t.Fatalf("pin %d = %v, want ErrTooManyPins", DefaultMaxPins+1, err)
	}
	l.Unpin(ids[3])
	l.Unpin(ids[3])
	if _, err := l.Pin(l.End(), time.Minute); err != nil {
		t.Fatalf("pin after unpin: %v", err)
	}
	if _, err := l.Pin(l.End()+1, time.Minute); !errors.Is(err, ErrBeyondEnd) {
		t.Fatalf("pin past End = %v", err)
	}
	if _, err := l.Pin(l.End(), 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pin with ttl 0 = %v", err)
	}
	_ = n
}

func TestTruncateReset(t *testing.T) {
	l, _ := testLog(t, 4096, 10, nil)
	var lsns []uint64
	for i := 0; i < 5; i++ {
		lsn, _ := l.Append(Record{Body: body(18, byte(i))}) // 50 bytes
		lsns = append(lsns, lsn)
	}
	l.Retain(lsns[4])
	if err := l.Truncate(lsns[2] + 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Truncate to a non-boundary = %v", err)
	}
	if err := l.Truncate(l.End() + 50); !errors.Is(err, ErrBeyondEnd) {
		t.Fatalf("Truncate past End = %v", err)
	}
	if err := l.Truncate(lsns[2]); err != nil {
		t.Fatal(err)
	}
	if l.End() != lsns[2] || l.Retained() != lsns[2] {
		t.Fatalf("after Truncate end %d retain %d, want %d", l.End(), l.Retained(), lsns[2])
	}
	lsn, _ := l.Append(Record{Body: body(5, 9)})
	if lsn != lsns[2] {
		t.Fatalf("append after Truncate at %d, want %d", lsn, lsns[2])
	}
	if err := l.Truncate(l.End()); err != nil {
		t.Fatalf("Truncate(End): %v", err)
	}
	l.Reset(1 << 33)
	if l.Begin() != 1<<33 || l.End() != 1<<33 || l.Stats().Used != 0 {
		t.Fatalf("after Reset: %+v", l.Stats())
	}
	if lsn, err := l.Append(Record{Body: body(5, 9)}); err != nil || lsn != 1<<33 {
		t.Fatalf("append after Reset = %d, %v", lsn, err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	l, _ := testLog(t, 4096, 0, nil)
	if l.MaxRecord() != 1024 {
		t.Fatalf("MaxRecord %d, want capacity/4", l.MaxRecord())
	}
	if _, err := l.Append(Record{Body: make([]byte, 1024-HeaderSize)}); err != nil {
		t.Fatal(err)
	}
	_, err := l.Append(Record{Body: make([]byte, 1024-HeaderSize+1)})
	if !errors.Is(err, ErrRecordTooLarge) || !strings.Contains(err.Error(), "1025 bytes") {
		t.Fatalf("oversized Append = %v", err)
	}
	big, _ := testLog(t, 16<<20, 0, nil)
	if big.MaxRecord() != MaxRecordSize {
		t.Fatalf("MaxRecord of a 16 MiB log = %d, want %d", big.MaxRecord(), MaxRecordSize)
	}
}
