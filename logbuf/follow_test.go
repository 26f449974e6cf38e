package logbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seed61e250c8/boardha/shm"
)

// TestConcurrentFollower: a follower reads the log while the writer appends and reclaims
// continuously, as a reader process mapping the area does. Every record it gets must be
// the one written at that LSN; failures must be ErrLogGone (overwritten meanwhile) or
// ErrBeyondEnd. The area is mmap'd memory (an shm private region), outside the Go heap,
// where cross-process readers live.
func TestConcurrentFollower(t *testing.T) {
	reg, err := shm.Create("", shm.Options{Size: 64 << 10, PageSize: 4096, MaxReaders: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	area, err := reg.Pages(reg.FirstDataPage(), 4)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Format(area, 1000, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(area, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	// The body is a pure function of the txn number, so the follower can check it.
	mkBody := func(txn uint64, dst []byte) []byte {
		n := int(txn % 300)
		dst = dst[:0]
		for i := 0; i < n; i++ {
			dst = append(dst, byte(txn)+byte(i))
		}
		return dst
	}
	const records = 200000
	var done atomic.Bool
	var wg sync.WaitGroup
	var got, gone atomic.Uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var scratch, want, dst, cp []byte
		for !done.Load() {
			lsn := r.Begin()
			for lsn < r.End() {
				rec, next, err := r.Read(lsn, scratch)
				if err != nil {
					if !errors.Is(err, ErrLogGone) {
						t.Errorf("follower Read(%d): %v", lsn, err)
						return
					}
					gone.Add(1)
					break
				}
				if rec.Body != nil && cap(rec.Body) > cap(scratch) && !aliases(rec.Body, area) {
					scratch = rec.Body[:0]
				}
				// The follower protocol: copy what you need, then check the record was
				// not reclaimed meanwhile; only then is the copy trustworthy.
				cp = append(cp[:0], rec.Body...)
				if r.Begin() > lsn {
					gone.Add(1)
					break
				}
				want = mkBody(rec.Txn, want)
				if rec.LSN != lsn || !bytes.Equal(cp, want) {
					t.Errorf("follower read a wrong record at %d: %v", lsn, rec)
					return
				}
				got.Add(1)
				lsn = next
			}
			from := r.Begin()
			b, _, err := r.ReadEncoded(from, 4096, dst)
			if err != nil && !errors.Is(err, ErrLogGone) {
				t.Errorf("follower ReadEncoded: %v", err)
				return
			}
			b = append(cp[:0], b...)
			cp = b
			if err == nil && r.Begin() <= from && len(b) >= HeaderSize {
				if _, _, derr := DecodeRecord(b); derr != nil {
					t.Errorf("ReadEncoded returned an undecodable batch: %v", derr)
					return
				}
				if binary.LittleEndian.Uint32(b) > uint32(len(b)) {
					t.Error("ReadEncoded cut a record")
					return
				}
			}
		}
	}()
	var body []byte
	for txn := uint64(0); txn < records && !t.Failed(); txn++ {
		w.Retain(w.End())
		body = mkBody(txn, body)
		if _, err := w.Append(Record{Type: RecPut, Txn: txn, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	t.Logf("follower read %d records, lost the race to reclamation %d times; log wrapped %d times",
		got.Load(), gone.Load(), (w.End()-1000)/uint64(w.Capacity()))
	if got.Load() == 0 {
		t.Fatal("follower never read a record")
	}
}
