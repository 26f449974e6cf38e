package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNices returns the nice of every thread of this process.
func threadNices(t *testing.T) map[int]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
		if err != nil {
			continue // exited meanwhile
		}
		out[tid] = 20 - p
	}
	return out
}

// TestMasterNice: while the board is master every thread of the process
// has the master nice, and the starting one once it is not. Lowering the
// priority needs no privilege; getting it back does (root in CI).
func TestMasterNice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a process may lower its threads' priority but not raise it back")
	}
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := 20 - prio // the raw syscall returns 20-nice
	var master atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchMasterNice(ctx, master.Load, 7, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	all := func(want int) bool {
		for _, n := range threadNices(t) {
			if n != want {
				return false
			}
		}
		return true
	}
	waitNice := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !all(want) {
			if time.Now().After(deadline) {
				t.Fatalf("threads' nice %v, want all %d", threadNices(t), want)
			}
			time.Sleep(masterNicePoll) // polling what another goroutine sets, with a deadline
		}
	}
	master.Store(true)
	waitNice(7)
	master.Store(false)
	waitNice(start)
}

func TestMasterNiceFlagRange(t *testing.T) {
	for _, v := range []string{"-21", "20"} {
		fc, err := loadRunConfig([]string{"-site", "1", "-peers", "1,2", "-master-nice", v}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.boardConfig(nil); err == nil {
			t.Fatalf("-master-nice %s accepted", v)
		}
	}
}
