package board

import (
	"fmt"
	"os"
	"testing"

	"github.com/seed61e250c8/boardha/shm"
)

// TestPromiseKeptWithRegion: the election a board voted in is stored in its
// shared memory region, and a board reopened on that region starts with it
// (else a restarted voter could vote twice in one election).
func TestPromiseKeptWithRegion(t *testing.T) {
	name := func(site uint16) string { return fmt.Sprintf("boardha-test-%d-promise-%d", os.Getpid(), site) }
	t.Cleanup(func() {
		for s := uint16(1); s <= 3; s++ {
			_ = shm.Remove(name(s))
		}
	})
	g := newGroup(t, 3, func(c *Config) { c.ShmName, c.KeepShm = name(c.Site), true })
	m := g.master(0)
	r := g.boards[m.Site()%3+1]
	promised := func(b *Board) (node, stored uint32) {
		b.rtMu.Lock()
		defer b.rtMu.Unlock()
		stored, err := b.rt.store.Env().Promised()
		if err != nil {
			t.Fatal(err)
		}
		return b.rt.node.Promised(), stored
	}
	p, stored := promised(r)
	if p == 0 {
		t.Fatalf("site %d voted in the election of %d but promised nothing", r.Site(), m.Site())
	}
	if stored != p {
		t.Fatalf("site %d: promise %d, region holds %d", r.Site(), p, stored)
	}
	g.stop(r.Site())
	r2 := g.start(r.Site(), StartClient)
	if got, _ := promised(r2); got < p {
		t.Fatalf("site %d reopened on its region with promise %d, had %d", r.Site(), got, p)
	}
	g.master(0)
}
