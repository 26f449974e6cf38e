package inmem

// Benchmarks, side by side with bbolt (benchmark-only comparison: bbolt is linked
// into this test binary only). bbolt runs on a /dev/shm file with NoSync, so both
// sides are memory-only. Run:
//
//	go test ./inmem -run '^$' -bench . -benchtime 2s
import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	benchKeys   = 1_000_000
	benchValLen = 100
)

var benchVal = []byte(strings.Repeat("v", benchValLen))

// cpuNs reports process CPU time per operation next to ns/op: on a shared,
// overloaded machine wall time mostly measures the wait for a core.
func cpuNs(b *testing.B) func() {
	var r0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	return func() {
		var r1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		ns := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
		b.ReportMetric(float64(ns)/float64(b.N), "cpu-ns/op")
	}
}

func openBolt(b *testing.B) *bolt.DB {
	path := fmt.Sprintf("/dev/shm/boardha-bench-bolt-%d-%d", os.Getpid(), time.Now().UnixNano())
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, NoGrowSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close(); os.Remove(path) })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("bench")); return err }); err != nil {
		b.Fatal(err)
	}
	return db
}

func openBench(b *testing.B, pool int64) *Env {
	e, err := Create(Options{PoolSize: pool, LogSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	if _, err := e.Update(func(tx *Tx) error { _, err := tx.CreateDB("bench"); return err }); err != nil {
		b.Fatal(err)
	}
	return e
}

// retain keeps the benchmark's log from filling (no checkpointer here).
func retain(e *Env, i int) {
	if i%4096 == 0 {
		e.RetainLog(e.Log().End())
	}
}

func BenchmarkPutCommit(b *testing.B) {
	b.Run("inmem", func(b *testing.B) {
		e := openBench(b, 256<<20)
		var k [16]byte
		b.ReportAllocs()
		defer cpuNs(b)()
		for i := 0; b.Loop(); i++ {
			benchKey(k[:], uint64(i))
			retain(e, i)
			if _, err := e.Update(func(tx *Tx) error { return tx.DB("bench").Put(k[:], benchVal) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bbolt", func(b *testing.B) {
		db := openBolt(b)
		var k [16]byte
		b.ReportAllocs()
		defer cpuNs(b)()
		for i := 0; b.Loop(); i++ {
			benchKey(k[:], uint64(i))
			if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("bench")).Put(k[:], benchVal) }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkBatch100Commit(b *testing.B) {
	b.Run("inmem", func(b *testing.B) {
		e := openBench(b, 512<<20)
		var k [16]byte
		b.ReportAllocs()
		defer cpuNs(b)()
		for i := 0; b.Loop(); i++ {
			retain(e, i*100)
			if _, err := e.Update(func(tx *Tx) error {
				db := tx.DB("bench")
				for j := range 100 {
					benchKey(k[:], uint64(i*100+j))
					if err := db.Put(k[:], benchVal); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bbolt", func(b *testing.B) {
		db := openBolt(b)
		var k [16]byte
		b.ReportAllocs()
		defer cpuNs(b)()
		for i := 0; b.Loop(); i++ {
			if err := db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket([]byte("bench"))
				for j := range 100 {
					benchKey(k[:], uint64(i*100+j))
					if err := bk.Put(k[:], benchVal); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// big1M holds the 1M-key stores, built once per benchmark binary run.
type big1M struct {
	once sync.Once
	e    *Env
	bolt *bolt.DB
	path string
	err  error
}

func (s *big1M) get(b *testing.B) (*Env, *bolt.DB) {
	s.once.Do(func() {
		s.e, s.err = Create(Options{Name: fmt.Sprintf("boardha-bench-%d", os.Getpid()), PoolSize: 512 << 20, LogSize: 64 << 20})
		if s.err != nil {
			return
		}
		s.path = fmt.Sprintf("/dev/shm/boardha-bench-bolt1m-%d", os.Getpid())
		s.bolt, s.err = bolt.Open(s.path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, NoGrowSync: true})
		if s.err != nil {
			return
		}
		var k [16]byte
		for start := 0; start < benchKeys && s.err == nil; start += 10000 {
			s.e.RetainLog(s.e.Log().End())
			_, s.err = s.e.Update(func(tx *Tx) error {
				db, err := tx.CreateDBIfNotExists("bench")
				if err != nil {
					return err
				}
				for i := start; i < start+10000; i++ {
					benchKey(k[:], uint64(i))
					if err := db.Put(k[:], benchVal); err != nil {
						return err
					}
				}
				return nil
			})
			if s.err == nil {
				s.err = s.bolt.Update(func(tx *bolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("bench"))
					if err != nil {
						return err
					}
					for i := start; i < start+10000; i++ {
						benchKey(k[:], uint64(i))
						if err := bk.Put(k[:], benchVal); err != nil {
							return err
						}
					}
					return nil
				})
			}
		}
	})
	if s.err != nil {
		b.Fatal(s.err)
	}
	return s.e, s.bolt
}

// The 1M-key stores live for the whole benchmark run; TestMain removes them.
var big = &big1M{}

func xorshift(x *uint64) uint64 {
	*x ^= *x << 13
	*x ^= *x >> 7
	*x ^= *x << 17
	return *x
}

func BenchmarkGet1M(b *testing.B) {
	e, bdb := big.get(b)
	b.Run("inmem", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuNs(b)()
		_ = e.View(func(tx *Tx) error {
			db := tx.DB("bench")
			var k [16]byte
			x := uint64(88172645463325252)
			for b.Loop() {
				benchKey(k[:], xorshift(&x)%benchKeys)
				if db.Get(k[:]) == nil {
					b.Fatal("missing key")
				}
			}
			return nil
		})
	})
	b.Run("bbolt", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuNs(b)()
		_ = bdb.View(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("bench"))
			var k [16]byte
			x := uint64(88172645463325252)
			for b.Loop() {
				benchKey(k[:], xorshift(&x)%benchKeys)
				if bk.Get(k[:]) == nil {
					b.Fatal("missing key")
				}
			}
			return nil
		})
	})
	b.Run("inmem-xproc", func(b *testing.B) {
		// One child process does 2M random Gets on the same region, read-only
		// and zero copy; its rate is reported next to the in-process figures.
		for b.Loop() {
			ch := startChild(b, "get", e.Name(), "BOARDHA_INMEM_GETS=2000000", fmt.Sprintf("BOARDHA_INMEM_KEYS=%d", benchKeys))
			var rate float64
			if _, err := fmt.Sscanf(ch.next(b), "RATE %f", &rate); err != nil {
				b.Fatal(err)
			}
			_ = ch.cmd.Wait()
			b.ReportMetric(1e9/rate, "child-ns/get")
		}
	})
}

func BenchmarkCursorScan1M(b *testing.B) {
	e, bdb := big.get(b)
	b.Run("inmem", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuNs(b)()
		_ = e.View(func(tx *Tx) error {
			c := tx.DB("bench").Cursor()
			k, _ := c.First()
			for b.Loop() {
				if k, _ = c.Next(); k == nil {
					k, _ = c.First()
				}
			}
			return nil
		})
	})
	b.Run("bbolt", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuNs(b)()
		_ = bdb.View(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("bench")).Cursor()
			k, _ := c.First()
			for b.Loop() {
				if k, _ = c.Next(); k == nil {
					k, _ = c.First()
				}
			}
			return nil
		})
	})
}

// BenchmarkZMemory1M reports the pool bytes the 1M keys take against the raw
// key+value bytes (target <= 2.5x).
func BenchmarkZMemory1M(b *testing.B) {
	e, bdb := big.get(b)
	st := e.Stats()
	tree := float64(st.Pages.UsedPages-2-e.lay.logPages) * float64(e.ps)
	raw := float64(benchKeys * (16 + benchValLen))
	fi, _ := os.Stat(big.path)
	for b.Loop() {
	}
	b.ReportMetric(tree/raw, "inmem-x-raw")
	b.ReportMetric(float64(fi.Size())/raw, "bbolt-file-x-raw")
	b.ReportMetric(tree/(1<<20), "inmem-MiB")
	_ = bdb
}

// cleanup removes the 1M-key stores (called by TestMain after the run).
func (s *big1M) cleanup() {
	if s.bolt != nil {
		_ = s.bolt.Close()
	}
	if s.path != "" {
		_ = os.Remove(s.path)
	}
	if s.e != nil {
		_ = s.e.Remove()
	}
}
