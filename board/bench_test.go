package board

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/seed61e250c8/boardha/backplane"
)

func benchGroup(b *testing.B, n int) *Board {
	b.Helper()
	hub := backplane.NewMemHub(backplane.MemConfig{Seed: 1})
	var boards []*Board
	for i := 1; i <= n; i++ {
		c := testConfig(hub, uint16(i), n)
		c.PoolSize, c.LogSize, c.CheckpointKiB = 64<<20, 16<<20, 1024
		bd, err := Open(c)
		if err != nil {
			b.Fatal(err)
		}
		boards = append(boards, bd)
	}
	b.Cleanup(func() {
		for _, bd := range boards {
			bd.Close()
		}
	})
	ctx := context.Background()
	boards[0].Start(ctx, StartMaster)
	for _, bd := range boards[1:] {
		bd.Start(ctx, StartClient)
	}
	for _, bd := range boards {
		if _, err := bd.WaitMaster(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return boards[0]
}

// BenchmarkUpdateQuorum: one writer, three boards, QUORUM acks over the mem
// hub: the latency of a Perm commit.
func BenchmarkUpdateQuorum(b *testing.B) {
	m := benchGroup(b, 3)
	ctx := context.Background()
	var k [8]byte
	val := make([]byte, 100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint64(k[:], uint64(i%10000))
		if _, err := m.Update(ctx, func(tx *Tx) error { return tx.Bucket("b").Put(k[:], val) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateQuorumParallel: many writers; group commit shares
// transactions and acks between them.
func BenchmarkUpdateQuorumParallel(b *testing.B) {
	m := benchGroup(b, 3)
	ctx := context.Background()
	var next atomic.Uint64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var k [8]byte
		val := make([]byte, 100)
		for pb.Next() {
			binary.BigEndian.PutUint64(k[:], next.Add(1)%10000)
			if _, err := m.Update(ctx, func(tx *Tx) error { return tx.Bucket("b").Put(k[:], val) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	st := m.Stat().Counters
	b.ReportMetric(float64(st.Commits)/float64(max(st.Batches, 1)), "commits/batch")
}
