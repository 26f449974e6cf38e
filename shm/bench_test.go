package shm

import (
	"os"
	"testing"
)

// BenchmarkReaderAcquireRelease is a reader registering and leaving (per View in a
// process that does not keep its slot).
func BenchmarkReaderAcquireRelease(b *testing.B) {
	r := newRegion(b, "", Options{Size: 1 << 20})
	b.ReportAllocs()
	for b.Loop() {
		s, err := r.AcquireReader()
		if err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}

// BenchmarkReaderSet is publishing a snapshot txid in a held slot (per View when the
// slot is kept).
func BenchmarkReaderSet(b *testing.B) {
	r := newRegion(b, "", Options{Size: 1 << 20})
	s, err := r.AcquireReader()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		s.Set(i)
		s.Clear()
	}
}

// BenchmarkOldestReader is the writer's scan of a 128-slot table: with only this
// process's readers, and with a snapshot held in a slot of another live process (the
// parent), whose liveness (kill(pid, 0) and a read of /proc) is checked once per
// livenessTTL, not at every scan.
func BenchmarkOldestReader(b *testing.B) {
	ownAndForeign(b, func(b *testing.B, foreign uint64) {
		r := newRegion(b, "", Options{Size: 1 << 20})
		for i := 0; i < 8; i++ {
			s, _ := r.AcquireReader()
			s.Set(uint64(100 + i))
		}
		if foreign != 0 {
			s, _ := r.AcquireReader()
			s.Set(50)
			*r.slotWord(s.Index(), slotOwner) = foreign
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := r.OldestReader(); !ok {
				b.Fatal("no reader")
			}
		}
	})
}

// ownAndForeign runs bench as "own" (foreign 0) and as "foreign", with the
// owner word of another live process (the parent; skipped without /proc).
func ownAndForeign(b *testing.B, bench func(b *testing.B, foreign uint64)) {
	for _, name := range []string{"own", "foreign"} {
		b.Run(name, func(b *testing.B) {
			var w uint64
			if name == "foreign" {
				ppid := os.Getppid()
				start, _, err := procStat(ppid)
				if err != nil {
					b.Skipf("no /proc for the parent: %v", err)
				}
				w = procIdentity{pid: uint32(ppid), start: start}.word()
			}
			bench(b, w)
		})
	}
}

// BenchmarkAllocFree is the writer's steady state: allocate a page, free one from a
// previous transaction, release what no reader can see any more.
func BenchmarkAllocFree(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run("pages="+string(rune('0'+n)), func(b *testing.B) {
			r := newRegion(b, "", Options{Size: 64 << 20})
			a := r.Allocator()
			// Half the pool in use, fragmented by freeing every third run.
			var live []uint64
			for i := 0; a.Stats().FreePages > a.Stats().TotalPages/2; i++ {
				p, err := a.Alloc(n)
				if err != nil {
					b.Fatal(err)
				}
				if i%3 == 0 {
					a.Free(p, n, 0)
				} else {
					live = append(live, p)
				}
			}
			a.Release(0)
			b.ReportAllocs()
			txid := uint64(1)
			for i := 0; b.Loop(); i++ {
				p, err := a.Alloc(n)
				if err != nil {
					b.Fatal(err)
				}
				j := i % len(live)
				a.Free(live[j], n, txid)
				live[j] = p
				if i%64 == 63 {
					txid++
					a.Release(txid - 2) // readers trail the writer by two transactions
				}
			}
		})
	}
}

// BenchmarkWriterGone is an attached reader's check at every view that the
// region's writer still holds it: the writer in this process, and in
// another live process (the parent), whose liveness is checked once per
// livenessTTL.
func BenchmarkWriterGone(b *testing.B) {
	ownAndForeign(b, func(b *testing.B, foreign uint64) {
		r := newRegion(b, "", Options{Size: 1 << 20})
		if err := r.LockWriter(); err != nil {
			b.Fatal(err)
		}
		if foreign != 0 {
			*r.word(offWriterLock) = foreign
			b.Cleanup(func() { *r.word(offWriterLock) = r.self.word() })
		}
		b.ReportAllocs()
		for b.Loop() {
			if r.WriterGone() {
				b.Fatal("the writer is alive")
			}
		}
	})
}
