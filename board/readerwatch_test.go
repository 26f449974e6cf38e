package board

import (
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/shm"
)

// TestReaderWatch: a reader holding one snapshot is reported once, when it
// has held it for the threshold; one that moves on, lets go or comes back
// to another snapshot starts over; idle attachments are never reported.
func TestReaderWatch(t *testing.T) {
	var w readerWatch
	const warnAfter = 10 * time.Second
	reading := func(pid int, txid uint64) shm.ReaderInfo { return shm.ReaderInfo{PID: pid, Txid: txid, HasTxid: true} }
	idle := shm.ReaderInfo{PID: 9}
	at := func(s int) time.Duration { return time.Duration(s) * time.Second }
	steps := []struct {
		now     time.Duration
		readers []shm.ReaderInfo
		want    []int // pids reported
	}{
		{at(0), []shm.ReaderInfo{reading(1, 10), reading(2, 10), idle}, nil},
		{at(5), []shm.ReaderInfo{reading(1, 10), reading(2, 15), idle}, nil}, // 2 moved on
		{at(10), []shm.ReaderInfo{reading(1, 10), reading(2, 15), idle}, []int{1}},
		{at(11), []shm.ReaderInfo{reading(1, 10), reading(2, 15), idle}, nil}, // 1 said once
		{at(15), []shm.ReaderInfo{reading(1, 10), reading(2, 15), idle}, []int{2}},
		{at(16), []shm.ReaderInfo{idle}, nil},                 // both let go
		{at(17), []shm.ReaderInfo{reading(1, 10), idle}, nil}, // back: starts over
		{at(26), []shm.ReaderInfo{reading(1, 10)}, nil},
		{at(27), []shm.ReaderInfo{reading(1, 10)}, []int{1}},
		{at(60), nil, nil},
		{at(61), []shm.ReaderInfo{reading(1, 10)}, nil},
		{at(200), []shm.ReaderInfo{idle}, nil},
	}
	for i, st := range steps {
		got := w.observe(st.now, warnAfter, st.readers)
		var pids []int
		for _, r := range got {
			pids = append(pids, r.pid)
			if r.held < warnAfter {
				t.Errorf("step %d: pid %d reported after holding %v, under %v", i, r.pid, r.held, warnAfter)
			}
		}
		if len(pids) != len(st.want) || (len(pids) > 0 && pids[0] != st.want[0]) {
			t.Fatalf("step %d at %v: reported %v, want %v", i, st.now, pids, st.want)
		}
	}
}
