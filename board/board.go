package board

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/inmem"
)

// Board is one board's replicated environment and its runtime. All methods
// are safe for concurrent use.
//
// One goroutine (the loop) owns the replication state machine: it feeds it
// received messages, ticks and local commits, and carries out what it asks
// (send, apply, roll back, initialise, checkpoint, release commit waiters,
// deliver events). Writes run on that goroutine too, in group-commit batches,
// so a local commit can never interleave with records applied from a master.
type Board struct {
	cfg    Config
	log    *slog.Logger
	origin time.Time

	// envMu guards the env pointer: internal init replaces the environment
	// under the write lock; View and friends hold the read lock.
	envMu sync.RWMutex
	env   *inmem.Env
	views viewTxs // View's Tx wrappers

	tr     backplane.Transport
	events *eventQueue

	ctrlCh   chan func()
	closing  chan struct{}
	loopDone chan struct{}
	rxDone   chan struct{}

	startOnce sync.Once
	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	pub     atomic.Pointer[published]
	condMu  sync.Mutex
	pubCond chan struct{} // closed and replaced whenever pub changes; guarded by condMu

	nextAppID atomic.Uint64
	ctr       struct {
		commits, batches, appForwarded, appServed, sendErrors, permFailed atomic.Uint64
		stalls, keepAlives, readerHoldWarnings                            atomic.Uint64
		longestStall                                                      atomic.Int64 // ns
	}

	// rtMu serialises everything that touches rt. The work runs on the
	// goroutine that has it: the receive goroutine steps what it received,
	// a writer queues (and, with nothing in flight, commits) its own write,
	// the loop goroutine runs timers and control calls (or, finding rtMu
	// held, leaves them to the holder: tickOwed, ctrlOwed). Handing each to one
	// loop goroutine cost two goroutine wake-ups per received batch and one
	// per write, each microseconds on a 2-core board: the largest share of
	// a replicated commit once the network round trip is paid.
	rtMu sync.Mutex
	rt   *runtime // guarded by rtMu
	// inbox holds the writes submitted while rtMu was held; whoever holds
	// rtMu takes them before it lets go (unlockRT). Writers that queued on
	// rtMu itself slept and woke one by one, and each then committed what
	// little had gathered: under AckNone, where no commit waits for acks,
	// 64 writers made 64 one-write commits.
	inMu    sync.Mutex
	inbox   []*writeReq // guarded by inMu
	inSpare []*writeReq // the last inbox taken, reused; guarded by rtMu
	inboxN  atomic.Int32
	// reqs recycles local writers' requests with their result channels,
	// so that Update allocates no request or channel per call. A request
	// goes back only once its caller has received the result, which the
	// runtime sends exactly once and as its last use of the request.
	reqs sync.Pool
	// rxPending: the receive goroutine holds a batch it has not stepped.
	rxPending atomic.Bool
	// paced: this replica's acks are not waited for (rep.Node.Paced) and
	// it has no forwarded write outstanding, so the receive goroutine
	// rests for Config.Pace after a batch and takes what gathered as one.
	// rxWake cuts a rest short when that ends (a write to forward, an
	// election).
	paced  atomic.Bool
	rxWake chan struct{}
	// tickOwed: the loop's timer fired while rtMu was held, and the holder
	// runs the tick before it lets go (unlockRT). The loop never waits for
	// rtMu on a tick, so it stays free to speak for a master whose runtime
	// is held by a thread the OS descheduled (keepAlive).
	tickOwed atomic.Bool
	// ctrlOwed holds control calls (Board.do: Stat, Elect, StepDown,
	// forwarded writes, ...) that reached the loop while rtMu was held; the
	// holder runs them before it lets go (unlockRT), as it runs an owed
	// tick. The loop used to wait for rtMu to run them, so a monitoring
	// agent polling Stat could hold the loop in that wait while the
	// runtime's thread was descheduled, the one time the loop must speak
	// for the master.
	ctrlMu   sync.Mutex
	ctrlOwed []func() // guarded by ctrlMu
	ctrlN    atomic.Int32
	// heldTicks counts the loop's ticks that found rtMu held since the
	// runtime last ran one; tickRanAt is when it did (ns since origin).
	heldTicks atomic.Uint32
	tickRanAt atomic.Int64
	// keepAlive is the master's rep.Node.KeepAlive message for its tenure,
	// nil while not master: what the loop sends when the runtime is held.
	keepAlive atomic.Pointer[[]byte]
	// masterHeardAt mirrors runtime.masterHeard (nanoseconds since origin)
	// for the loop's decision to let a tick wait, taken before rtMu.
	masterHeardAt atomic.Int64
}

// published is the loop's state as other goroutines see it.
type published struct {
	role     Role
	master   uint16 // 0 = none
	gen      uint32
	canWrite error
	// ready: a master is known and this board is it or has caught up with it.
	ready bool
}

// Open validates cfg, creates the environment and the transport, and returns
// a Board that takes part in the group once Start is called.
func Open(cfg Config) (*Board, error) {
	cfg, err := cfg.validated()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("site", cfg.Site, "group", cfg.Group)
	b := &Board{
		cfg:      cfg,
		log:      log,
		origin:   time.Now(),
		events:   newEventQueue(cfg.EventBuffer),
		ctrlCh:   make(chan func(), 16),
		closing:  make(chan struct{}),
		loopDone: make(chan struct{}),
		rxDone:   make(chan struct{}),
		rxWake:   make(chan struct{}, 1),
		pubCond:  make(chan struct{}),
	}
	b.nextAppID.Store(rand.Uint64() >> 1)
	b.pub.Store(&published{role: RoleStarting, canWrite: ErrNotStarted})

	env, err := openEnv(cfg, log)
	if err != nil {
		return nil, err
	}
	b.env = env
	rt, err := newRuntime(b, env)
	if err != nil {
		closeEnv(env, cfg)
		return nil, err
	}
	b.rt = rt
	tr, err := newTransport(cfg)
	if err != nil {
		rt.store.Close()
		closeEnv(env, cfg)
		return nil, err
	}
	b.tr = tr
	return b, nil
}

// Start joins the group: as a replica (StartClient, an election picks a
// master if none answers) or as the designated master (StartMaster). It
// returns once the runtime runs; use WaitMaster or Events to learn when a
// master is known. ctx bounds the start itself.
func (b *Board) Start(ctx context.Context, mode StartMode) error {
	if mode != StartClient && mode != StartMaster {
		return fmt.Errorf("%w: start mode %d unknown; use StartClient or StartMaster", ErrInvalidConfig, mode)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-b.closing:
		return ErrClosed
	default:
	}
	err := fmt.Errorf("board: Start called twice; the board is already running")
	b.startOnce.Do(func() {
		err = nil
		b.started.Store(true)
		b.rtMu.Lock()
		b.rt.start(mode)
		b.unlockRT()
		go b.rxLoop()
		go b.loop()
		b.log.Info("board started", "mode", mode, "transport", b.cfg.Transport, "priority", b.cfg.Priority)
	})
	return err
}

// Close stops the board: the runtime stops, pending calls fail with
// ErrClosed, the transport is closed and the environment released (a named
// shared-memory region is removed unless Config.KeepShm is set). Other
// boards see this board go silent and, if it was master, elect a new one.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		close(b.closing)
		err := b.tr.Close()
		if b.started.Load() {
			<-b.rxDone
			<-b.loopDone // the loop closed the store
		} else {
			b.rt.store.Close()
		}
		b.publish(&published{role: RoleClosed, canWrite: ErrClosed})
		b.envMu.Lock()
		if cerr := closeEnv(b.env, b.cfg); err == nil {
			err = cerr
		}
		b.envMu.Unlock()
		b.closeErr = err
		b.log.Info("board closed")
	})
	return b.closeErr
}

// Events delivers replication events in order. The channel is bounded
// (Config.EventBuffer); when nobody reads, the oldest events are dropped and
// counted (Stat.Counters.EventsDropped, gaps in Event.Seq). It is never
// closed.
func (b *Board) Events() <-chan Event { return b.events.ch }

// Site is this board's site id.
func (b *Board) Site() uint16 { return b.cfg.Site }

// Config returns the configuration in effect (defaults filled in).
func (b *Board) Config() Config { return b.cfg }

// Master returns the master this board knows of, 0 if none.
func (b *Board) Master() uint16 { return b.pub.Load().master }

// IsMaster reports whether this board is master now.
func (b *Board) IsMaster() bool { return b.pub.Load().role == RoleMaster }

// WaitMaster blocks until this board knows a master (and, on a replica, has
// finished synchronising with it), then returns the master's site.
func (b *Board) WaitMaster(ctx context.Context) (uint16, error) {
	for {
		p, ch := b.state()
		if p.role == RoleClosed {
			return 0, ErrClosed
		}
		if p.ready {
			return p.master, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: waiting for a master: %w", ErrUnavail, ctx.Err())
		}
	}
}

// Elect asks for an election now (a master re-announces itself) and waits
// until it is settled and a master is known, which it returns.
func (b *Board) Elect(ctx context.Context) (uint16, error) {
	if err := b.do(ctx, func() { b.rt.elect() }); err != nil {
		return 0, err
	}
	for {
		var m uint16
		if err := b.do(ctx, func() { m = b.rt.electionSettled() }); err != nil {
			return 0, err
		}
		if m != 0 {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: waiting for the election to settle: %w", ErrUnavail, ctx.Err())
		case <-time.After(tickEvery(b.cfg)):
		}
	}
}

// StepDown makes a master give up mastership and waits until it is a
// replica; the others elect a new master. On a replica it does nothing.
func (b *Board) StepDown(ctx context.Context) error {
	if err := b.do(ctx, func() { b.rt.stepDown() }); err != nil {
		return err
	}
	for {
		p, ch := b.state()
		if p.role != RoleMaster {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting to step down: %w", ErrUnavail, ctx.Err())
		}
	}
}

// View runs fn on a consistent snapshot of this board's data. It works on
// every board; on a replica it may lag the master (use ViewLeased on the
// master for authoritative reads).
func (b *Board) View(fn func(*Tx) error) error {
	b.envMu.RLock()
	defer b.envMu.RUnlock()
	if b.pub.Load().role == RoleClosed {
		return ErrClosed
	}
	return b.env.View(func(tx *inmem.Tx) error { return b.views.run(tx, fn) })
}

// ViewLeased runs fn on the master only while it holds valid leases from a
// majority, so what fn reads is the group's latest state (linearizable).
// It fails with ErrNotMaster on a replica and ErrLeaseExpired when the
// master's leases lapsed (or Config.Leases is off).
func (b *Board) ViewLeased(fn func(*Tx) error) error {
	switch p := b.pub.Load(); {
	case p.role == RoleClosed:
		return ErrClosed
	case !b.cfg.Leases:
		return fmt.Errorf("%w: leases are off (Config.Leases=false); enable them to read authoritatively", ErrLeaseExpired)
	case p.role != RoleMaster:
		// Checked before taking envMu: a replica may be swapping in an
		// internally initialised environment under the write lock.
		return ErrNotMaster
	}
	b.envMu.RLock()
	defer b.envMu.RUnlock()
	// Snapshot first, lease check second: every commit acknowledged before
	// the check is in the snapshot, and no other master can commit while
	// the lease checked after it holds.
	tx, err := b.env.Begin(false)
	if err != nil {
		return err
	}
	defer tx.Abort()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Read index: the snapshot may hold commits not yet permanent, which a
	// new master could roll back; the read waits until they are (buffered,
	// so the loop never blocks on a reader that gave up).
	var leaseErr error
	permDone := make(chan error, 1)
	if err := b.do(ctx, func() {
		if leaseErr = b.rt.leaseCheck(); leaseErr == nil {
			b.rt.awaitPerm(b.env.LastCommit().LSN, permDone)
		}
	}); err != nil {
		return err
	}
	if leaseErr != nil {
		return leaseErr
	}
	select {
	case err := <-permDone:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("%w: the read's snapshot did not become permanent in time; retry", ErrLeaseExpired)
	}
	// The lease must still hold now that the snapshot is permanent: reads
	// are served only while no other master can have been elected.
	if err := b.do(ctx, func() { leaseErr = b.rt.leaseCheck() }); err != nil {
		return err
	}
	if leaseErr != nil {
		return leaseErr
	}
	return fn(&Tx{tx: tx})
}

// Update runs fn in a write transaction on the master and commits it.
// Concurrent Updates are combined into one transaction (group commit); if
// one fn fails the others are rerun individually, so fn may run more than
// once and must have no side effects outside tx. fn runs on the board's
// replication goroutine: keep it short, and call no Board method from it
// (other than View).
//
// It returns when the commit is permanent by the ack policy (Perm=true),
// when the policy was missed within AckTimeout (Perm=false, no error; the
// commit stays on the master), or with an error: ErrNotMaster, ErrLockout,
// ErrPoolFull, ErrLogFull, fn's error, or ctx's error (the commit may still
// happen).
func (b *Board) Update(ctx context.Context, fn func(*Tx) error) (Commit, error) {
	if fn == nil {
		return Commit{}, fmt.Errorf("board: Update with a nil function")
	}
	p := b.pub.Load()
	if p.role == RoleClosed {
		return Commit{}, ErrClosed
	}
	if p.canWrite != nil {
		return Commit{}, p.canWrite
	}
	w := b.newReq()
	w.fn = fn
	return b.submit(ctx, w)
}

// Apply performs ops in one transaction on the master, from any board: on a
// replica they are forwarded over the backplane and retried across master
// changes until ctx ends. The result is the master's (Commit.Perm as for
// Update). Forwarding is at-least-once; puts and deletes are idempotent.
func (b *Board) Apply(ctx context.Context, ops ...Op) (Commit, error) {
	payload, err := encodeAppRequest(nil, 0, ops)
	if err != nil {
		return Commit{}, err
	}
	for {
		p := b.pub.Load()
		if p.role == RoleClosed {
			return Commit{}, ErrClosed
		}
		if p.role == RoleMaster {
			w := b.newReq()
			w.ops = ops
			c, err := b.submit(ctx, w)
			if !errors.Is(err, ErrNotMaster) {
				return c, err
			}
			continue // lost mastership meanwhile: forward instead
		}
		id := b.nextAppID.Add(1)
		binaryPutID(payload, id)
		b.ctr.appForwarded.Add(1)
		return b.forward(ctx, id, payload)
	}
}

// newReq returns a local writer's request, recycled when possible.
func (b *Board) newReq() *writeReq {
	if w, ok := b.reqs.Get().(*writeReq); ok {
		return w
	}
	return &writeReq{res: make(chan writeResult, 1)}
}

// submit queues a write for the next group commit (committing it at once
// when nothing is in flight) and waits for its result. w comes from newReq;
// submit recycles it once the result is in (a caller that stops waiting
// leaves it to the collector: the runtime may still answer it).
func (b *Board) submit(ctx context.Context, w *writeReq) (Commit, error) {
	if !b.started.Load() {
		return Commit{}, ErrNotStarted
	}
	if err := ctx.Err(); err != nil {
		return Commit{}, err
	}
	b.inMu.Lock()
	b.inbox = append(b.inbox, w)
	b.inboxN.Store(int32(len(b.inbox)))
	b.inMu.Unlock()
	// If another goroutine holds rtMu, it takes the write before letting
	// go: it reads inboxN after unlocking, and this store came first.
	if b.rtMu.TryLock() {
		b.unlockRT()
	}
	select {
	case r := <-w.res:
		*w = writeReq{res: w.res}
		b.reqs.Put(w)
		return r.c, r.err
	case <-b.closing:
		return Commit{}, ErrClosed
	case <-ctx.Done():
		return Commit{}, ctx.Err()
	}
}

// unlockRT releases rtMu, first running a tick the loop left owed and
// handing the runtime the writes in the inbox, and takes it back for ticks
// and writes that arrived meanwhile unless someone else has it (who then
// runs them). Every holder of rtMu lets go through here, so neither a tick
// nor a write waits for longer than the runtime is held.
func (b *Board) unlockRT() {
	for {
		if b.ctrlN.Load() > 0 {
			b.runOwedCtrl()
		}
		if b.tickOwed.Load() {
			b.rt.tick()
		}
		if b.inboxN.Load() > 0 {
			b.takeInbox()
		}
		b.rtMu.Unlock()
		if b.inboxN.Load() == 0 && !b.tickOwed.Load() && b.ctrlN.Load() == 0 || !b.rtMu.TryLock() {
			return
		}
	}
}

// oweCtrl leaves control call f to whoever holds rtMu next (unlockRT).
// The caller tries rtMu after this, so that either it or the holder, who
// checks after letting go, sees f.
func (b *Board) oweCtrl(f func()) {
	b.ctrlMu.Lock()
	b.ctrlOwed = append(b.ctrlOwed, f)
	b.ctrlN.Add(1)
	b.ctrlMu.Unlock()
}

// runOwedCtrl runs the owed control calls; rtMu is held. A call owed to a
// runtime that has stopped is dropped: its caller (do) returns ErrClosed
// once the loop is done, as it did when the loop ran the calls itself.
func (b *Board) runOwedCtrl() {
	b.ctrlMu.Lock()
	fs := b.ctrlOwed
	b.ctrlOwed = nil
	b.ctrlN.Store(0)
	b.ctrlMu.Unlock()
	if b.rt.stopped {
		return
	}
	for _, f := range fs {
		f()
		b.rt.processReady()
	}
}

// takeInbox queues the inbox's writes as one group commit; rtMu is held.
func (b *Board) takeInbox() {
	b.inMu.Lock()
	reqs := b.inbox
	b.inbox = b.inSpare[:0]
	b.inboxN.Store(0)
	b.inMu.Unlock()
	rt := b.rt
	if rt.stopped {
		for _, w := range reqs {
			w.res <- writeResult{err: ErrClosed}
		}
	} else {
		for _, w := range reqs {
			rt.queue(w)
		}
		rt.flush(false)
		rt.processReady()
	}
	clear(reqs)
	b.inSpare = reqs[:0]
}

// do runs f under rtMu, on the loop goroutine or, when the loop found rtMu
// held, on the goroutine that held it (before it let go), and waits for it.
func (b *Board) do(ctx context.Context, f func()) error {
	if !b.started.Load() {
		return ErrNotStarted
	}
	done := make(chan struct{})
	g := func() { f(); close(done) }
	select {
	case b.ctrlCh <- g:
	case <-b.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: board busy: %w", ErrUnavail, ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-b.loopDone:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: board busy: %w", ErrUnavail, ctx.Err())
	}
}

// now is the monotonic clock the replication state machine runs on.
func (b *Board) now() time.Duration { return time.Since(b.origin) }

func (b *Board) publish(p *published) {
	b.condMu.Lock()
	b.pub.Store(p)
	close(b.pubCond)
	b.pubCond = make(chan struct{})
	b.condMu.Unlock()
}

// state returns the published state and a channel closed when it changes.
func (b *Board) state() (*published, chan struct{}) {
	b.condMu.Lock()
	defer b.condMu.Unlock()
	return b.pub.Load(), b.pubCond
}
