package shm

import (
	"bytes"
	"errors"
	"testing"
)

// validHeaderBytes returns the first HeaderSize bytes of a freshly created region.
func validHeaderBytes(tb testing.TB, opt Options) []byte {
	r, err := Create("", opt)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	return append([]byte(nil), r.Data()[:HeaderSize]...)
}

// FuzzDecodeHeader: DecodeHeader never panics; every error wraps ErrCorrupt; an accepted
// header re-encodes to the same static bytes and describes a consistent geometry.
func FuzzDecodeHeader(f *testing.F) {
	f.Add(validHeaderBytes(f, Options{Size: 1 << 20}))
	f.Add(validHeaderBytes(f, Options{Size: 1 << 20, PageSize: 512, MaxReaders: 1}))
	f.Add(validHeaderBytes(f, Options{Size: 1 << 22, PageSize: 65536, MaxReaders: 1000}))
	f.Add([]byte{})
	f.Add([]byte(regionMagicText))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if h.NumPages <= h.FirstDataPage || h.RegionSize != h.NumPages*uint64(h.PageSize) || !validPageSize(uint64(h.PageSize)) {
			t.Fatalf("accepted inconsistent header %+v", h)
		}
		if h.FirstDataPage*uint64(h.PageSize) < readerTableOff+uint64(h.ReaderSlots)*ReaderSlotSize {
			t.Fatalf("accepted header whose reader table overlaps data pages: %+v", h)
		}
		out := make([]byte, HeaderSize)
		h2 := h
		h2.encode(out)
		if !bytes.Equal(out[:staticLen+4], b[:staticLen+4]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", out[:staticLen+4], b[:staticLen+4])
		}
	})
}
