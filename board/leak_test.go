package board

import (
	"context"
	"encoding/binary"
	"testing"
)

// Many small commits over a small key set: the pages each commit copies
// stay allocated while a checkpoint snapshot pins the old tree, so without
// pressure-triggered checkpoints the pool fills long before the log reaches
// CheckpointKiB.
func TestSmallCommitsDoNotFillThePool(t *testing.T) {
	g := newGroup(t, 3, func(c *Config) { c.PoolSize, c.LogSize, c.CheckpointKiB = 24<<20, 8<<20, 4096 })
	m := g.master(0)
	var k [8]byte
	val := make([]byte, 100)
	for i := 0; i < 15000; i++ {
		binary.BigEndian.PutUint64(k[:], uint64(i%2000))
		if _, err := m.Update(context.Background(), func(tx *Tx) error { return tx.Bucket("b").Put(k[:], val) }); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
}
