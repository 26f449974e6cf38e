package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// masterNicePoll is how often the role is looked at: a new master gets its
// priority within this after the election, the failover's own scale.
const masterNicePoll = 5 * time.Millisecond

// watchMasterNice gives every thread of this process the scheduling nice n
// while the board is master and the nice it started with otherwise, until
// ctx ends. A master that does not run for a heartbeat monitor is, to its
// replicas, a dead one: on a card whose CPUs are busy (other firmware, other
// boards on a test rig) its threads should run first. Linux keeps nice per
// thread, and a new thread inherits its creator's, so setting every thread
// once per change covers those the Go runtime starts later. Without the
// privilege to raise priority it logs once and gives up.
func watchMasterNice(ctx context.Context, isMaster func() bool, n int, log *slog.Logger) {
	base, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		log.Warn("master nice: reading this process's priority failed; not changing it", "err", err)
		return
	}
	// The raw getpriority(2) returns 20-nice.
	base = 20 - base
	t := time.NewTicker(masterNicePoll)
	defer t.Stop()
	master := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m := isMaster(); m != master {
			want := base
			if m {
				want = n
			}
			if err := setProcessNice(want); err != nil {
				log.Warn("master nice: setting the threads' priority failed (needs CAP_SYS_NICE); leaving it", "nice", want, "err", err)
				return
			}
			master = m
			log.Info("master nice: threads' priority set", "master", m, "nice", want)
		}
	}
}

// setProcessNice sets nice n on every thread of this process.
func setProcessNice(n int) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A thread that exited meanwhile is no error.
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}
