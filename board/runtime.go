package board

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/rep"
)

// Loop limits.
const (
	maxBatch = 256 // writes combined into one transaction
	// maxInFlight commits may wait for their acks while the next one goes
	// out: with one, the master idled while the replicas applied and the
	// replicas while the master committed.
	maxInFlight   = 2
	rxBatch       = 64   // messages taken from the transport at once
	maxReadyLoops = 64   // Ready/Advance rounds per wake-up before other inputs get a turn
	appDedupe     = 4096 // forwarded requests remembered by the master
)

type writeReq struct {
	fn  func(*Tx) error
	ops []Op
	res chan writeResult // local caller; nil for a forwarded request
	// forwarded request (master side): where to reply.
	from uint16
	id   uint64
}

type writeResult struct {
	c   Commit
	err error
}

// waiter is a commit waiting for its ack policy.
type waiter struct {
	lsn      uint64
	deadline time.Duration
	reqs     []*writeReq
}

// readIndex is a leased read waiting for lsn to become permanent: until then
// its snapshot may hold a commit a new master would roll back.
type readIndex struct {
	lsn      uint64
	deadline time.Duration
	done     chan error
}

// appCall is an Apply forwarded by this replica, waiting for the master.
type appCall struct {
	id      uint64
	payload []byte
	res     chan writeResult
	sentTo  uint16
	sentAt  time.Duration
	retryAt time.Duration
}

type appKey struct {
	from uint16
	id   uint64
}

// runtime is the board's replication state; whoever touches it holds
// Board.rtMu (Stat and the control calls reach it through Board.do).
type runtime struct {
	// listing counts page walks running on goroutines of their own
	// (listPages); the environment outlives them. walking: one is running,
	// for the snapshot at walkLSN.
	listing sync.WaitGroup
	walking bool
	walkLSN uint64
	b       *Board
	stopped bool // shut down: nothing may touch the store any more
	node    *rep.Node
	// store performs the node's environment work (init, rollback, apply,
	// checkpoints): the same adapter the simulator proves.
	store *rep.EnvStorage

	role    Role
	master  uint16
	gen     uint32
	startup bool // replica: caught up with the master

	waiters []waiter
	readers readerWatch // attached processes holding one snapshot for long
	// spareReqs are request lists of released waiters, reused by the
	// next commits' waiters (keepReqs): a commit keeps its requests
	// without an allocation.
	spareReqs [][]*writeReq
	// reads are leased reads waiting until everything their snapshot holds
	// is permanent (the read-index rule), sorted by lsn.
	reads   []readIndex
	permLSN uint64 // the node's permanent LSN in this mastership (0 otherwise)

	calls   map[uint64]*appCall
	served  map[appKey][]byte // encoded replies of finished forwarded requests (nil while running)
	servedQ []appKey          // FIFO bounding served

	txw Tx

	// Group commit: writes wait here while an earlier commit is in flight
	// (not yet acked), so they share one transaction and one LOG message.
	pending      []*writeReq
	pendingSince time.Duration

	masterHeard  time.Duration // last message from the master
	lostFrom     uint16        // the last master known (kept while none is)
	lastFailover time.Duration
	elections    uint64 // the node's election count when last published
	// kaRole and kaGen are the role and gen the loop's keepalive was made
	// for (renewKeepAlive).
	kaRole Role
	kaGen  uint32

	initStart time.Time // start of the current (or last) copy
	// initJoin is when the init in progress began its first copy (zero
	// when none is in progress): restarted and resumed copies count from
	// it.
	initJoin      time.Time
	initLastWhole time.Duration
	initErr       string // why the init in progress last failed to store a step
	initActive    bool
	initInPlace   bool // the current or last init imports into the board's own pool
	initDone      int
	initTotal     int
	initRate      float64
	initCount     uint64
	initLast      time.Duration
	ckErrLogged   bool
}

func newRuntime(b *Board, env *inmem.Env) (*runtime, error) {
	rt := &runtime{b: b, calls: map[uint64]*appCall{}, served: map[appKey][]byte{}}
	store := rep.NewEnvStorage(env, envOptions(b.cfg), ckpt.Policy{KBytes: b.cfg.CheckpointKiB})
	rt.store = store
	rc := repConfig(b.cfg)
	// A region taken over from a dead process keeps the promise it made:
	// voting again in that election could elect a second master.
	promised, err := env.Promised()
	if err != nil {
		b.log.Warn("election promise in the shared memory region unreadable; starting without it", "err", err)
	}
	rc.Promised = promised
	node, err := rep.NewNode(rc, store)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	rt.node = node
	return rt, nil
}

func repConfig(c Config) rep.Config {
	rc := rep.Config{
		Site: c.Site, Priority: c.Priority,
		AckPolicy: rep.AckPolicy(c.AckPolicy - 1), AckTimeout: c.AckTimeout,
		HeartbeatSend: c.HeartbeatSend, HeartbeatMonitor: c.HeartbeatMonitor,
		ElectionTimeout: c.ElectionTimeout, ElectionBackoffMax: c.ElectionBackoffMax,
		Leases: c.Leases, LeaseTimeout: c.LeaseTimeout, ClockSkew: c.ClockSkew,
		TwoSiteStrict: c.TwoSiteStrict, NoAutoInit: c.NoAutoInit,
		ReRequestMin: max(c.HeartbeatSend, time.Millisecond), ReRequestMax: max(8*c.HeartbeatMonitor, 50*time.Millisecond),
		MaxMessageBytes: c.MaxMessageBytes, Seed: c.Seed,
		Pace: max(c.Pace, 0),
	}
	if rc.Seed == 0 {
		rc.Seed = uint64(time.Now().UnixNano()) ^ uint64(c.Site)<<48
	}
	for s := range c.Peers {
		if s != c.Site {
			rc.Peers = append(rc.Peers, s)
		}
	}
	return rc
}

func (rt *runtime) start(mode StartMode) {
	m := rep.StartClient
	if mode == StartMaster {
		m = rep.StartMaster
	}
	rt.node.Start(rt.b.now(), m)
	rt.processReady()
}

// tickEvery is the loop's timer resolution: fine enough for the heartbeat.
func tickEvery(c Config) time.Duration {
	return min(max(c.HeartbeatSend/2, 250*time.Microsecond), 10*time.Millisecond)
}

// rxLoop receives from the backplane and steps what arrives, under rtMu:
// the payloads alias the transport's buffers, which the next batch reuses,
// and are done with when received returns.
func (b *Board) rxLoop() {
	defer close(b.rxDone)
	msgs := make([]backplane.Message, rxBatch)
	rest := time.NewTimer(time.Hour)
	rest.Stop()
	handle := func(msgs []backplane.Message) bool {
		if !b.received(msgs) {
			return false
		}
		if len(msgs) < rxBatch && b.paced.Load() {
			b.restAtPace(rest)
		}
		return true
	}
	for {
		err := backplane.Serve(b.tr, msgs, handle)
		if err == nil {
			return // the runtime stopped
		}
		select {
		case <-b.closing:
			return
		default:
		}
		if errors.Is(err, backplane.ErrClosed) {
			return
		}
		b.log.Warn("backplane receive failed", "err", err)
		select {
		case <-b.closing:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// restAtPace leaves what arrives unread for Config.Pace, while this replica
// is paced: the master does not wait for its acks, so on CPUs the boards
// share it takes no CPU from the commits in flight, and it then applies what
// gathered as one batch. It rests only after a batch that emptied the
// socket, and wakes early when the board stops being paced or closes.
func (b *Board) restAtPace(t *time.Timer) {
	t.Reset(b.cfg.Pace)
	select {
	case <-t.C:
		return
	case <-b.rxWake:
	case <-b.closing:
	}
	t.Stop()
}

// endPace ends this replica's pacing at once: a rest in progress is cut
// short. rtMu is held.
func (b *Board) endPace() {
	if b.paced.Swap(false) {
		select {
		case b.rxWake <- struct{}{}:
		default:
		}
	}
}

// received steps one batch from the backplane; false once the runtime has
// stopped.
func (b *Board) received(msgs []backplane.Message) bool {
	rt := b.rt
	b.rxPending.Store(true)
	b.rtMu.Lock()
	stopped := rt.stopped
	if !stopped {
		rt.receive(msgs)
	}
	b.unlockRT()
	b.rxPending.Store(false)
	return !stopped
}

// receive steps a batch of received messages and carries out the outcome.
func (rt *runtime) receive(msgs []backplane.Message) {
	now := rt.b.now()
	heard := false
	for i := range msgs {
		m := &msgs[i]
		if m.From == rt.master {
			heard = true
		}
		// Step's errors are drops the node already counts.
		_ = rt.node.Step(now, rep.Message{From: m.From, To: m.To, Type: rep.MsgType(m.Type), Payload: m.Payload})
	}
	if heard {
		rt.heardMaster(now)
	}
	rt.processReady()
}

func (rt *runtime) heardMaster(now time.Duration) {
	rt.masterHeard = now
	rt.b.masterHeardAt.Store(int64(now))
}

// loop runs the timers and the control calls until the board closes, then
// shuts the runtime down. A tick that finds the runtime held is left owed
// to the holder (unlockRT runs it) rather than waited for: the loop stays
// free to speak for a master whose runtime is held (speakForMaster).
func (b *Board) loop() {
	rt := b.rt
	defer close(b.loopDone)
	defer func() {
		b.rtMu.Lock()
		rt.shutdown()
		b.unlockRT() // writes submitted meanwhile get ErrClosed
	}()
	tick := time.NewTicker(tickEvery(b.cfg))
	defer tick.Stop()
	deferred, maxDefers := 0, maxTickDefers(b.cfg)
	var lastKeepAlive time.Duration
	for {
		select {
		case <-b.closing:
			return
		case <-tick.C:
			if deferred < maxDefers && b.tickShouldWait() {
				deferred++
				continue
			}
			deferred = 0
			b.tickOwed.Store(true)
			if b.rtMu.TryLock() {
				b.unlockRT() // runs the tick
				continue
			}
			b.heldTicks.Add(1)
			if now := b.now(); b.speakForMaster(now, lastKeepAlive) {
				lastKeepAlive = now
			}
		case f := <-b.ctrlCh:
			// Like a tick: never wait for rtMu here (see ctrlOwed).
			b.oweCtrl(f)
			if b.rtMu.TryLock() {
				b.unlockRT() // runs f
			}
		}
	}
}

// tick runs the runtime's timers: heartbeats, ack and call timeouts,
// failure detection, re-requests, elections, and the group commit of
// writes that waited too long. rtMu is held.
func (rt *runtime) tick() {
	b := rt.b
	b.tickOwed.Store(false)
	if rt.stopped {
		return
	}
	now := b.now()
	if prev := time.Duration(b.tickRanAt.Swap(int64(now))); prev != 0 {
		b.noteStall(now-prev, b.heldTicks.Swap(0))
	}
	rt.node.Tick(now)
	rt.expire()
	if now >= rt.readers.next && b.cfg.ReaderHoldWarn > 0 {
		rt.readers.next = now + readerWatchEvery
		rt.watchReaders(now)
	}
	rt.processReady()
	rt.flush(false)
}

// watchReaders logs the attached processes found holding one snapshot for
// long (readerWatch), once per snapshot.
func (rt *runtime) watchReaders(now time.Duration) {
	env := rt.store.Env()
	for _, r := range rt.readers.observe(now, rt.b.cfg.ReaderHoldWarn, env.Region().Readers()) {
		rt.b.ctr.readerHoldWarnings.Add(1)
		st := env.Stats()
		rt.b.log.Warn("an attached reader has held one snapshot for long: the pages freed since cannot be reused, and the pool fills (ErrPoolFull) unless it lets go",
			"pid", r.pid, "held_for", r.held.Round(time.Second), "snapshot_txid", r.txid,
			"pages_held", st.PendingPages, "pool_pages", st.Pages.TotalPages)
	}
}

// noteStall records the gap between two ticks the runtime ran. A gap
// above the heartbeat monitor means the board's timers did not run for
// that long: its process got no CPU, or (held > 0: the loop's timer fired
// meanwhile and found the runtime taken) the thread holding the runtime
// did not run or was busy. It is counted and logged, since to the group it
// looked like a dead master (if this board was master, and the loop could
// not speak for it) or a deaf replica.
func (b *Board) noteStall(gap time.Duration, held uint32) {
	if gap > time.Duration(b.ctr.longestStall.Load()) {
		b.ctr.longestStall.Store(int64(gap))
	}
	if gap <= b.cfg.HeartbeatMonitor {
		return
	}
	b.ctr.stalls.Add(1)
	b.log.Warn("board runtime stalled: its timers did not run for longer than the heartbeat monitor",
		"for", gap.Round(10*time.Microsecond), "held_ticks", held,
		"heartbeat_monitor", b.cfg.HeartbeatMonitor, "role", b.pub.Load().role.String())
}

// speakForMaster sends the master's keepalive (rep.Node.KeepAlive) when
// the loop's tick found the runtime held and the runtime has not ticked,
// so not heartbeated, for a heartbeat period: on a loaded card the thread
// holding the runtime can lose its CPU for longer than the heartbeat
// monitor while the rest of the process runs, and the replicas would elect
// in place of a master that is only slow. It stops once the runtime has
// not ticked for keepAliveLimit: a runtime held that long is wedged, and a
// wedged master should be replaced. The holder may be stepping down as the
// loop sends (the keepalive is withdrawn only when the runtime publishes):
// a replica still following this tenure then hears it once more, which
// delays its election by at most one monitor; one that follows a newer gen
// answers it as any stale master's word, with a refusal. It reports whether
// it sent.
func (b *Board) speakForMaster(now, last time.Duration) bool {
	ka := b.keepAlive.Load()
	if ka == nil {
		return false
	}
	since := now - time.Duration(b.tickRanAt.Load())
	if since < b.cfg.HeartbeatSend || since > keepAliveLimit(b.cfg) || now-last < b.cfg.HeartbeatSend {
		return false
	}
	if err := b.tr.Send(rep.AllSites, uint8(rep.MsgHeartbeat), *ka); err != nil {
		b.ctr.sendErrors.Add(1)
		return false
	}
	b.ctr.keepAlives.Add(1)
	return true
}

// keepAliveLimit is how long the loop speaks for a master whose runtime
// does not run (rep.KeepAliveMonitors).
func keepAliveLimit(c Config) time.Duration { return rep.KeepAliveMonitors * c.HeartbeatMonitor }

// maxTickDefers bounds how many ticks in a row a replica lets received
// messages go first, so that a steady stream cannot starve its timers: half
// a heartbeat monitor's worth of ticks, at least two. A dead master sends
// nothing, so its silence is noticed late only if other boards' frames
// happen to wait at every one of those ticks.
func maxTickDefers(c Config) int {
	return max(2, int(c.HeartbeatMonitor/(2*tickEvery(c))))
}

// tickShouldWait reports whether a replica's tick should let received
// messages go first: after a long apply, or after the process itself was
// not scheduled for a while, the master's queued messages are what tells
// its failure detector the master is alive. Timers run before the
// netpoller when a descheduled process resumes, so near the monitor's
// deadline the tick also asks the socket whether frames wait.
func (b *Board) tickShouldWait() bool {
	p := b.pub.Load()
	if p.role == RoleMaster {
		return false
	}
	if b.rxPending.Load() {
		return true
	}
	if p.master == 0 {
		return false
	}
	silent := b.now() - time.Duration(b.masterHeardAt.Load())
	return silent >= b.cfg.HeartbeatMonitor-tickEvery(b.cfg) && b.tr.Pending()
}

// processReady carries out what the node asks until it has nothing more.
func (rt *runtime) processReady() {
	for i := 0; i < maxReadyLoops; i++ {
		if len(rt.pending) > 0 && len(rt.waiters) < maxInFlight {
			// A commit in flight was acked: the writes that gathered
			// meanwhile go out as one transaction.
			rt.flush(true)
		}
		rd := rt.node.Ready()
		empty := rd.Empty()
		rt.keepPromise()
		rt.perform(&rd)
		rt.node.Advance(rd)
		if empty {
			break
		}
	}
	rt.publish()
}

// keepPromise stores the node's election promise in the environment
// before any vote that made it goes out (Node.Promised's contract). The
// comparison reads the stored word, so an environment swapped in by
// internal init gets the promise too.
func (rt *runtime) keepPromise() {
	p := rt.node.Promised()
	env := rt.store.Env()
	if cur, err := env.Promised(); err == nil && cur == p {
		return
	}
	if err := env.SetPromised(p); err != nil {
		rt.b.log.Warn("storing the election promise failed", "promised", p, "err", err)
	}
}

func (rt *runtime) perform(rd *rep.Ready) {
	b := rt.b
	if rd.ListPages != nil {
		rt.listPages(rd.ListPages)
	}
	for _, m := range rd.Messages {
		if err := b.tr.Send(m.To, uint8(m.Type), m.Payload); err != nil {
			b.ctr.sendErrors.Add(1)
			b.log.Debug("backplane send failed", "to", m.To, "type", m.Type, "err", err)
		}
	}
	rt.envWork(rd)
	for _, ev := range rd.Events {
		rt.event(ev)
	}
	if rd.PermLSN != 0 && rt.role == RoleMaster {
		rt.permLSN = max(rt.permLSN, rd.PermLSN)
		rt.releaseReads()
	}
	if rd.PermLSN != 0 {
		rt.releasePerm(rd.PermLSN)
	}
	for _, lsn := range rd.PermFailed {
		rt.releaseFailed(lsn)
	}
	for i := range rd.App {
		rt.app(&rd.App[i])
	}
}

// listPages lists the pages of a snapshot a replica asked to copy
// (rep.Ready.ListPages) on a goroutine of its own and hands the list to the
// node as a control call: the walk takes tens of milliseconds for a few
// hundred MB, and a master that held its runtime that long missed its
// heartbeats, so that a board rejoining with empty memory cost the group an
// election. The walk holds a pin of its own on the snapshot, so that a
// checkpoint taken meanwhile cannot free the pages it reads; the
// environment is not closed before it is done (rt.listing).
func (rt *runtime) listPages(snap rep.Snapshot) {
	b := rt.b
	lsn := snap.LSN()
	if rt.walking && rt.walkLSN == lsn {
		// The node asks again when a report is long in coming; on a
		// large snapshot that is this walk still running: a second one
		// would only slow both.
		return
	}
	rt.walking, rt.walkLSN = true, lsn
	// EnvStorage exports *inmem.Snapshot; Clone is nil only if the
	// checkpoint let it go already, and then the node is told so (nil).
	var pin *inmem.Snapshot
	if s, ok := snap.(*inmem.Snapshot); ok {
		pin = s.Clone()
	}
	rt.listing.Add(1)
	go func() {
		defer rt.listing.Done()
		var pages []uint64 // nil: not listed; the node answers PAGE_FAIL
		if pin != nil {
			pages = pin.PageList()
			pin.Release()
		}
		b.oweCtrl(func() {
			if rt.walkLSN == lsn {
				rt.walking = false
			}
			rt.node.PagesListed(lsn, pages)
		})
		if b.rtMu.TryLock() {
			b.unlockRT()
		}
	}()
}

// envWork has the store do rd's environment work and turns the outcome
// into board state: the swapped environment, init progress, waiters of
// rolled-back commits.
func (rt *runtime) envWork(rd *rep.Ready) {
	b := rt.b
	ia := rd.Init
	if ia != nil && ia.Begin {
		rt.initStart = time.Now()
		if rt.initJoin.IsZero() {
			rt.initJoin = rt.initStart
		}
	}
	// A master that cannot write (lockout) takes no checkpoints either: it
	// would append to a log it may have to roll back.
	res, err := rt.store.Apply(rd, rt.node.CanWrite() == nil)
	if res.InitBegun {
		rt.initActive = true
		rt.initInPlace = res.InitInPlace
		rt.startup = false // not caught up while the pages are being copied
		rt.emit(Event{Type: EventInitStarted, Master: rt.master, LSN: ia.CkptLSN,
			Detail: fmt.Sprintf("%d pages", ia.PageCount)})
		b.log.Info("internal init started", "pages", ia.PageCount, "checkpoint", ia.CkptLSN, "in_place", res.InitInPlace, "resumed", ia.Resume)
	}
	if ia != nil {
		rt.initDone, rt.initTotal = ia.PagesDone, ia.PagesTotal
		if el := time.Since(rt.initStart).Seconds(); el > 0 {
			rt.initRate = float64(ia.PagesDone) / el
		}
	}
	if res.InitGivenUp {
		rt.initActive, rt.initJoin = false, time.Time{}
		b.log.Info("internal init given up: the board goes on from its own data", "pages_done", rt.initDone, "pages", rt.initTotal)
	}
	if res.InitDone {
		rt.adopt(res.Replaced)
	} else if ia != nil && ia.Finish {
		// The node restarts the init when the environment did not change.
		rt.initActive = false
	}
	if res.RolledBack {
		// Commits this board made at or past the target are gone: their
		// waiters learn they are not permanent.
		rt.failWaitersAbove(rd.RollbackTo)
		b.log.Info("rolled back", "to", rd.RollbackTo)
	}
	switch {
	case err == nil:
	case res.InitFailed:
		// The node ends the copy and begins a fresh one after a
		// back-off, instead of taking every page for nothing.
		rt.node.InitFailed()
		rt.initActive, rt.initErr = false, err.Error()
		b.log.Warn("internal init failed; a fresh copy begins after a back-off (if the memory file system is full, free memory or shrink the pool)",
			"err", err, "failures", rt.node.Counters().InitFailures)
	case errors.Is(err, rep.ErrCheckpoint):
		// Retried at every Ready: say it once.
		if !rt.ckErrLogged {
			rt.ckErrLogged = true
			b.log.Warn("checkpoint failed", "err", err)
		}
	default:
		// The node notices the storage did not move and asks again.
		b.log.Warn("replication storage work failed", "err", err)
	}
}

// adopt takes over the environment a finished internal init filled. One
// imported beside old replaces it, and old is closed (its region file was
// already replaced by the new one's, so it is closed, not removed); one
// imported in place (old nil) is the board's environment already.
func (rt *runtime) adopt(old *inmem.Env) {
	b := rt.b
	rt.initActive = false
	if old != nil {
		b.envMu.Lock()
		b.env = rt.store.Env()
		b.envMu.Unlock()
		rt.listing.Wait() // a walk of an export from this board's tenure as master
		if err := old.Close(); err != nil {
			b.log.Warn("internal init: closing the replaced environment", "err", err)
		}
	}
	rt.initCount++
	rt.initLast = time.Since(rt.initStart)
	rt.initLastWhole = time.Since(rt.initJoin)
	rt.initJoin, rt.initErr = time.Time{}, ""
	if s := rt.initLast.Seconds(); s > 0 {
		rt.initRate = float64(rt.initTotal) / s
	}
	b.log.Info("internal init done", "pages", rt.initTotal, "took", rt.initLast, "since_first_copy", rt.initLastWhole,
		"pages_per_sec", int(rt.initRate), "in_place", rt.initInPlace)
}

// event turns a node event into board state and a board Event.
func (rt *runtime) event(ev rep.Event) {
	b := rt.b
	e := Event{Gen: ev.Gen, LSN: ev.LSN}
	switch ev.Kind {
	case rep.EventClient:
		e.Type = EventClient
		if rt.role == RoleMaster {
			rt.failAllWaiters()
		}
		rt.role = RoleClient
		rt.startup = false
		if rt.master == b.cfg.Site {
			rt.master = 0
		}
	case rep.EventElected:
		e.Type = EventElected
	case rep.EventMaster:
		e.Type = EventMaster
		rt.role = RoleMaster
		rt.setMaster(b.cfg.Site)
		rt.startup = true
		rt.gen = ev.Gen
	case rep.EventNewMaster:
		e.Type = EventNewMaster
		e.Site = ev.Site
		// Synchronised with the previous master, not with this one: ready
		// again at its StartupDone.
		rt.startup = false
		if ev.Site != rep.NoMaster {
			rt.setMaster(ev.Site)
		}
		rt.gen = ev.Gen
	case rep.EventPermFailed:
		e.Type = EventPermFailed
	case rep.EventStartupDone:
		e.Type = EventStartupDone
		rt.startup = true
	case rep.EventDupMaster:
		e.Type = EventDupMaster
		rt.failAllWaiters()
		rt.role = RoleClient
		rt.master = 0
	case rep.EventJoinFailure:
		e.Type = EventJoinFailure
	case rep.EventNewSite:
		e.Type = EventSiteAdded
		e.Site = ev.Site
	case rep.EventRollback:
		e.Type = EventRollback
	case rep.EventInitDone:
		e.Type = EventInitDone
	default:
		e.Type = EventOther
		e.Detail = ev.String()
	}
	e.Master = rt.master
	rt.emit(e)
}

func (rt *runtime) setMaster(site uint16) {
	b := rt.b
	now := b.now()
	// Failover time: from the last message of the previous master (or of
	// a master this board lost) to a new master being known. A board that
	// was master itself, or is just starting, measures nothing.
	if site != rt.master && rt.lostFrom != 0 && rt.lostFrom != b.cfg.Site && rt.masterHeard > 0 {
		rt.lastFailover = now - rt.masterHeard
	}
	if site != rt.master {
		b.log.Info("master known", "master", site, "gen", rt.gen)
	}
	rt.master, rt.lostFrom = site, site
	rt.heardMaster(now)
}

func (rt *runtime) emit(e Event) {
	e.Time = time.Now()
	e = rt.b.events.push(e)
	rt.b.log.Debug("event", "event", e.String())
}

// publish makes the loop's view visible to other goroutines.
func (rt *runtime) publish() {
	b := rt.b
	if n := rt.node.Elections(); n != rt.elections {
		// Every election is a failover or a false alarm: worth a line.
		rt.elections = n
		// frames_waiting: true means this board, not the master, was
		// late (its own scheduling), which tells the two kinds apart.
		b.log.Warn("election started", "last_master", rt.lostFrom, "since_master_heard", b.now()-rt.masterHeard,
			"frames_waiting", b.tr.Pending(), "elections", n)
	}
	if b.cfg.Pace > 0 && rt.node.Paced() && len(rt.calls) == 0 {
		b.paced.Store(true)
	} else {
		b.endPace()
	}
	cw := rt.node.CanWrite()
	switch {
	case cw == nil:
	case errors.Is(cw, rep.ErrLockout):
		cw = fmt.Errorf("%w (%w)", ErrLockout, cw)
	default:
		cw = ErrNotMaster
	}
	// The node is the authority on mastership; events only add detail.
	switch {
	case cw == nil:
		if rt.role != RoleMaster {
			rt.role, rt.startup = RoleMaster, true
			rt.setMaster(b.cfg.Site)
		}
	case rt.role == RoleMaster:
		// Stepped down: the new master is not known yet.
		rt.role, rt.master, rt.startup = RoleClient, 0, false
		rt.failAllWaiters()
	case rt.role == RoleStarting:
		rt.role = RoleClient
	}
	if rt.role != rt.kaRole || rt.gen != rt.kaGen {
		rt.kaRole, rt.kaGen = rt.role, rt.gen
		rt.renewKeepAlive()
	}
	ready := rt.master != 0 && (rt.role == RoleMaster || rt.startup)
	old := b.pub.Load()
	if old.role == rt.role && old.master == rt.master && old.gen == rt.gen && old.ready == ready &&
		(old.canWrite == nil) == (cw == nil) && errors.Is(old.canWrite, ErrLockout) == errors.Is(cw, ErrLockout) {
		return
	}
	b.publish(&published{role: rt.role, master: rt.master, gen: rt.gen, canWrite: cw, ready: ready})
}

// renewKeepAlive gives the loop the message to speak for this master's
// tenure with, or takes it away when the board is not master.
func (rt *runtime) renewKeepAlive() {
	if ka, ok := rt.node.KeepAlive(nil); ok && rt.role == RoleMaster {
		rt.b.keepAlive.Store(&ka)
		return
	}
	rt.b.keepAlive.Store(nil)
}

// shutdown fails everything still waiting when the loop stops.
func (rt *runtime) shutdown() {
	rt.stopped = true
	for _, w := range rt.waiters {
		for _, r := range w.reqs {
			rt.respond(r, Commit{LSN: w.lsn}, ErrClosed)
		}
	}
	rt.waiters = nil
	for id, c := range rt.calls {
		c.res <- writeResult{err: ErrClosed}
		delete(rt.calls, id)
	}
	// The checkpoints' pinned snapshots and any import in progress; the
	// environment itself is Close's. A page walk still running (listPages)
	// ends first: it reads the environment's pages.
	rt.listing.Wait()
	rt.store.Close()
}

// queue holds a write for the next group commit.
func (rt *runtime) queue(w *writeReq) {
	if len(rt.pending) == 0 {
		rt.pendingSince = rt.b.now()
	}
	rt.pending = append(rt.pending, w)
}

// flush commits the queued writes when fewer than maxInFlight commits wait
// for their acks, when the batch is full, when they waited long enough, or
// when forced.
func (rt *runtime) flush(force bool) {
	if len(rt.pending) == 0 {
		return
	}
	hold := tickEvery(rt.b.cfg)
	if !force && len(rt.waiters) >= maxInFlight && len(rt.pending) < maxBatch && rt.b.now()-rt.pendingSince < hold {
		return
	}
	// The queue's array is reused for the next batch (committed keeps a
	// copy of what it holds on to); its references are cleared so that
	// answered writes can be collected.
	buf := rt.pending
	for len(rt.pending) > 0 {
		n := min(len(rt.pending), maxBatch)
		rt.runBatch(rt.pending[:n])
		rt.pending = rt.pending[n:]
	}
	clear(buf[:cap(buf)])
	rt.pending = buf[:0]
}

// runBatch commits a group of writes, in one transaction when every fn
// succeeds, else each on its own.
func (rt *runtime) runBatch(reqs []*writeReq) {
	if err := rt.node.CanWrite(); err != nil {
		err = mapRepErr(err)
		for _, r := range reqs {
			rt.respond(r, Commit{}, err)
		}
		return
	}
	if len(reqs) > 1 {
		ci, err := rt.commit(reqs)
		if err == nil {
			rt.committed(ci, reqs)
			return
		}
	}
	for _, r := range reqs {
		ci, err := rt.commit([]*writeReq{r})
		if err != nil {
			rt.respond(r, Commit{}, err)
			continue
		}
		rt.committed(ci, []*writeReq{r})
	}
}

// commit runs reqs in one write transaction.
func (rt *runtime) commit(reqs []*writeReq) (inmem.CommitInfo, error) {
	// Env.Update, not Begin: it reuses its transaction, so a batch
	// allocates nothing. A request's own error goes back as it is; the
	// environment's are mapped to the board's.
	var runErr error
	ci, err := rt.b.env.Update(func(tx *inmem.Tx) error {
		rt.txw = Tx{tx: tx, writable: true}
		for _, r := range reqs {
			if runErr = rt.run(r); runErr != nil {
				return runErr
			}
		}
		return nil
	})
	switch {
	case runErr != nil:
		return inmem.CommitInfo{}, runErr
	case err != nil:
		return ci, mapErr(err)
	}
	return ci, nil
}

// run executes one request inside rt.txw, turning a panic in user code into
// an error for that caller instead of killing the board.
func (rt *runtime) run(r *writeReq) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("board: Update function panicked: %v", p)
		}
	}()
	if r.fn != nil {
		return r.fn(&rt.txw)
	}
	for _, op := range r.ops {
		bk := rt.txw.Bucket(op.DB)
		switch op.Kind {
		case OpPut:
			err = bk.Put(op.Key, op.Value)
		case OpDelete:
			err = bk.Delete(op.Key)
		default:
			err = fmt.Errorf("board: op kind %d unknown", op.Kind)
		}
		if err != nil {
			return fmt.Errorf("board: %s %q in %q: %w", opName(op.Kind), op.Key, op.DB, err)
		}
	}
	return nil
}

func opName(k OpKind) string {
	if k == OpDelete {
		return "delete"
	}
	return "put"
}

func (rt *runtime) committed(ci inmem.CommitInfo, reqs []*writeReq) {
	b := rt.b
	b.ctr.batches.Add(1)
	b.ctr.commits.Add(uint64(len(reqs)))
	now := b.now()
	rt.node.Committed(now, rep.CommitInfo(ci))
	if b.cfg.AckPolicy == AckNone {
		for _, r := range reqs {
			rt.respond(r, Commit{LSN: ci.LSN, Perm: true}, nil)
		}
		return
	}
	// The node's ack timeout normally reports the outcome; the deadline
	// here only guards against a lost report.
	// reqs is a window of the reusable write queue: keep a copy.
	rt.waiters = append(rt.waiters, waiter{lsn: ci.LSN, deadline: now + 2*b.cfg.AckTimeout + 10*tickEvery(b.cfg), reqs: rt.keepReqs(reqs)})
}

// keepReqs copies reqs into a list a released waiter left (recycleReqs).
func (rt *runtime) keepReqs(reqs []*writeReq) []*writeReq {
	var kept []*writeReq
	if n := len(rt.spareReqs); n > 0 {
		kept, rt.spareReqs = rt.spareReqs[n-1], rt.spareReqs[:n-1]
	}
	return append(kept[:0], reqs...)
}

// recycleReqs takes back the request list of a waiter that was answered,
// for keepReqs. The spares are bounded by the commits that may be in
// flight at once, so a burst does not keep its lists for ever.
func (rt *runtime) recycleReqs(reqs []*writeReq) {
	clear(reqs) // answered: the requests go back to their pool
	if len(rt.spareReqs) < 2*maxInFlight {
		rt.spareReqs = append(rt.spareReqs, reqs[:0])
	}
}

func (rt *runtime) releasePerm(perm uint64) {
	n := 0
	for n < len(rt.waiters) && rt.waiters[n].lsn <= perm {
		w := rt.waiters[n]
		for _, r := range w.reqs {
			rt.respond(r, Commit{LSN: w.lsn, Perm: true}, nil)
		}
		n++
	}
	rt.dropWaiters(n)
}

// releaseFailed reports commits up to lsn not permanent: the node reports
// each timed-out commit, and earlier ones cannot have fared better.
func (rt *runtime) releaseFailed(lsn uint64) {
	n := 0
	for n < len(rt.waiters) && rt.waiters[n].lsn <= lsn {
		rt.failWaiter(rt.waiters[n])
		n++
	}
	rt.dropWaiters(n)
}

func (rt *runtime) failWaiter(w waiter) {
	rt.b.ctr.permFailed.Add(1)
	for _, r := range w.reqs {
		rt.respond(r, Commit{LSN: w.lsn}, nil)
	}
}

// awaitPerm registers a leased read of a snapshot holding commits up to lsn.
func (rt *runtime) awaitPerm(lsn uint64, done chan error) {
	if rt.role == RoleMaster && lsn <= rt.permLSN {
		done <- nil
		return
	}
	if rt.role != RoleMaster {
		done <- ErrNotMaster
		return
	}
	deadline := rt.b.now() + 2*rt.b.cfg.AckTimeout + 10*tickEvery(rt.b.cfg)
	i := len(rt.reads)
	for i > 0 && rt.reads[i-1].lsn > lsn {
		i--
	}
	rt.reads = slices.Insert(rt.reads, i, readIndex{lsn: lsn, deadline: deadline, done: done})
}

func (rt *runtime) releaseReads() {
	n := 0
	for n < len(rt.reads) && rt.reads[n].lsn <= rt.permLSN {
		rt.reads[n].done <- nil
		n++
	}
	rt.reads = slices.Delete(rt.reads, 0, n)
}

// failReads ends every waiting leased read with err: the mastership they
// relied on is over, or the commit they need was rolled back.
func (rt *runtime) failReads(err error) {
	for _, r := range rt.reads {
		r.done <- err
	}
	clear(rt.reads)
	rt.reads = rt.reads[:0]
	rt.permLSN = 0
}

func (rt *runtime) failAllWaiters() {
	rt.failReads(fmt.Errorf("%w: mastership ended before the read's snapshot was permanent", ErrNotMaster))
	for _, w := range rt.waiters {
		rt.failWaiter(w)
	}
	rt.dropWaiters(len(rt.waiters))
}

func (rt *runtime) failWaitersAbove(lsn uint64) {
	rt.failReads(fmt.Errorf("%w: the read's snapshot was rolled back to LSN %d", ErrLeaseExpired, lsn))
	keep := rt.waiters[:0]
	for _, w := range rt.waiters {
		if w.lsn >= lsn {
			for _, r := range w.reqs {
				rt.respond(r, Commit{}, fmt.Errorf("%w: commit at LSN %d was rolled back to %d", ErrHandleDead, w.lsn, lsn))
			}
			rt.recycleReqs(w.reqs)
			continue
		}
		keep = append(keep, w)
	}
	clear(rt.waiters[len(keep):])
	rt.waiters = keep
}

// dropWaiters removes the first n waiters, which were answered.
func (rt *runtime) dropWaiters(n int) {
	if n == 0 {
		return
	}
	for _, w := range rt.waiters[:n] {
		rt.recycleReqs(w.reqs)
	}
	copy(rt.waiters, rt.waiters[n:])
	clear(rt.waiters[len(rt.waiters)-n:])
	rt.waiters = rt.waiters[:len(rt.waiters)-n]
}

// expire handles lost reports and forwarded calls due for a retry.
func (rt *runtime) expire() {
	now := rt.b.now()
	n := 0
	for n < len(rt.waiters) && rt.waiters[n].deadline <= now {
		rt.failWaiter(rt.waiters[n])
		n++
	}
	rt.dropWaiters(n)
	keep := rt.reads[:0]
	for _, r := range rt.reads {
		if r.deadline <= now {
			r.done <- fmt.Errorf("%w: the read's snapshot did not become permanent within the ack timeout; retry", ErrLeaseExpired)
			continue
		}
		keep = append(keep, r)
	}
	clear(rt.reads[len(keep):])
	rt.reads = keep
	for _, c := range rt.calls {
		if now >= c.retryAt || c.sentTo != rt.master {
			rt.sendCall(c, now)
		}
	}
}

func (rt *runtime) respond(r *writeReq, c Commit, err error) {
	if r.res != nil {
		r.res <- writeResult{c: c, err: err}
		return
	}
	// A forwarded request: reply to the replica that sent it.
	rep := appReplyMsg{id: r.id, lsn: c.LSN, perm: c.Perm, code: replyCode(err)}
	if err != nil {
		rep.msg = err.Error()
	}
	payload := encodeAppReply(nil, rep)
	k := appKey{r.from, r.id}
	if _, ok := rt.served[k]; ok {
		rt.served[k] = payload
	}
	rt.node.SendApp(r.from, true, payload)
}

func replyCode(err error) uint8 {
	switch {
	case err == nil:
		return replyOK
	case errors.Is(err, ErrNotMaster):
		return replyNotMaster
	case errors.Is(err, ErrLockout):
		return replyLockout
	case errors.Is(err, ErrPoolFull):
		return replyPoolFull
	case errors.Is(err, ErrLogFull):
		return replyLogFull
	case errors.Is(err, ErrClosed):
		return replyClosed
	}
	return replyOther
}

func replyErr(r appReplyMsg) error {
	switch r.code {
	case replyOK:
		return nil
	case replyNotMaster:
		return fmt.Errorf("%w (master said: %s)", ErrNotMaster, r.msg)
	case replyLockout:
		return fmt.Errorf("%w (master said: %s)", ErrLockout, r.msg)
	case replyPoolFull:
		return fmt.Errorf("%w (master said: %s)", ErrPoolFull, r.msg)
	case replyLogFull:
		return fmt.Errorf("%w (master said: %s)", ErrLogFull, r.msg)
	case replyClosed:
		return fmt.Errorf("%w (master said: %s)", ErrUnavail, r.msg)
	}
	return fmt.Errorf("board: forwarded write failed on the master: %s", r.msg)
}

func mapRepErr(err error) error {
	switch {
	case errors.Is(err, rep.ErrLockout):
		return fmt.Errorf("%w (%w)", ErrLockout, err)
	case errors.Is(err, rep.ErrNotMaster):
		return ErrNotMaster
	case errors.Is(err, rep.ErrJoinFailure):
		return fmt.Errorf("%w (%w)", ErrJoinFailure, err)
	}
	return err
}

// app handles a received APP or APP_REPLY message.
func (rt *runtime) app(m *rep.Message) {
	b := rt.b
	if len(m.Payload) == 0 {
		return
	}
	switch m.Payload[0] {
	case appRequest:
		// The payload buffer is reused once this Ready is done; the
		// queued write keeps its own copy.
		id, ops, err := decodeAppRequest(bytes.Clone(m.Payload))
		if err != nil {
			b.log.Debug("dropping malformed forwarded write", "from", m.From, "err", err)
			return
		}
		k := appKey{m.From, id}
		if prev, ok := rt.served[k]; ok {
			if prev != nil { // finished: the reply was lost, send it again
				rt.node.SendApp(m.From, true, prev)
			}
			return
		}
		if err := rt.node.CanWrite(); err != nil {
			rt.node.SendApp(m.From, true, encodeAppReply(nil, appReplyMsg{id: id, code: replyCode(mapRepErr(err)), msg: mapRepErr(err).Error()}))
			return
		}
		rt.remember(k)
		b.ctr.appServed.Add(1)
		rt.queue(&writeReq{ops: ops, from: m.From, id: id})
	case appReply:
		r, err := decodeAppReply(m.Payload)
		if err != nil {
			return
		}
		c, ok := rt.calls[r.id]
		if !ok {
			return
		}
		if r.code == replyNotMaster || r.code == replyLockout || r.code == replyClosed {
			// The master moved or is busy: retry shortly.
			c.retryAt = b.now() + max(b.cfg.HeartbeatMonitor, 5*time.Millisecond)
			return
		}
		delete(rt.calls, r.id)
		c.res <- writeResult{c: Commit{LSN: r.lsn, Perm: r.perm}, err: replyErr(r)}
	}
}

func (rt *runtime) remember(k appKey) {
	if len(rt.servedQ) >= appDedupe {
		delete(rt.served, rt.servedQ[0])
		copy(rt.servedQ, rt.servedQ[1:])
		rt.servedQ = rt.servedQ[:len(rt.servedQ)-1]
	}
	rt.served[k] = nil
	rt.servedQ = append(rt.servedQ, k)
}

// sendCall (re)sends a forwarded Apply to the current master; when this
// board has become master it runs the call itself.
func (rt *runtime) sendCall(c *appCall, now time.Duration) {
	b := rt.b
	resend := max(b.cfg.AckTimeout+4*b.cfg.HeartbeatMonitor, 20*time.Millisecond)
	if rt.master == 0 {
		c.sentTo, c.retryAt = 0, now+b.cfg.HeartbeatMonitor
		return
	}
	if rt.master == b.cfg.Site {
		delete(rt.calls, c.id)
		_, ops, err := decodeAppRequest(c.payload)
		if err != nil {
			c.res <- writeResult{err: err}
			return
		}
		rt.queue(&writeReq{ops: ops, res: c.res})
		return
	}
	c.sentTo, c.sentAt, c.retryAt = rt.master, now, now+resend
	// The reply must not wait out a rest.
	b.endPace()
	rt.node.SendApp(rt.master, false, c.payload)
}

// forward sends a write to the master and waits for its reply.
func (b *Board) forward(ctx context.Context, id uint64, payload []byte) (Commit, error) {
	c := &appCall{id: id, payload: payload, res: make(chan writeResult, 1)}
	if err := b.do(ctx, func() {
		b.rt.calls[id] = c
		b.rt.sendCall(c, b.now())
	}); err != nil {
		return Commit{}, err
	}
	select {
	case r := <-c.res:
		return r.c, r.err
	case <-ctx.Done():
		// Forget the call; a late reply is ignored.
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = b.do(rctx, func() { delete(b.rt.calls, id) })
		cancel()
		select {
		case r := <-c.res:
			return r.c, r.err
		default:
		}
		return Commit{}, fmt.Errorf("%w: forwarded write got no answer from master %d: %w", ErrUnavail, b.Master(), ctx.Err())
	case <-b.closing:
		return Commit{}, ErrClosed
	}
}

func binaryPutID(payload []byte, id uint64) { binary.LittleEndian.PutUint64(payload[1:], id) }

func (rt *runtime) elect() { rt.node.Elect(rt.b.now()) }

// electionSettled reports the master once no election runs and this board
// is master or in sync with one.
func (rt *runtime) electionSettled() uint16 {
	st := rt.node.Status()
	if st.ElectionRunning || st.Master == rep.NoMaster || !st.StartupDone {
		return 0
	}
	return st.Master
}

func (rt *runtime) stepDown() { rt.node.StepDown(rt.b.now()) }

func (rt *runtime) leaseCheck() error {
	if err := rt.node.CanWrite(); err != nil {
		return mapRepErr(err)
	}
	if !rt.node.LeaseValid(rt.b.now()) {
		return fmt.Errorf("%w: no majority of unexpired grants", ErrLeaseExpired)
	}
	return nil
}
