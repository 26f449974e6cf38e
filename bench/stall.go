package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// cpuStalls is what the stall probe saw on one CPU.
type cpuStalls struct {
	CPU  int
	Over int           // gaps longer than the threshold
	Max  time.Duration // longest gap
}

// probeCPUStalls runs, for d, one busy thread pinned to each CPU at the
// highest nice priority it may take, and counts the gaps in its view of the
// clock longer than threshold. Nothing of ours runs meanwhile, so a gap is
// time the CPU was taken from the whole guest (the hypervisor, or the
// kernel's own work): a board on that CPU stops for as long, and a master
// that stops longer than the heartbeat monitor is, to its replicas, a master
// that died. The stability section runs it first to tell such stalls from
// the runtime's own.
func probeCPUStalls(ctx context.Context, d, threshold time.Duration) ([]cpuStalls, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("stall probe: reading the CPU set: %w", err)
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	out := make([]cpuStalls, len(cpus))
	errs := make([]error, len(cpus))
	var wg sync.WaitGroup
	for i, c := range cpus {
		wg.Go(func() {
			runtime.LockOSThread()
			// The thread exits with the goroutine: its priority and
			// affinity go with it.
			var one unix.CPUSet
			one.Set(c)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				errs[i] = fmt.Errorf("stall probe: pinning to CPU %d: %w", c, err)
				return
			}
			// Without CAP_SYS_NICE the probe runs at the normal
			// priority and also counts other processes' turns.
			_ = unix.Setpriority(unix.PRIO_PROCESS, 0, -20)
			st := cpuStalls{CPU: c}
			start := time.Now()
			last := start
			for n := 0; ; n++ {
				now := time.Now()
				g := now.Sub(last)
				st.Max = max(st.Max, g)
				if g > threshold {
					st.Over++
				}
				last = now
				if now.Sub(start) >= d || (n&0xffff == 0 && ctx.Err() != nil) {
					break
				}
			}
			out[i] = st
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, ctx.Err()
}
