package hwtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestRebootUnderLoad fills a 3-board group, then reboots replicas with
// empty memory while writers keep committing: each must come back through
// internal init (the master's log has wrapped past LSN 0, so replaying the
// log alone cannot rebuild it) and catch up under load, the last time
// with 1% of every board's frames lost. Soak mode fills 200 MB first (with
// a 4 MiB log, as in CI) and reboots once more under the fill's writers
// at 5% frame loss, where the master's checkpoint usually moves under the
// copy and the copy resumes (the result line counts restarts, resumes and
// pages kept).
func TestRebootUnderLoad(t *testing.T) {
	fill := int64(8 << 20)
	pool, logSize, reboots := "64M", "4M", 2
	if *soak {
		fill, pool, logSize, reboots = 200<<20, "512M", "4M", 3
	}
	if *fillMB > 0 {
		fill = int64(*fillMB) << 20
		pool = fmt.Sprintf("%dM", max(64, 3**fillMB))
	}
	s := newScenario(t, 3, nil, func(o *harness.ClusterOptions) {
		o.PoolSize, o.LogSize, o.CheckpointKiB = pool, logSize, 512
		o.NamedShm = true // a reader attaches to the first rebooted board's region
	})
	s.start()
	s.monitor()

	// Fill with 4 KiB values until the master's pool holds fill bytes and
	// its log has wrapped (begins after LSN 0). The values do not compress,
	// so an init window of pages takes as many frames as its bytes do.
	filler := &harness.Writer{DB: s.db, Prefix: s.prefix + "fill/", Pick: s.cl.Pick, Workers: 4,
		Timeout: 5 * time.Second, ValueSize: 4000, Incompressible: true, Tag: "fill"}
	if err := filler.Start(s.ctx, &s.hist); err != nil {
		t.Fatal(err)
	}
	s.writers = append(s.writers, filler)
	fillFor := 3 * time.Minute
	if *soak {
		fillFor = 10 * time.Minute
	}
	ctx, cancel := s.within(fillFor)
	defer cancel()
	var used int64
	err := harness.WaitFor(ctx, fmt.Sprintf("%d MB in the master's pool and a wrapped log", fill>>20), 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		m := s.cl.Master()
		if m == 0 {
			return false, fmt.Errorf("no master known")
		}
		st, err := s.cl.Stat(ctx, m)
		if err != nil {
			return false, err
		}
		used = int64(st.Pool.UsedPages) * int64(st.Pool.PageSize)
		return used >= fill && st.Log.Begin > 0, nil
	})
	if err != nil {
		t.Fatalf("filling the group: %v (used %d bytes); last errors: %s; stats: %s", err, used, s.lastErrors(3),
			s.describe())
	}
	filler.Stop()
	t.Logf("filled: %d MB used in the master's pool, %d Perm commits", used>>20, s.hist.PermCount())
	var lastFill harness.Write // the newest Perm write of the fill: every board holds it
	for _, wr := range s.hist.Writes() {
		if wr.Outcome == harness.Perm && wr.Tag == "fill" {
			lastFill = wr
		}
	}
	readerSawEmpty := false // the first reboot's reader attached before the init filled the region
	// Load during the reboots: small writes back to back.
	s.writer("load", 2, nil)

	var inits []string
	moved, elections := 0, uint64(0)
	// electionsBut gives the elections each board other than r took part
	// in, for the boards that answered.
	electionsBut := func(r uint16) map[uint16]uint64 {
		n := map[uint16]uint64{}
		for _, site := range s.cl.Sites() {
			if site == r {
				continue
			}
			if st, err := s.cl.Stat(ctx, site); err == nil {
				n[site] = st.Election.Elections
			}
		}
		return n
	}
	// reboot kills a replica, restarts it with empty memory and waits until
	// internal init brought it back. The master serving the init should
	// stay master: the elections the other boards took part in meanwhile
	// are counted (a master that stops heartbeating while it serves, as
	// one walking the snapshot's trees under its runtime lock did, is
	// replaced), not asserted: a loaded rig also stalls whole processes.
	reboot := func(i int, what string) {
		m, err := s.cl.WaitMaster(ctx)
		if err != nil {
			t.Fatalf("reboot %d: no agreed master: %v", i+1, err)
		}
		ms, err := s.cl.Stat(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if ms.Log.Begin == 0 {
			t.Fatalf("the master's log still begins at LSN 0 (end %d, size %d): the fill did not wrap it, so a reboot would not need internal init; raise the fill or lower -log-size", ms.Log.End, ms.Log.Size)
		}
		var r uint16
		for _, site := range s.cl.Sites() {
			if site != m && (i%2 == 0 || r == 0) {
				r = site // alternate between the replicas
			}
		}
		el0 := electionsBut(r)
		s.cl.Kill(r)
		s.fault("SIGKILL replica %d", r)
		restart := time.Now()
		if err := s.cl.Start(ctx, r, false); err != nil {
			t.Fatalf("restarting site %d: %v", r, err)
		}
		s.fault("restart site %d with empty memory%s", r, what)
		// The first time, a reader in this process attaches to the
		// restarted board's region as soon as it exists, as a forwarding
		// agent would: the init fills that same region (in place), so it
		// must show the data once the board rejoined without attaching
		// again.
		var ag *attachedAgent
		if i == 0 {
			ag = &attachedAgent{name: s.cl.Node(r).Shm}
			defer ag.close()
			err := harness.WaitFor(ctx, fmt.Sprintf("site %d's new region to attach to", r), time.Millisecond, func(context.Context) (bool, error) {
				return ag.view(func(tx *board.Tx) error {
					readerSawEmpty = tx.Bucket(s.db).Get([]byte(lastFill.Key)) == nil
					return nil
				}) == nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		target := ms.LSN
		var st harness.Stat
		err = harness.WaitFor(ctx, fmt.Sprintf("site %d rejoined through internal init%s", r, what), 20*time.Millisecond, func(ctx context.Context) (bool, error) {
			var err error
			st, err = s.cl.Stat(ctx, r)
			if err != nil {
				return false, err
			}
			return st.Role == "client" && !st.LockedOut && !st.Init.Active && st.Init.Count >= 1 && st.LSN >= target, nil
		})
		if err != nil {
			t.Fatalf("%v; site %d: role %s locked %v init %+v lsn %d (want >= %d)", err, r, st.Role, st.LockedOut, st.Init, st.LSN, target)
		}
		rejoin := time.Since(restart)
		if !st.Init.InPlace {
			t.Errorf("reboot %d: site %d restarted with empty memory but imported into a second region, not its own pool (init %+v, %d elections)",
				i+1, r, st.Init, st.Election.Elections)
		}
		if ag != nil {
			var got string
			if err := ag.view(func(tx *board.Tx) error { got = string(tx.Bucket(s.db).Get([]byte(lastFill.Key))); return nil }); err != nil {
				t.Fatalf("the reader of site %d's region after the init: %v", r, err)
			}
			if got != lastFill.Value || ag.attaches != 1 {
				t.Fatalf("the reader of site %d's region after the init: %s=%q (want %q), attached %d times (want once: the init fills the region it attached to)",
					r, lastFill.Key, got, lastFill.Value, ag.attaches)
			}
		}
		for site, n := range electionsBut(r) {
			if n0, ok := el0[site]; ok && n >= n0 {
				elections += n - n0
			}
		}
		if now, err := s.cl.WaitMaster(ctx); err == nil && now != m {
			moved++
		}
		inits = append(inits, fmt.Sprintf("site%d:%dpages/%v(%v from the first copy, rejoin %v%s, %d reasked, %d restarts, %d resumed keeping %d pages)",
			r, st.Init.PagesTotal, st.Init.LastDuration.Round(time.Millisecond), st.Init.LastTotalDuration.Round(time.Millisecond),
			rejoin.Round(time.Millisecond), what, st.Init.PagesReasked,
			st.Init.Restarts, st.Init.Resumes, st.Init.PagesKept))
		t.Logf("reboot %d: site %d rejoined after %v%s: internal init of %d pages in %v, %d pages asked for again", i+1, r,
			rejoin.Round(time.Millisecond), what, st.Init.PagesTotal, st.Init.LastDuration.Round(time.Millisecond), st.Init.PagesReasked)
	}
	for i := range reboots {
		reboot(i, "")
		s.waitPerm(20, 30*time.Second, "commits after the reboot")
	}
	// Once more with frames lost: a PAGE message is lost if any of its
	// frames is, so the joining board must shrink its windows to get the
	// pages through.
	const initLoss = 0.01
	injs := s.lossEverywhere(initLoss)
	reboot(reboots, fmt.Sprintf(", %.0f%% frame loss", initLoss*100))
	seen, dropped := s.endLoss(injs)
	if dropped == 0 {
		t.Fatalf("the lossy reboot: the injectors dropped nothing (%d frames seen): no fault was injected", seen)
	}
	t.Logf("lossy reboot: %d of %d frames dropped", dropped, seen)
	s.fault("frame loss ended")
	s.waitPerm(20, 30*time.Second, "commits after the lossy reboot")
	if *soak {
		// Once more with the fill's writers back at full speed and 5% of
		// the frames lost: the copy takes seconds while the writes fill
		// half the master's log, so the master may move the checkpoint
		// under it; the copy then resumes from the new one, keeping the
		// pages not written since (the init's counts say how often).
		heavy := &harness.Writer{DB: s.db, Prefix: s.prefix + "heavy/", Pick: s.cl.Pick, Workers: 4,
			Timeout: 5 * time.Second, ValueSize: 4000, Incompressible: true, Tag: "heavy"}
		if err := heavy.Start(s.ctx, &s.hist); err != nil {
			t.Fatal(err)
		}
		s.writers = append(s.writers, heavy)
		injs := s.lossEverywhere(0.05)
		reboot(reboots+1, ", 5% frame loss and 4 writers of 4000-byte values")
		s.endLoss(injs)
		heavy.Stop()
		s.fault("frame loss and heavy writes ended")
		s.waitPerm(20, 30*time.Second, "commits after the heavy reboot")
	}
	s.verify()
	s.finish(fmt.Sprintf("filled=%dMB inits=%v lossy-reboot-dropped=%d/%d elections-during-reboots=%d master-changes=%d reader-attached-before-init=%v",
		used>>20, inits, dropped, seen, elections, moved, readerSawEmpty))
}
