package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// runInit fills a master with cfg.InitBytes of data, then starts an empty
// board that must copy it (internal init: the master's log no longer holds
// the whole history) and measures the copy.
func (s *suite) runInit(ctx context.Context) Section {
	sec := emptySection(secInit)
	const valSize = 1800 // at most two values per 4 KiB leaf page
	logSize := 4 << 20
	// Sequential inserts leave leaves about half full: the pages hold
	// roughly twice the values' bytes, plus copies a checkpoint pins.
	pool := s.cfg.InitBytes*4 + 128<<20
	sec.Setup = fmt.Sprintf("Two in-process boards on boards 1 and 2 of the chassis (raw transport, page size 4 KiB, log %d MiB, pool %d MiB). "+
		"Board 1 alone (AckPolicy NONE, checkpoint every 512 KiB) is filled with >= %d MiB of random (incompressible) values (%d bytes each), far more than its log holds, "+
		"then board 2 (priority 0) starts empty and joins: the master sends its checkpoint's pages (internal init) and then the log since. "+
		"Rate = pages copied (Stat.Init.PagesDone) x page size / time from board 2's init-started to its init-done event; join = Start until board 2 is ready. "+
		"Wire: the bytes board 2's transport received from its start until ready (Stat.Counters.BytesRecv) over the same span: fewer than the pages, "+
		"which travel without their free space or their value's tail, lz4'd where that helps; the targets give both against the bare stream "+
		"(sendmmsg batches of 64) measured on the same two boards just before and just after the init, their mean: the machine's speed moves between sections.",
		logSize>>20, pool>>20, s.cfg.InitBytes>>20, valSize)
	sec.Columns = []string{"what", "data", "duration", "MB/s", "vs bare stream beside it"}
	peers := map[uint16]string{1: "", 2: ""}
	// The joining board has priority 0: in a two-site group a board that
	// misses heartbeats may otherwise win an election alone, and an empty
	// winner would make the full board copy nothing from it.
	open := func(i int) (*board.Board, error) {
		rb := s.chassis.Boards[i]
		var b *board.Board
		err := rb.Do(func() (err error) {
			b, err = board.Open(board.Config{Site: rb.Site, Group: "bench-init", Peers: peers, Priority: uint32(100 * (1 - i)),
				Transport: board.RawTransport(rb.Iface), AckPolicy: board.AckNone, PoolSize: pool, LogSize: logSize, CheckpointKiB: 512, Logger: s.dbg})
			return err
		})
		return b, err
	}
	m, err := open(0)
	if err != nil {
		sec.NotMeasured = fmt.Sprintf("opening the master: %v", err)
		return sec
	}
	defer m.Close()
	if err := m.Start(ctx, board.StartMaster); err != nil {
		sec.NotMeasured = fmt.Sprintf("starting the master: %v", err)
		return sec
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = m.WaitMaster(wctx)
	cancel()
	if err != nil {
		sec.NotMeasured = fmt.Sprintf("board 1 never became master: %v", err)
		return sec
	}

	// Fill with 16 writers, 32 values per transaction.
	t0 := time.Now()
	var next atomic.Int64
	var full atomic.Bool
	var fillErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := make([]byte, 8)
			// Random values: the transport compresses, and a page of
			// repeated bytes would travel faster than the link. Each
			// writer has a stream of its own: with one seed for all (as
			// until 2026-12-06), 16 writers wrote the same values, which
			// lz4 found again within a message, so pages shrank 2.2x.
			rng := rand.NewChaCha8([32]byte{byte(w + 1)})
			val := make([]byte, valSize)
			for ctx.Err() == nil && !full.Load() {
				base := next.Add(32) - 32
				if base*valSize >= s.cfg.InitBytes {
					full.Store(true)
					return
				}
				_, err := m.Update(ctx, func(tx *board.Tx) error {
					bk := tx.Bucket("init")
					for j := base; j < base+32; j++ {
						binary.BigEndian.PutUint64(key, uint64(j))
						_, _ = rng.Read(val)
						if err := bk.Put(key, val); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					once.Do(func() { fillErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if fillErr != nil || ctx.Err() != nil {
		sec.NotMeasured = fmt.Sprintf("filling the master: %v %v", fillErr, ctx.Err())
		return sec
	}
	st := m.Stat()
	data := min(next.Load(), s.cfg.InitBytes/valSize+32) * valSize
	fill := time.Since(t0)
	s.logf("init: master holds %d MiB after %v (log begins at %d)", data>>20, fill.Round(time.Millisecond), st.Log.Begin)
	sec.add(fmt.Sprintf("fill of the master (local commits; %d pages in use)", st.Pool.UsedPages), map[string]float64{"bytes": float64(data), "seconds": fill.Seconds(), "mb_per_s": float64(data) / 1e6 / fill.Seconds()},
		fmt.Sprintf("%.1f MB", float64(data)/1e6), ms(fill), fmt.Sprintf("%.1f", float64(data)/1e6/fill.Seconds()), "-")

	// The bare stream is measured again on the init's two boards just
	// before and just after it: this machine's speed moves between one
	// section and the next (the suite's first stream ranged from 537 to
	// 1153 MB/s in one day's runs), and the init is compared with the link
	// as it was while the init ran.
	before := s.streamBeside("before")
	r, err := open(1)
	if err != nil {
		sec.missing("internal init", fmt.Sprintf("opening the joining board: %v", err))
		return sec
	}
	defer r.Close()
	j0, cpu0 := time.Now(), processCPU()
	if err := r.Start(ctx, board.StartClient); err != nil {
		sec.missing("internal init", fmt.Sprintf("starting the joining board: %v", err))
		return sec
	}
	// The init's own span comes from the joining board's events; WaitMaster
	// alone is not enough (it may report ready while pages still arrive).
	const joinLimit = 20 * time.Second
	wctx, cancel = context.WithTimeout(ctx, joinLimit)
	defer cancel()
	var started, done time.Time
	for done.IsZero() && wctx.Err() == nil {
		select {
		case ev := <-r.Events():
			switch ev.Type {
			case board.EventInitStarted:
				started = ev.Time
			case board.EventInitDone:
				done = ev.Time
			}
		case <-wctx.Done():
		}
	}
	if done.IsZero() || started.IsZero() {
		sec.missing("internal init", fmt.Sprintf("no init-started/init-done events from the joining board within %v (%v; init stat %+v)", joinLimit, wctx.Err(), r.Stat().Init))
		return sec
	}
	_, err = r.WaitMaster(wctx)
	join, joinCPU := time.Since(j0), processCPU()-cpu0
	if err != nil {
		sec.missing("internal init", fmt.Sprintf("the joining board was not ready within %v: %v (init stat %+v)", joinLimit, err, r.Stat().Init))
		return sec
	}
	rst := r.Stat()
	after := s.streamBeside("after")
	ref, refWhat := s.initReference(before, after)
	in := rst.Init
	span := done.Sub(started)
	if span <= 0 {
		span = in.LastDuration
	}
	copied := float64(in.PagesDone) * float64(st.Pool.PageSize)
	if in.PagesDone == 0 {
		copied = float64(data)
		sec.note("Stat.Init.PagesDone was 0; the rate uses the master's used pages instead")
	}
	rate := copied / 1e6 / span.Seconds()
	v := map[string]float64{"bytes": copied, "seconds": span.Seconds(), "stat_last_duration_s": in.LastDuration.Seconds(), "mb_per_s": rate, "join_seconds": join.Seconds(), "pages": float64(in.PagesDone)}
	ratio := "-"
	if ref > 0 {
		v["reference_mb_per_s"] = ref
		v["of_bare_stream"] = rate / ref
		ratio = fmt.Sprintf("%.0f%%", 100*rate/ref)
	}
	// The rate counts whole pages restored; on the wire a page travels
	// without its free space or its value's tail, lz4'd where that helps,
	// so the link carried less than that (the joining board's receive
	// counters, from its start: the init plus the log and heartbeats
	// around it).
	wire := float64(rst.Counters.BytesRecv)
	if wire > 0 {
		v["wire_bytes"] = wire
		if ref > 0 {
			v["wire_of_bare_stream"] = wire / 1e6 / span.Seconds() / ref
		}
	}
	sec.add("internal init", v, fmt.Sprintf("%.1f MB (%d pages)", copied/1e6, in.PagesDone), ms(span), fmt.Sprintf("%.1f", rate), ratio)
	sec.add("join (Start until ready)", map[string]float64{"seconds": join.Seconds(), "mb_per_s": copied / 1e6 / join.Seconds(), "cpu_seconds": joinCPU.Seconds()},
		"", ms(join), fmt.Sprintf("%.1f", copied/1e6/join.Seconds()), "-")
	// Whether the init is bound by CPU or by waiting: both boards, and
	// the kernel's work for their sockets, run in this process.
	sec.note("CPU time of this process (both boards) from the joining board's Start until ready: %v, %.2f of the %d CPUs busy on average",
		joinCPU.Round(time.Millisecond), joinCPU.Seconds()/join.Seconds(), goruntime.NumCPU())
	if refWhat != "" {
		sec.note("%s", refWhat)
	}
	if wire > 0 {
		sec.note("on the wire the joining board received %.1f MB from its start until ready (%.0f%% of the pages it restored): %.1f MB/s over the init's span",
			wire/1e6, 100*wire/copied, wire/1e6/span.Seconds())
	}
	return sec
}

// streamBeside measures the batched bare stream on the init's two boards;
// a sample that could not be measured carries why (initReference says so).
func (s *suite) streamBeside(when string) streamSample {
	_, mb, got, err := streamRate(s.chassis.Boards[0], s.chassis.Boards[1], streamSize(s.chassis.MTU()), s.cfg.StreamFrames)
	if err != nil {
		s.logf("init: bare stream %s the init: %v (received %d frames)", when, err, got)
		return streamSample{when: when, err: err}
	}
	return streamSample{when: when, mbPerSec: mb}
}

// streamSample is one bare stream beside the init.
type streamSample struct {
	when     string
	mbPerSec float64
	err      error
}

// initReference is the bare stream rate the init is compared with: the mean
// of the streams measured just before and just after it, one of them if the
// other failed, else the bare section's (if it ran). what says which, for
// the section's notes.
func (s *suite) initReference(samples ...streamSample) (ref float64, what string) {
	var sum float64
	var parts []string
	n := 0
	for _, m := range samples {
		if m.err != nil {
			parts = append(parts, fmt.Sprintf("%s the init not measured (%v)", m.when, m.err))
			continue
		}
		sum += m.mbPerSec
		n++
		parts = append(parts, fmt.Sprintf("%s the init %.1f MB/s", m.when, m.mbPerSec))
	}
	var section string
	if s.bare != nil {
		section = fmt.Sprintf("; the bare section's, at the start of the run: %.1f MB/s (%s)", s.bare.mbPerSec, s.bare.streamVia)
	}
	switch {
	case n > 0:
		ref = sum / float64(n)
		return ref, fmt.Sprintf("bare stream on the same two boards (%d frames of %d B, sendmmsg batches of 64): %s; the reference is their mean, %.1f MB/s%s",
			s.cfg.StreamFrames, streamSize(s.chassis.MTU()), strings.Join(parts, ", "), ref, section)
	case s.bare != nil && s.bare.mbPerSec > 0:
		return s.bare.mbPerSec, fmt.Sprintf("bare stream beside the init: %s; the reference is the bare section's, %.1f MB/s (%s)",
			strings.Join(parts, ", "), s.bare.mbPerSec, s.bare.streamVia)
	}
	return 0, fmt.Sprintf("no bare stream to compare with: %s", strings.Join(parts, ", "))
}
