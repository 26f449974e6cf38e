package logbuf

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// soak scales randomized tests: BOARDHA_SOAK=N runs N times as many rounds (default 1),
// for long runs outside the CI time budget.
func soak(t testing.TB) int {
	n, err := strconv.Atoi(os.Getenv("BOARDHA_SOAK"))
	if err != nil || n < 1 {
		return 1
	}
	t.Logf("soak: %dx rounds", n)
	return n
}

// testSeed returns BOARDHA_SEED if set, else a fresh seed, logged so failures replay.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("BOARDHA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BOARDHA_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with BOARDHA_SEED=%d)", seed, seed)
	return seed
}

// alignedArea returns a zeroed, 8-byte aligned byte slice of n bytes, like a page run.
func alignedArea(n int) []byte {
	words := make([]uint64, (n+7)/8+1)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)[:n:n]
}

// fakeClock is a manual clock for pin expiry.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func testLog(t testing.TB, capacity int, start uint64, clk *fakeClock) (*Log, []byte) {
	t.Helper()
	area := alignedArea(ControlSize + capacity)
	opt := Options{}
	if clk != nil {
		opt.Now = clk.now
	}
	l, err := Format(area, start, opt)
	if err != nil {
		t.Fatal(err)
	}
	return l, area
}

func body(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}
