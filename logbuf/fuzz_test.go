package logbuf

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeRecord: DecodeRecord never panics, errors wrap ErrCorrupt, and an accepted
// record re-encodes to exactly the bytes it was decoded from.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(EncodeRecord(nil, Record{Type: RecPut, Gen: 1, Txn: 2, LSN: 3, Body: []byte("k\x00v")}))
	f.Add(EncodeRecord(nil, Record{Type: RecCommit, LSN: 1 << 40}))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if n < HeaderSize || n > len(b) || n != r.Size() {
			t.Fatalf("consumed %d of %d bytes for a %d-byte record", n, len(b), r.Size())
		}
		b6, b7 := b[6], b[7] // the reserved field is not part of Record
		enc := EncodeRecord(nil, r)
		enc[6], enc[7] = b6, b7
		if b6 != 0 || b7 != 0 {
			return // crc covered non-zero reserved bytes; re-encoding zeroes them
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", enc, b[:n])
		}
	})
}

// seedArea returns a formatted 2 KiB log area with a few records, one wrapped.
func seedArea() []byte {
	area := alignedArea(ControlSize + 2048)
	l, _ := Format(area, 100, Options{})
	for i := 0; i < 20; i++ {
		l.Retain(l.End())
		l.Append(Record{Type: RecPut, Txn: uint64(i), Body: body(90, byte(i))})
	}
	return area
}

// FuzzOpen: Open never panics on any area; whatever it accepts can be read, iterated,
// checked and appended to without panicking, and every error is a sentinel.
func FuzzOpen(f *testing.F) {
	f.Add(seedArea())
	empty := alignedArea(ControlSize + MinCapacity)
	Format(empty, 0, Options{})
	f.Add(empty)
	f.Add(make([]byte, ControlSize+MinCapacity))
	f.Fuzz(func(t *testing.T, b []byte) {
		area := alignedArea(len(b))
		copy(area, b)
		l, err := Open(area, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadArea) {
				t.Fatalf("Open error %v is not ErrCorrupt/ErrBadArea", err)
			}
			return
		}
		known := func(err error) {
			if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrLogGone) && !errors.Is(err, ErrBeyondEnd) &&
				!errors.Is(err, ErrLogFull) && !errors.Is(err, ErrRecordTooLarge) {
				t.Fatalf("unexpected error %v", err)
			}
		}
		it := l.Iter(l.Begin())
		for it.Next() {
			_ = it.Record()
		}
		known(it.Err())
		known(l.Check())
		_, _, err = l.ReadEncoded(l.Begin(), 4096, nil)
		known(err)
		_, _, err = l.Read(l.Begin(), nil)
		known(err)
		l.Retain(l.End())
		for i := 0; i < 4; i++ {
			_, err = l.Append(Record{Type: RecPut, Body: make([]byte, 100)})
			known(err)
		}
		known(l.Truncate(l.Begin()))
	})
}

// FuzzAppendEncoded: a replica fed arbitrary bytes as a batch never panics; a rejected
// batch leaves the area byte for byte unchanged; an accepted one reads back intact.
func FuzzAppendEncoded(f *testing.F) {
	var batch []byte
	for i := 0; i < 3; i++ {
		batch = EncodeRecord(batch, Record{Type: RecPut, Txn: 5, LSN: 1000 + uint64(len(batch)), Body: body(40*i, byte(i))})
	}
	f.Add(batch)
	f.Add(batch[:50])
	f.Add(EncodeRecord(nil, Record{Type: RecCommit, LSN: 1001}))
	f.Fuzz(func(t *testing.T, b []byte) {
		area := alignedArea(ControlSize + 2048)
		l, err := Format(area, 1000, Options{})
		if err != nil {
			t.Fatal(err)
		}
		before := bytes.Clone(area)
		if err := l.AppendEncoded(b); err != nil {
			if !bytes.Equal(area, before) {
				t.Fatalf("rejected batch (%v) changed the log", err)
			}
			return
		}
		if l.End() != 1000+uint64(len(b)) {
			t.Fatalf("accepted %d bytes, end moved to %d", len(b), l.End())
		}
		if err := l.Check(); err != nil {
			t.Fatalf("accepted batch fails Check: %v", err)
		}
		got, _, err := l.ReadEncoded(1000, len(b), nil)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("ReadEncoded after accepting: %v", err)
		}
	})
}
