package shm

import (
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
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

// testSeed returns the seed for randomized tests: BOARDHA_SEED if set, else a fresh one,
// logged so a failure replays.
func testSeed(t *testing.T) uint64 {
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

func TestPoolFull(t *testing.T) {
	r := newRegion(t, "", Options{Size: 64 << 10, PageSize: 4096, MaxReaders: 1})
	a := r.Allocator()
	total := a.Stats().TotalPages
	if total != 16-r.FirstDataPage() {
		t.Fatalf("TotalPages %d", total)
	}
	var got []uint64
	for i := uint64(0); i < total; i++ {
		p, err := a.Alloc(1)
		if err != nil {
			t.Fatalf("Alloc %d of %d: %v", i, total, err)
		}
		got = append(got, p)
	}
	_, err := a.Alloc(1)
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("Alloc on a full pool = %v, want ErrPoolFull", err)
	}
	for _, want := range []string{"need 1 contiguous pages (4096 bytes)", "0 pages free", "pool of 14 pages of 4096 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ErrPoolFull message %q lacks %q", err, want)
		}
	}
	// Free every other page: plenty free, but no run of 2.
	for i := 0; i < len(got); i += 2 {
		a.Free(got[i], 1, 1)
	}
	a.Release(1)
	st := a.Stats()
	if st.FreePages != 7 || st.UsedPages != 7 || st.PendingPages != 0 {
		t.Fatalf("stats %+v", st)
	}
	_, err = a.Alloc(2)
	if !errors.Is(err, ErrPoolFull) || !strings.Contains(err.Error(), "7 pages free, longest free run 1") {
		t.Fatalf("fragmented Alloc(2) = %v", err)
	}
	if a.Stats() != st {
		t.Fatalf("failed Alloc changed the allocator: %+v -> %+v", st, a.Stats())
	}
	if _, err := a.Alloc(0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Alloc(0) = %v", err)
	}
	if _, err := a.Alloc(-3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Alloc(-3) = %v", err)
	}
	// Bad frees are ignored and counted, never corrupting the pool.
	a.Free(got[0], 1, 5)       // already free
	a.Free(0, 1, 5)            // metadata page
	a.Free(r.NumPages(), 1, 5) // past the end
	a.Free(got[1], 0, 5)
	if st := a.Stats(); st.BadFrees != 4 || st.FreePages != 7 {
		t.Fatalf("after bad frees: %+v", st)
	}
}

func TestAllocatorPendingRule(t *testing.T) {
	r := newRegion(t, "", Options{Size: 1 << 20})
	a := r.Allocator()
	p, _ := a.Alloc(4)
	a.Free(p, 4, 10)
	a.Free(p, 4, 11) // double free while pending: ignored
	if st := a.Stats(); st.PendingPages != 4 || st.BadFrees != 1 {
		t.Fatalf("stats %+v", st)
	}
	a.Release(9) // a snapshot older than txn 10 is still visible
	if st := a.Stats(); st.PendingPages != 4 {
		t.Fatalf("released too early: %+v", st)
	}
	q, _ := a.Alloc(4)
	if q == p {
		t.Fatal("pending pages handed out while an older snapshot can see them")
	}
	a.Release(10)
	if q2, _ := a.Alloc(4); q2 != p {
		t.Fatalf("released run not reused lowest-first: got %d, want %d", q2, p)
	}
}

func TestAllocatorRebuild(t *testing.T) {
	name := uniqueName(t)
	w := newRegion(t, name, Options{Size: 1 << 20})
	a := w.Allocator()
	p1, _ := a.Alloc(3)
	p2, _ := a.Alloc(5)
	w.Close()

	r := attach(t, name, ReadWrite)
	if hw := r.Header().HighWater; hw != p2+5 {
		t.Fatalf("high water in the region %d, want %d", hw, p2+5)
	}
	b := r.Allocator()
	b.Rebuild(func(yield func(uint64, int) bool) {
		if yield(p1, 3) {
			yield(p2, 5)
		}
	})
	st := b.Stats()
	if st.UsedPages != 8 || st.HighWater != p2+5 || st.PendingPages != 0 {
		t.Fatalf("rebuilt stats %+v", st)
	}
	q, err := b.Alloc(1)
	if err != nil || (q >= p1 && q < p2+5) {
		t.Fatalf("Alloc after Rebuild = %d, %v: overlaps used pages [%d,%d)", q, err, p1, p2+5)
	}
}

// TestAllocatorModel drives the allocator with random alloc/free/release sequences and
// checks it against a page-state model: no page is handed out twice, no freed page is
// reused while a snapshot older than its freeing txn is visible, ErrPoolFull exactly
// when the model has no free run long enough, and the counters agree.
func TestAllocatorModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0))
	for round := 0; round < 20*soak(t); round++ {
		pages := 20 + rng.IntN(300)
		r := newRegion(t, "", Options{Size: int64(pages) * 512, PageSize: 512, MaxReaders: 1})
		checkAllocModel(t, rng, r)
	}
}

type pageState struct {
	used    bool
	pending bool
	txid    uint64
}

func checkAllocModel(t *testing.T, rng *rand.Rand, r *Region) {
	t.Helper()
	a := r.Allocator()
	first, total := r.FirstDataPage(), r.NumPages()
	model := make([]pageState, total)
	type run struct{ p, n uint64 }
	var live []run
	txid, oldest := uint64(1), uint64(0)
	modelRun := func(n uint64) bool {
		var c uint64
		for p := first; p < total; p++ {
			if !model[p].used && !model[p].pending {
				if c++; c >= n {
					return true
				}
			} else {
				c = 0
			}
		}
		return false
	}
	for step := 0; step < 3000; step++ {
		switch op := rng.IntN(10); {
		case op < 4:
			n := uint64(1 + rng.IntN(8))
			if rng.IntN(8) == 0 {
				n = uint64(1 + rng.IntN(40))
			}
			p, err := a.Alloc(int(n))
			if err != nil {
				if !errors.Is(err, ErrPoolFull) || modelRun(n) {
					t.Fatalf("step %d: Alloc(%d) = %v, model has a free run: %v", step, n, err, modelRun(n))
				}
				continue
			}
			if p < first || p+n > total {
				t.Fatalf("step %d: Alloc(%d) = %d outside [%d,%d)", step, n, p, first, total)
			}
			for q := p; q < p+n; q++ {
				if model[q].used {
					t.Fatalf("step %d: page %d allocated twice", step, q)
				}
				if model[q].pending {
					t.Fatalf("step %d: page %d reused while pending (freed by txn %d, oldest visible %d)", step, q, model[q].txid, oldest)
				}
				model[q].used = true
			}
			live = append(live, run{p, n})
		case op < 7 && len(live) > 0:
			i := rng.IntN(len(live))
			x := live[i]
			live[i] = live[len(live)-1]
			live = live[:len(live)-1]
			a.Free(x.p, int(x.n), txid)
			for q := x.p; q < x.p+x.n; q++ {
				model[q] = pageState{pending: true, txid: txid}
			}
		case op < 8:
			txid++
		default:
			// Readers move on: the oldest visible snapshot advances, never past the newest txn.
			if oldest < txid {
				oldest += uint64(1 + rng.IntN(int(txid-oldest)))
			}
			a.Release(oldest)
			for q := range model {
				if model[q].pending && model[q].txid <= oldest {
					model[q] = pageState{}
				}
			}
		}
		var used, pend, free uint64
		for q := first; q < total; q++ {
			switch {
			case model[q].used:
				used++
			case model[q].pending:
				pend++
			default:
				free++
			}
		}
		if st := a.Stats(); st.UsedPages != used || st.PendingPages != pend || st.FreePages != free || st.BadFrees != 0 {
			t.Fatalf("step %d: stats %+v, model used %d pending %d free %d", step, st, used, pend, free)
		}
	}
}
