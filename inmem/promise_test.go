package inmem

import (
	"errors"
	"testing"
)

// TestPromiseSurvivesReopen: the election promise is kept in the region, so
// a process that takes the region over reads what its predecessor promised.
func TestPromiseSurvivesReopen(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	if v, err := e.Promised(); err != nil || v != 0 {
		t.Fatalf("new region: promise %d, %v; want 0, nil", v, err)
	}
	for _, v := range []uint32{1, 7, 1 << 31, ^uint32(0)} {
		mustNoErr(t, e.SetPromised(v), "set")
		if got, err := e.Promised(); err != nil || got != v {
			t.Fatalf("promise %d read back as %d, %v", v, got, err)
		}
	}
	mustNoErr(t, e.SetPromised(42), "set")
	mustNoErr(t, e.Close(), "close")
	if _, err := e.Promised(); !errors.Is(err, ErrClosed) {
		t.Fatalf("promise of a closed env: %v", err)
	}
	e2, err := Open(e.Name())
	mustNoErr(t, err, "reopen")
	defer e2.Close()
	if got, err := e2.Promised(); err != nil || got != 42 {
		t.Fatalf("reopened region: promise %d, %v; want 42", got, err)
	}
	// A damaged word is reported, not taken for a promise.
	ua := e2.Region().UserArea()
	ua[promiseOffset+5] ^= 0x10
	if got, err := e2.Promised(); !errors.Is(err, ErrCorrupt) || got != 0 {
		t.Fatalf("damaged promise word: %d, %v; want 0 and ErrCorrupt", got, err)
	}
	// The layout record before it is untouched by the promise.
	if _, err := decodeLayout(ua, e2.npages); err != nil {
		t.Fatalf("layout after promise writes: %v", err)
	}
}
