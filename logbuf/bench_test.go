package logbuf

import "testing"

// BenchmarkAppend appends 128-byte bodies to a 4 MiB log that checkpoints continuously,
// so it wraps and reclaims throughout.
func BenchmarkAppend(b *testing.B) {
	l, _ := testLog(b, 4<<20, 0, nil)
	rec := Record{Type: RecPut, Gen: 1, Body: body(128, 1)}
	b.ReportAllocs()
	b.SetBytes(int64(rec.Size()))
	for i := 0; b.Loop(); i++ {
		if i%1024 == 0 {
			l.Retain(l.End())
		}
		rec.Txn = uint64(i)
		if _, err := l.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead reads contiguous 160-byte records in place.
func BenchmarkRead(b *testing.B) {
	l, _ := testLog(b, 4<<20, 0, nil)
	for i := 0; i < 20000; i++ {
		l.Append(Record{Type: RecPut, Body: body(128, byte(i))})
	}
	scratch := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(160)
	lsn := l.Begin()
	for b.Loop() {
		_, next, err := l.Read(lsn, scratch)
		if err != nil {
			b.Fatal(err)
		}
		if lsn = next; lsn == l.End() {
			lsn = l.Begin()
		}
	}
}

// BenchmarkReadEncoded ships 64 KiB batches of 160-byte records, as the master does for
// a replica catching up. Batches that wrap are copied into dst; the rest are in place.
func BenchmarkReadEncoded(b *testing.B) {
	l, _ := testLog(b, 4<<20, 0, nil)
	for l.End()+160 <= 4<<20 {
		l.Append(Record{Type: RecPut, Body: body(128, 1)})
	}
	dst := make([]byte, 0, 128<<10)
	b.ReportAllocs()
	from := l.Begin()
	var n int64
	for b.Loop() {
		out, next, err := l.ReadEncoded(from, 64<<10, dst)
		if err != nil {
			b.Fatal(err)
		}
		n += int64(len(out))
		if from = next; from == l.End() {
			from = l.Begin()
		}
	}
	b.SetBytes(n / int64(b.N))
}

// BenchmarkAppendEncoded applies 64 KiB batches on a replica.
func BenchmarkAppendEncoded(b *testing.B) {
	var batch []byte
	for len(batch) < 64<<10 {
		batch = EncodeRecord(batch, Record{Type: RecPut, LSN: uint64(len(batch)), Body: body(128, 1)})
	}
	l, _ := testLog(b, 4<<20, 0, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		l.Reset(0)
		if err := l.AppendEncoded(batch); err != nil {
			b.Fatal(err)
		}
	}
}
