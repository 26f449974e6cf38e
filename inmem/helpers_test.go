package inmem

import (
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// testSeed returns BOARDHA_SEED if set, else def, and logs it so failures replay.
func testSeed(t testing.TB, def uint64) uint64 {
	t.Helper()
	if s := os.Getenv("BOARDHA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("BOARDHA_SEED=%q: %v", s, err)
		}
		def = v
	}
	t.Logf("seed %d (replay with BOARDHA_SEED=%d)", def, def)
	return def
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// newTestEnv creates a private environment closed at cleanup.
func newTestEnv(t testing.TB, opt Options) *Env {
	t.Helper()
	e, err := Create(opt)
	if err != nil {
		t.Fatalf("Create(%+v): %v", opt, err)
	}
	t.Cleanup(func() {
		if err := e.Remove(); err != nil {
			t.Errorf("remove env: %v", err)
		}
	})
	return e
}

// shipLog applies the master's log after the replica's end to the replica.
func shipLog(t testing.TB, master, replica *Env) {
	t.Helper()
	for replica.Log().End() < master.Log().End() {
		b, _, err := master.Log().ReadEncoded(replica.Log().End(), 1<<28, nil)
		if err != nil {
			t.Fatalf("read master log at %d: %v", replica.Log().End(), err)
		}
		// Ship whole transactions only: cut after the last commit/checkpoint.
		whole, err := scanTxns(b, replica.Log().End())
		if err != nil {
			t.Fatalf("scan master log: %v", err)
		}
		if whole == 0 {
			t.Fatalf("master log at %d holds no whole transaction in %d bytes", replica.Log().End(), len(b))
		}
		if _, err := replica.ApplyEncoded(b[:whole]); err != nil {
			t.Fatalf("ApplyEncoded at %d: %v", replica.Log().End(), err)
		}
	}
}

func mustNoErr(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
