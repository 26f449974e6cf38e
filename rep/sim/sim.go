package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/rep"
)

// kvDB is the database the workload writes.
const kvDB = "kv"

// hashEvery: one master commit in hashEvery records its content hash for the
// replicas' state comparison.
const hashEvery = 4

// Result is one finished run.
type Result struct {
	Seed       uint64
	Config     Config
	History    *History
	Violations []string
	TraceHash  uint64
	Steps      uint64
	Trace      string // the last steps, filled when there are violations
	Story      []string
	Stats      Stats
	Sites      []string // each site's rep status at the end
}

// countNode adds what a node's counters say it exercised (at its
// replacement by a restart, or the end of the run).
func (s *Sim) countNode(n *rep.Node) {
	c := n.Counters()
	s.stats.PaceSwaps += int(c.PaceSwaps)
	s.stats.InitResumes += int(c.InitResumes)
	s.stats.InitPagesKept += int(c.InitPagesKept)
}

// Stats counts what a run exercised, so a sweep can show its coverage.
type Stats struct {
	Writes, PermWrites, NotPerm, Orphaned, Reads int
	Crashes, Restarts, Partitions, LossBursts    int
	Freezes, KeepAlives                          int
	PacedReads, PaceSwaps                        int
	Elections, Rollbacks, Inits, Checkpoints     int
	InitResumes, InitPagesKept, InitsGivenUp     int
	InitFailures                                 int
	EnvErrors                                    int
	PermRollbacksAnySite                         int
	MaxMasters                                   int
	Sent, Dropped, Duplicated, Blocked           uint64
}

func (s *Stats) add(o Stats) {
	s.Writes += o.Writes
	s.PermWrites += o.PermWrites
	s.NotPerm += o.NotPerm
	s.Orphaned += o.Orphaned
	s.Reads += o.Reads
	s.Crashes += o.Crashes
	s.Restarts += o.Restarts
	s.Partitions += o.Partitions
	s.LossBursts += o.LossBursts
	s.Freezes += o.Freezes
	s.KeepAlives += o.KeepAlives
	s.PacedReads += o.PacedReads
	s.PaceSwaps += o.PaceSwaps
	s.Elections += o.Elections
	s.Rollbacks += o.Rollbacks
	s.Inits += o.Inits
	s.InitResumes += o.InitResumes
	s.InitPagesKept += o.InitPagesKept
	s.InitsGivenUp += o.InitsGivenUp
	s.InitFailures += o.InitFailures
	s.Checkpoints += o.Checkpoints
	s.EnvErrors += o.EnvErrors
	s.PermRollbacksAnySite += o.PermRollbacksAnySite
	s.MaxMasters = max(s.MaxMasters, o.MaxMasters)
	s.Sent += o.Sent
	s.Dropped += o.Dropped
	s.Duplicated += o.Duplicated
	s.Blocked += o.Blocked
}

type genBirth struct {
	gen uint32
	at  time.Duration
}

// pendingWrite is a client write waiting for its Perm answer.
type pendingWrite struct {
	op  int // index into History.Ops
	lsn uint64
}

// pendingRead is a leased read waiting until everything it saw is Perm: a
// read may see local commits not yet durable, and returning those before
// they are Perm would let a later master contradict it (read-index rule).
type pendingRead struct {
	op  Op
	lsn uint64
}

// site is one board: its node, its environment, its clock.
type site struct {
	id       uint16
	priority uint32
	alive    bool
	boot     uint32
	bootAt   time.Duration
	origin   time.Duration // local clock reading at boot
	rate     float64       // local clock rate, within the skew bound
	env      *inmem.Env
	store    *rep.EnvStorage
	node     *rep.Node
	last     CommitID
	pending  []pendingWrite
	reads    []pendingRead
	permLSN  uint64 // the last Ready's PermLSN
	// recovering: restarted empty, not yet holding the Perm writes that
	// existed when it crashed.
	recovering    bool
	recoverTarget CommitID
	slow          bool
	lastErr       string
	// frozen: the site's runtime does not run (no ticks, no input; what
	// arrives waits in held) while its process does: a board whose thread
	// holding the runtime was descheduled. A frozen master's process sends
	// keepAlive (rep.Node.KeepAlive, taken when it froze) every heartbeat
	// period until frozenAt+keepAliveLimit, as the board's loop does.
	frozen    bool
	frozenAt  time.Duration
	held      []*simMsg
	keepAlive []byte
	// restUntil: a paced site rests until then after a read (Config.Pace);
	// what arrives meanwhile waits in paced, and a wake is queued.
	restUntil time.Duration
	paced     []*simMsg
	waking    bool
}

// Sim is one simulated run in progress.
type Sim struct {
	seed    uint64
	cfg     Config
	rng     *rand.Rand
	q       queue
	net     *network
	tr      *tracer
	now     time.Duration
	sites   []*site // index = site id; [0] unused
	h       *History
	clock   int64 // porcupine's logical time
	keys    []string
	nextKey int
	phase   int // 0 faults, 1 quiesce, 2 done
	stats   Stats
	story   []string
	root    CommitID
	permIdx []int // indices of Perm ops, for rollback tracking
	err     error // a harness failure (not a rep violation)
	// gens records when each newest gen first appeared, to tell whether a
	// restarted site forgot a gen newer than a write's.
	gens          []genBirth
	newestGen     uint32
	commits       int // master commits so far (hash sampling)
	genMaster     map[uint32]uint16
	leaseViolated bool
}

// Run executes one seeded run and checks it.
func Run(seed uint64, cfg Config) *Result { return run(seed, cfg, false) }

// RunTraced is Run keeping every step for the failure trace (replays).
func RunTraced(seed uint64, cfg Config) *Result { return run(seed, cfg, true) }

func run(seed uint64, cfg Config, traceAll bool) *Result {
	s := newSim(seed, cfg)
	s.tr.all = traceAll
	defer s.close()
	s.run()
	res := &Result{Seed: seed, Config: cfg, History: s.h, TraceHash: s.tr.hash, Steps: s.tr.count, Story: s.story}
	s.stats.Sent, s.stats.Dropped, s.stats.Duplicated, s.stats.Blocked = s.net.sent, s.net.dropped, s.net.duplicated, s.net.blockedCount
	res.Stats = s.stats
	if s.err != nil {
		res.Violations = append(res.Violations, "harness: "+s.err.Error())
	}
	res.Violations = append(res.Violations, Check(s.h)...)
	if len(res.Violations) > 0 {
		res.Trace = s.tr.dump()
		for _, st := range s.sites[1:] {
			if !st.alive {
				res.Sites = append(res.Sites, fmt.Sprintf("site %d: down", st.id))
				continue
			}
			x := st.node.Status()
			res.Sites = append(res.Sites, fmt.Sprintf("site %d: %v master=%d gen=%d egen=%d electing=%v startupdone=%v lockout=%v joinfailed=%v end=%d applied=%d perm=%d masterEnd=%d recovering=%v witnesses=%d/%d floor=%d/%d counters=%+v",
				st.id, x.Role, x.Master, x.Gen, x.Egen, x.ElectionRunning, x.StartupDone, x.Lockout, x.JoinFailed, x.EndLSN, x.AppliedLSN, x.PermLSN, x.MasterEndLSN,
				x.Recovering, x.Witnesses, x.WitnessesNeeded, x.VoteFloorGen, x.VoteFloorEnd, x.Counters))
		}
	}
	return res
}

func newSim(seed uint64, cfg Config) *Sim {
	s := &Sim{seed: seed, cfg: cfg, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), tr: newTracer(),
		genMaster: make(map[uint32]uint16)}
	s.net = newNetwork(cfg.Sites, s.rng, &s.q, cfg.Net)
	s.tr.typeName = func(t uint8) string { return rep.MsgType(t).String() }
	// Leased reads are promised linearizable only where writes are promised
	// durable: under NONE a lost Perm write contradicts an earlier read.
	s.h = &History{Sites: cfg.Sites, Guarantee: cfg.Guarantee(), Leases: cfg.Leases && cfg.Guarantee(), tree: newCommitTree()}
	s.sites = make([]*site, cfg.Sites+1)
	for i := 1; i <= cfg.Sites; i++ {
		st := &site{id: uint16(i), priority: 100 + uint32(s.rng.IntN(100))}
		if i > cfg.Sites-cfg.ZeroPriority {
			st.priority = 0
		}
		s.sites[i] = st
	}
	if cfg.Buggify.SlowSite {
		s.sites[1+s.rng.IntN(cfg.Sites)].slow = true
	}
	return s
}

func (s *Sim) close() {
	for _, st := range s.sites[1:] {
		if st.store != nil {
			st.store.Close()
		}
		if st.env != nil {
			st.env.Close()
			st.env = nil
		}
	}
}

func (s *Sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf(format, args...)
	}
}

func (s *Sim) violate(format string, args ...any) {
	msg := fmt.Sprintf("at %v: ", s.now) + fmt.Sprintf(format, args...)
	s.h.Violations = append(s.h.Violations, msg)
	s.tr.notef(s.now, evPhase, 0, "VIOLATION %s", msg)
}

func (s *Sim) tell(format string, args ...any) {
	if len(s.story) < 400 {
		s.story = append(s.story, fmt.Sprintf("%10v ", s.now)+fmt.Sprintf(format, args...))
	}
}

// isMaster: the node takes writes (Status allocates, CanWrite does not).
func (st *site) isMaster() bool { return st.node.CanWrite() == nil }

// localNow is a site's own clock: it starts at a random origin at boot and
// runs at the site's rate.
func (st *site) localNow(now time.Duration) time.Duration {
	return st.origin + time.Duration(float64(now-st.bootAt)*st.rate)
}

func (s *Sim) run() {
	for _, st := range s.sites[1:] {
		mode := rep.StartClient
		if s.cfg.StartMaster && st.id == 1 {
			mode = rep.StartMaster
		}
		s.boot(st, mode)
	}
	s.q.push(event{at: s.cfg.OpEvery, kind: evClient})
	if s.cfg.Chaos.Every > 0 {
		s.q.push(event{at: s.cfg.Chaos.Every, kind: evChaos})
	}
	s.q.push(event{at: s.cfg.Duration, kind: evPhase})
	for i, f := range s.cfg.Script {
		s.q.push(event{at: f.At, kind: evScript, arg: i})
	}
	for s.q.Len() > 0 && s.phase < 2 && s.err == nil {
		e := s.q.pop()
		s.now = e.at
		s.dispatch(e)
		s.checkLeases()
	}
	s.finish()
}

func (s *Sim) dispatch(e event) {
	switch e.kind {
	case evDeliver:
		st := s.sites[e.site]
		s.tr.add(step{at: s.now, kind: evDeliver, site: e.site, from: e.msg.from, typ: e.msg.typ, size: len(e.msg.payload)})
		if !st.alive {
			return
		}
		if st.frozen {
			st.held = append(st.held, e.msg)
			return
		}
		if len(st.paced) > 0 || s.now < st.restUntil {
			st.paced = append(st.paced, e.msg)
			s.stats.PacedReads++
			if !st.waking {
				st.waking = true
				s.q.push(event{at: st.restUntil, kind: evPaceWake, site: st.id, boot: st.boot})
			}
			return
		}
		s.step(st, e.msg)
		s.rest(st)
	case evPagesListed:
		st := s.sites[e.site]
		if !st.alive || st.boot != e.boot {
			return
		}
		if st.frozen {
			// The report waits for the runtime, as a board's control
			// call waits for its holder.
			e.at = s.now + s.cfg.Tick
			s.q.push(e)
			return
		}
		st.node.PagesListed(e.lsn, e.pages)
		s.ready(st)
	case evPaceWake:
		st := s.sites[e.site]
		if !st.alive || st.boot != e.boot {
			return
		}
		st.waking = false
		if !st.frozen {
			s.readPaced(st, nil)
		}
	case evTick:
		st := s.sites[e.site]
		if !st.alive || st.boot != e.boot {
			return
		}
		if !st.frozen {
			st.node.Tick(st.localNow(s.now))
			s.ready(st)
			if len(st.paced) > 0 && !st.node.Paced() {
				// Pacing ended (an election, say): the board cuts its
				// rest short.
				s.readPaced(st, nil)
			}
		}
		s.q.push(event{at: s.now + s.cfg.Tick, kind: evTick, site: st.id, boot: st.boot})
	case evClient:
		if s.phase == 0 {
			s.client()
			s.q.push(event{at: s.now + s.think(), kind: evClient})
		}
	case evChaos:
		if s.phase == 0 {
			s.chaos()
			s.q.push(event{at: s.now + time.Duration(s.rng.Int64N(int64(2*s.cfg.Chaos.Every))+1), kind: evChaos})
		}
	case evRestart:
		st := s.sites[e.site]
		if st.alive || st.boot != e.boot {
			return
		}
		s.tr.notef(s.now, evRestart, st.id, "restart empty")
		s.tell("site %d restarts with empty memory", st.id)
		s.stats.Restarts++
		s.boot(st, rep.StartClient)
	case evHeal:
		if s.phase == 0 {
			s.net.healAll()
			s.tr.notef(s.now, evHeal, 0, "partition healed")
			s.tell("partition healed")
		}
	case evLossEnd:
		s.net.burst = 0
		s.tr.notef(s.now, evLossEnd, 0, "loss burst over")
	case evPhase:
		s.quiesceStep()
	case evScript:
		if s.phase == 0 {
			s.script(s.cfg.Script[e.arg])
		}
	case evThaw:
		if st := s.sites[e.site]; st.alive && st.boot == e.boot {
			s.thaw(st)
		}
	case evKeepAlive:
		st := s.sites[e.site]
		if !st.alive || st.boot != e.boot || !st.frozen || s.now-st.frozenAt > keepAliveLimit {
			return
		}
		s.net.send(s.now, st.id, rep.AllSites, uint8(rep.MsgHeartbeat), st.keepAlive)
		s.stats.KeepAlives++
		s.q.push(event{at: s.now + heartbeatSend, kind: evKeepAlive, site: st.id, boot: st.boot})
	}
}

// freeze stops st's runtime for d: no ticks, and what arrives waits, as on a
// board whose thread holding the runtime lost its CPU. If st is master, its
// process speaks for it (KeepAlive) every heartbeat period, for at most
// keepAliveLimit, as the board's loop does; rep must stay safe with a master
// that looks alive to its replicas while it cannot act (its lease runs out
// on its own clock, and grants answering a keepalive renew nothing).
func (s *Sim) freeze(st *site, d time.Duration) {
	if !st.alive || st.frozen {
		return
	}
	st.frozen, st.frozenAt, st.held = true, s.now, nil
	st.keepAlive = nil
	if ka, ok := st.node.KeepAlive(nil); ok {
		st.keepAlive = ka
		s.q.push(event{at: s.now + heartbeatSend, kind: evKeepAlive, site: st.id, boot: st.boot})
	}
	s.stats.Freezes++
	s.tr.notef(s.now, evChaos, st.id, "freeze for %v (master %v)", d, st.keepAlive != nil)
	s.tell("site %d's runtime frozen for %v (master: %v)", st.id, d, st.keepAlive != nil)
	s.q.push(event{at: s.now + d, kind: evThaw, site: st.id, boot: st.boot})
}

// thaw runs st's runtime again: its timer first, then what arrived
// meanwhile, in order, as the board does when the holder lets go.
func (s *Sim) thaw(st *site) {
	st.frozen = false
	held := st.held
	st.held = nil
	s.tr.notef(s.now, evThaw, st.id, "thaw after %v, %d messages waiting", s.now-st.frozenAt, len(held))
	st.node.Tick(st.localNow(s.now))
	s.ready(st)
	// What arrived during a rest came before what arrived while frozen.
	s.readPaced(st, held)
}

// rest starts a paced site's rest after a read, as the board's receive loop
// does (board.Board.restAtPace).
func (s *Sim) rest(st *site) {
	if s.cfg.Pace > 0 && st.alive && st.node.Paced() {
		st.restUntil = s.now + s.cfg.Pace
	}
}

// readPaced steps what arrived while st rested, then more, in order, and
// rests again if it is still paced.
func (s *Sim) readPaced(st *site, more []*simMsg) {
	msgs := append(st.paced, more...)
	st.paced, st.restUntil = nil, 0
	for _, m := range msgs {
		if !st.alive {
			return
		}
		s.step(st, m)
	}
	s.rest(st)
}

// step hands a delivered message to st's node and carries out its Ready.
// A rejected message is a drop rep already counts: nothing more to do.
func (s *Sim) step(st *site, m *simMsg) {
	_ = st.node.Step(st.localNow(s.now), rep.Message{From: m.from, To: m.to, Type: rep.MsgType(m.typ), Payload: m.payload})
	s.ready(st)
}

func (s *Sim) think() time.Duration {
	return time.Duration(s.rng.ExpFloat64()*float64(s.cfg.OpEvery)) + time.Microsecond
}

// The sites' failure detector, and how long a frozen master's process
// speaks for it (as the board's loop does).
const (
	heartbeatSend    = 50 * time.Millisecond
	heartbeatMonitor = 200 * time.Millisecond
	keepAliveLimit   = rep.KeepAliveMonitors * heartbeatMonitor
)

// boot starts a site with a fresh private environment: a restarted board has
// lost its memory and must be initialised by the group.
func (s *Sim) boot(st *site, mode rep.StartMode) {
	env, err := inmem.Create(s.envOptions())
	if err != nil {
		s.fail("site %d: create environment: %v", st.id, err)
		return
	}
	st.env = env
	// The environment an internal init imports into gets the site's virtual
	// clock too: nothing in a run may read the wall clock.
	opt := s.envOptions()
	opt.Now = func() time.Time { return time.Unix(0, 0).Add(st.localNow(s.now)) }
	store := rep.NewEnvStorage(env, opt, ckpt.Policy{KBytes: s.cfg.CkptKB})
	st.store = store
	st.boot++
	st.bootAt = s.now
	st.paced, st.restUntil, st.waking = nil, 0, false
	st.lastErr = ""
	st.origin = time.Duration(s.rng.Int64N(int64(time.Hour)))
	// Rates within [1/sqrt(1+skew), sqrt(1+skew)]: fastest over slowest is at
	// most 1+skew, the bound rep is configured with.
	drift := s.cfg.ClockSkew
	if s.cfg.Buggify.ClockDrift > 0 {
		drift = s.cfg.Buggify.ClockDrift
	}
	hi := math.Sqrt(1 + drift)
	st.rate = 1/hi + (hi-1/hi)*s.rng.Float64()
	var peers []uint16
	for _, o := range s.sites[1:] {
		if o.id != st.id {
			peers = append(peers, o.id)
		}
	}
	rc := rep.Config{
		Site: st.id, Priority: st.priority, Peers: peers, AckPolicy: rep.AckPolicy(s.cfg.Policy),
		AckTimeout:    100 * time.Millisecond,
		HeartbeatSend: heartbeatSend, HeartbeatMonitor: heartbeatMonitor,
		ElectionTimeout: 150 * time.Millisecond, ElectionBackoffMax: 600 * time.Millisecond,
		Leases: s.cfg.Leases, LeaseTimeout: 300 * time.Millisecond, ClockSkew: 1 + s.cfg.ClockSkew,
		TwoSiteStrict: s.cfg.TwoSiteStrict,
		ReRequestMin:  20 * time.Millisecond, ReRequestMax: 320 * time.Millisecond,
		MaxMessageBytes: 64 << 10, InitWindowPages: 16, Seed: s.rng.Uint64(),
		Pace: s.cfg.Pace,
	}
	node, err := rep.NewNode(rc, st.store)
	if err != nil {
		s.fail("site %d: new node: %v", st.id, err)
		return
	}
	if st.node != nil {
		s.countNode(st.node)
	}
	st.node = node
	st.alive = true
	st.last = s.commitOf(env.LastCommit())
	s.h.tree.addRoot(st.last, env.ContentHash())
	st.node.Start(st.localNow(s.now), mode)
	s.ready(st)
	s.q.push(event{at: s.now + time.Duration(s.rng.Int64N(int64(s.cfg.Tick))) + 1, kind: evTick, site: st.id, boot: st.boot})
}

func (s *Sim) envOptions() inmem.Options {
	return inmem.Options{PoolSize: s.cfg.PoolSize, LogSize: s.cfg.LogSize}
}

func (s *Sim) commitOf(ci inmem.CommitInfo) CommitID { return CommitID{LSN: ci.LSN, Chain: ci.Chain} }

// crash discards a site's memory: environment, node, pending client calls.
func (s *Sim) crash(st *site, why string) {
	if !st.alive {
		return
	}
	s.stats.Crashes++
	s.tr.notef(s.now, evChaos, st.id, "crash (%s), lost memory at commit %v", why, st.last)
	s.tell("site %d crashes (%s) at commit %v; its memory is gone", st.id, why, st.last)
	for _, p := range st.pending {
		op := &s.h.Ops[p.op]
		op.Outcome = Orphaned
		s.stats.Orphaned++
	}
	s.markHeld(st)
	st.pending = nil
	st.reads = nil
	st.permLSN = 0
	st.alive = false
	st.frozen, st.held, st.keepAlive = false, nil, nil
	s.countNode(st.node)
	st.node = nil
	s.stats.Checkpoints += int(st.store.Checkpointer().Stats().Promoted)
	st.store.Close()
	st.env.Close()
	st.env = nil
	st.store = nil
	st.boot++
	if s.h.Guarantee || s.cfg.SafeCrashes {
		st.recovering = true
		st.recoverTarget = s.permHigh()
	}
	if s.phase == 0 && why != "scripted" {
		d := 100*time.Millisecond + time.Duration(s.rng.Int64N(int64(1500*time.Millisecond)))
		s.q.push(event{at: s.now + d, kind: evRestart, site: st.id, boot: st.boot})
	}
}

// markHeld flags the writes this crash leaves on fewer than a majority of
// intact sites: from now on an election majority may exist without any
// site holding them, so their loss is the in-memory weakness. Writes still
// on a majority of intact sites are not flagged, so a later loss of those
// is reported as a rep failure.
func (s *Sim) markHeld(st *site) {
	lineOf := func(last CommitID) map[CommitID]bool {
		set := make(map[CommitID]bool)
		for b := last; ; {
			set[b] = true
			n, ok := s.h.tree.nodes[b]
			if !ok || !n.hasParent {
				break
			}
			b = n.parent
		}
		return set
	}
	held := lineOf(st.last)
	var others []map[CommitID]bool
	for _, o := range s.sites[1:] {
		if o != st && o.alive {
			others = append(others, lineOf(o.last))
		}
	}
	need := majority(s.cfg.Sites)
	for i := range s.h.Ops {
		op := &s.h.Ops[i]
		if op.Kind == OpGet || op.Amnesia || !held[op.Commit] {
			continue
		}
		copies := 0
		for _, l := range others {
			if l[op.Commit] {
				copies++
			}
		}
		if copies < need {
			op.Amnesia = true
		}
	}
}

// permHigh is the newest commit holding every Perm write so far.
func (s *Sim) permHigh() CommitID {
	var best CommitID
	for _, i := range s.permIdx {
		c := s.h.Ops[i].Commit
		if c.LSN > best.LSN {
			best = c
		}
	}
	return best
}

// ready performs everything the node asks for, as the board runtime will.
func (s *Sim) ready(st *site) {
	for guard := 0; guard < 64 && st.alive; guard++ {
		rd := st.node.Ready()
		s.perform(st, rd)
		if !st.alive {
			return
		}
		st.node.Advance(rd)
		if rd.Empty() {
			return
		}
	}
}

func (s *Sim) perform(st *site, rd rep.Ready) {
	master := st.isMaster()
	if in := rd.Init; in != nil {
		if in.Begin {
			s.stats.Inits++
			s.tr.notef(s.now, evPhase, st.id, "internal init begins at checkpoint %d, %d pages", in.CkptLSN, in.PageCount)
		}
		if s.phase == 0 && s.cfg.Buggify.CrashDuringInit > 0 && s.rng.Float64() < s.cfg.Buggify.CrashDuringInit/4 {
			s.crash(st, fmt.Sprintf("buggify: crash during internal init (%d/%d pages)", in.PagesDone, in.PagesTotal))
			return
		}
	}
	if snap := rd.ListPages; snap != nil {
		// The board lists on a goroutine of its own: the report comes
		// some time later, by when the checkpoint may have moved.
		s.q.push(event{at: s.now + time.Duration(s.rng.Int64N(int64(20*time.Millisecond))), kind: evPagesListed,
			site: st.id, boot: st.boot, pages: snap.PageList(), lsn: snap.LSN()})
	}
	// The environment work, exactly as the board runtime does it: Init,
	// RollbackTo, Apply, NewGen, then a master checkpoint if due.
	from := st.last
	// Buggify: the driver says it could not store this init step. The
	// storage did store it: its import is dropped by the next begin, or
	// when the node goes on without it, and the node asks for no page of
	// it meanwhile.
	injectInitFail := false
	if in := rd.Init; in != nil && !in.Finish && s.phase == 0 && s.cfg.Buggify.InitStoreFails > 0 {
		p := s.cfg.Buggify.InitStoreFails
		if !in.Begin {
			p /= 100
		}
		injectInitFail = s.rng.Float64() < p
	}
	res, err := st.store.Apply(&rd, master)
	if injectInitFail && err == nil && !res.InitFailed {
		st.node.InitFailed()
		s.stats.InitFailures++
		s.tr.notef(s.now, evPhase, st.id, "buggify: internal init step reported not stored")
	}
	if res.InitFailed {
		// As the board does: the node ends the copy and begins a fresh
		// one after a back-off.
		st.node.InitFailed()
		s.stats.InitFailures++
		s.tr.notef(s.now, evPhase, st.id, "internal init failed: %v", err)
	}
	if res.InitGivenUp {
		s.stats.InitsGivenUp++
		s.tr.notef(s.now, evPhase, st.id, "internal init given up")
	}
	if res.InitDone {
		// Internal init finished: the imported environment replaces the old
		// (or filled it, imported in place). Not counted as a rollback: it
		// installs a consistent earlier checkpoint and replays the master's
		// log after it.
		if res.Replaced != nil {
			res.Replaced.Close()
		}
		st.env = st.store.Env()
		s.tr.notef(s.now, evPhase, st.id, "internal init done at %v", s.commitOf(st.env.LastCommit()))
		s.moved(st, "initialised", from, false)
		s.orphan(st, func(uint64) bool { return true })
		st.reads = st.reads[:0]
		from = st.last
	}
	if err != nil {
		// Not fatal: rep re-reads Storage in Advance and must cope with work
		// that did not happen (a full pool or log, a diverged log).
		s.envError(st, "environment work", err)
	}
	switch {
	case res.HasNewGen:
		if prev, ok := s.genMaster[res.NewGen.Gen]; ok && prev != st.id && s.cfg.MajorityElections() {
			s.violate("election: sites %d and %d were both elected master at gen %d (majority elections)", prev, st.id, res.NewGen.Gen)
		}
		s.genMaster[res.NewGen.Gen] = st.id
		if g := res.NewGen.Gen; g > s.newestGen {
			s.newestGen = g
			s.gens = append(s.gens, genBirth{gen: g, at: s.now})
		}
		s.stats.Elections++
		s.tell("site %d becomes master, gen %d", st.id, res.NewGen.Gen)
		s.masterCommit(st, from, res.NewGen)
	case rd.HasRollback:
		s.rollback(st, rd.RollbackTo, from, len(rd.Apply) == 0)
	case len(rd.Apply) > 0:
		s.moved(st, "applied", from, true)
	}
	st.permLSN = rd.PermLSN
	if len(st.reads) > 0 {
		if st.isMaster() {
			s.completeReads(st)
		} else {
			st.reads = st.reads[:0] // stepped down: the reads fail
		}
	}
	if !st.isMaster() && len(st.pending) > 0 {
		// Stepped down with writes in flight. Ready.PermLSN means "durable"
		// only on a master (a replica's is the master's perm clipped to its
		// own, possibly not yet verified, log): the clients get no answer.
		s.orphan(st, func(uint64) bool { return true })
	}
	if rd.PermLSN > 0 || len(rd.PermFailed) > 0 {
		if s.resolve(st, rd.PermLSN, rd.PermFailed) && s.phase == 0 && s.cfg.Buggify.CrashAfterPerm > 0 &&
			s.rng.Float64() < s.cfg.Buggify.CrashAfterPerm && s.crashAllowed(st) {
			// The client has its Perm answer, the log records have not left.
			s.crash(st, "buggify: master crashes right after answering Perm, before shipping the log")
			return
		}
	}
	for _, m := range rd.Messages {
		d := s.now
		if st.slow {
			d += 10 * s.cfg.Net.DelayMax
		}
		s.net.send(d, st.id, m.To, uint8(m.Type), m.Payload)
	}
	for _, ev := range rd.Events {
		s.event(st, ev)
	}
}

// moved records a site's move from one commit to another and checks it is a
// legal move along the commit tree.
func (s *Sim) moved(st *site, how string, from CommitID, mustExtend bool) {
	to := s.commitOf(st.env.LastCommit())
	st.last = to
	if !s.h.tree.known(to) {
		s.violate("prefix: site %d %s to commit %v that no master made (was at %v)", st.id, how, to, from)
		return
	}
	if mustExtend && !s.h.tree.ancestor(from, to) {
		s.violate("prefix: site %d %s from %v to %v, which does not extend its history", st.id, how, from, to)
	}
	if n := s.h.tree.nodes[to]; n.hashKnown {
		if h := st.env.ContentHash(); h != n.hash {
			s.violate("prefix: site %d at commit %v has content hash %016x, master %d had %016x there", st.id, to, h, n.site, n.hash)
		}
	}
	if st.recovering && s.h.tree.ancestor(st.recoverTarget, to) {
		st.recovering = false
	}
}

// rollback checks a rollback: it must land on an earlier point of the
// site's own history, and it must not drop Perm writes on a majority.
func (s *Sim) rollback(st *site, lsn uint64, from CommitID, alone bool) {
	s.stats.Rollbacks++
	s.tr.notef(s.now, evPhase, st.id, "rollback to %d from %v", lsn, from)
	s.moved(st, "rolled back", from, false)
	to := st.last
	if alone && !s.h.tree.ancestor(to, from) {
		s.violate("prefix: site %d rolled back from %v to %v, which is not an earlier point of its history", st.id, from, to)
	}
	s.lostPerm(st, from, to, fmt.Sprintf("rollback to %d", lsn))
	s.orphan(st, func(lsn uint64) bool { return lsn > to.LSN })
	st.reads = st.reads[:0]
}

// envError records a failed environment operation the driver was asked to
// perform. The run goes on: what rep does next is what is being tested.
func (s *Sim) envError(st *site, what string, err error) {
	s.stats.EnvErrors++
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	s.tr.notef(s.now, evPhase, st.id, "%s failed: %s", what, msg)
	if msg != st.lastErr {
		st.lastErr = msg
		s.tell("site %d: %s failed: %s", st.id, what, msg)
	}
}

// orphan answers the pending writes a rollback or init removed: their
// handles are dead, the client learns nothing about durability.
func (s *Sim) orphan(st *site, gone func(lsn uint64) bool) {
	keep := st.pending[:0]
	for _, p := range st.pending {
		if gone(p.lsn) {
			s.h.Ops[p.op].Outcome = Orphaned
			s.stats.Orphaned++
			continue
		}
		keep = append(keep, p)
	}
	st.pending = keep
}

// lostPerm notes the Perm writes a site no longer holds after a move.
func (s *Sim) lostPerm(st *site, from, to CommitID, how string) {
	for _, i := range s.permIdx {
		c := s.h.Ops[i].Commit
		if s.h.tree.ancestor(c, from) && !s.h.tree.ancestor(c, to) {
			s.h.Rollbacks = append(s.h.Rollbacks, Rollback{Site: st.id, Op: i, At: s.now, How: how})
			s.stats.PermRollbacksAnySite++
			s.tell("site %d no longer holds Perm op %d (commit %v) after %s", st.id, s.h.Ops[i].ID, c, how)
		}
	}
}

// resolve answers the clients of a master's writes.
func (s *Sim) resolve(st *site, permLSN uint64, failed []uint64) (newPerm bool) {
	keep := st.pending[:0]
	for _, p := range st.pending {
		op := &s.h.Ops[p.op]
		switch {
		case p.lsn <= permLSN:
			s.clock++
			op.Return, op.ReturnAt, op.Outcome = s.clock, s.now, Perm
			s.permIdx = append(s.permIdx, p.op)
			s.stats.PermWrites++
			newPerm = true
			if s.forgetfulAcker(st, op) {
				op.Amnesia = true
			}
		case containsLSN(failed, p.lsn):
			op.Outcome = NotPerm
			op.ReturnAt = s.now
			s.stats.NotPerm++
		default:
			keep = append(keep, p)
		}
	}
	st.pending = keep
	return newPerm
}

// forgetfulAcker reports whether a site that acked op restarted empty after
// a gen newer than op's had appeared: it acked without knowing op's master
// was stale.
func (s *Sim) forgetfulAcker(st *site, op *Op) bool {
	var newer time.Duration = -1
	for _, g := range s.gens {
		if g.gen > op.Gen {
			newer = g.at
			break
		}
	}
	if newer < 0 {
		return false
	}
	for _, a := range st.node.Status().Sites {
		if a.AckedLSN >= op.Commit.LSN && int(a.Site) < len(s.sites) {
			if o := s.sites[a.Site]; o.boot > 1 && o.bootAt > newer {
				return true
			}
		}
	}
	return false
}

func containsLSN(s []uint64, x uint64) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func (s *Sim) event(st *site, ev rep.Event) {
	if ev.Kind == rep.EventPermFailed {
		return // one per commit under a partition: counted, not traced
	}
	s.tr.notef(s.now, evPhase, st.id, "event %v", ev)
	switch ev.Kind {
	case rep.EventDupMaster, rep.EventRollback, rep.EventInitDone, rep.EventJoinFailure:
		s.tell("site %d: %v", st.id, ev)
	}
}

// masterCommit records a commit a master made.
func (s *Sim) masterCommit(st *site, parent CommitID, ci inmem.CommitInfo) {
	id := s.commitOf(ci)
	// The content hash costs a walk of every database: sample one commit in
	// hashEvery (replicas are compared whenever they stand on a sampled one).
	s.commits++
	var hash uint64
	sampled := s.commits%hashEvery == 0
	if sampled {
		hash = st.env.ContentHash()
	}
	if err := s.h.tree.add(id, parent, ci.Gen, st.id, hash, sampled); err != nil {
		s.violate("prefix: %v", err)
	}
	st.last = id
}

// client issues one operation to a site that believes it is master.
func (s *Sim) client() {
	var masters []*site
	for _, st := range s.sites[1:] {
		if st.alive && !st.frozen && st.node.CanWrite() == nil {
			masters = append(masters, st)
		}
	}
	if len(masters) == 0 {
		return
	}
	st := masters[s.rng.IntN(len(masters))]
	r := s.rng.Float64()
	switch {
	case r < s.cfg.ReadFrac && s.cfg.Leases:
		s.read(st)
	case r < s.cfg.ReadFrac+s.cfg.DeleteFrac && len(s.keys) > 0:
		s.write(st, OpDelete, s.keys[s.rng.IntN(len(s.keys))], "")
	default:
		s.nextKey++
		k := fmt.Sprintf("k%04d", s.nextKey)
		s.keys = append(s.keys, k)
		s.write(st, OpPut, k, fmt.Sprintf("v%04d-%d", s.nextKey, s.rng.IntN(1000))+strings.Repeat("p", s.cfg.ValuePad))
	}
}

func (s *Sim) read(st *site) {
	if len(s.keys) == 0 || !st.node.LeaseValid(st.localNow(s.now)) {
		return
	}
	k := s.keys[s.rng.IntN(len(s.keys))]
	s.clock++
	op := Op{Kind: OpGet, Key: k, Site: st.id, Call: s.clock, CallAt: s.now, Outcome: Done}
	err := st.env.View(func(tx *inmem.Tx) error {
		if db := tx.DB(kvDB); db != nil {
			if v := db.Get([]byte(k)); v != nil {
				op.Found, op.Value = true, string(v)
			}
		}
		return nil
	})
	if err != nil {
		s.fail("site %d: leased read: %v", st.id, err)
		return
	}
	st.reads = append(st.reads, pendingRead{op: op, lsn: st.env.LastCommit().LSN})
	s.completeReads(st)
}

// completeReads returns the leased reads whose state is now Perm.
func (s *Sim) completeReads(st *site) {
	keep := st.reads[:0]
	for _, r := range st.reads {
		if r.lsn > st.permLSN && !s.cfg.Buggify.NaiveReads {
			keep = append(keep, r)
			continue
		}
		s.clock++
		r.op.Return, r.op.ReturnAt = s.clock, s.now
		r.op.ID = len(s.h.Ops)
		s.h.Ops = append(s.h.Ops, r.op)
		s.stats.Reads++
	}
	st.reads = keep
}

func (s *Sim) write(st *site, kind OpKind, k, v string) {
	s.clock++
	op := Op{ID: len(s.h.Ops), Kind: kind, Key: k, Value: v, Site: st.id, Call: s.clock, Return: never, CallAt: s.now}
	parent := st.last
	ci, err := st.env.Update(func(tx *inmem.Tx) error {
		db, err := tx.CreateDBIfNotExists(kvDB)
		if err != nil {
			return err
		}
		if kind == OpDelete {
			return db.Delete([]byte(k))
		}
		return db.Put([]byte(k), []byte(v))
	})
	if err != nil {
		// Refused before committing (full log or pool): no effect.
		s.tr.notef(s.now, evClient, st.id, "%s(%s) refused: %v", kind, k, err)
		return
	}
	if s.commitOf(ci) == parent {
		// Nothing changed (a delete of an absent key): no commit, no effect.
		return
	}
	s.stats.Writes++
	op.Gen, op.Commit = ci.Gen, s.commitOf(ci)
	s.masterCommit(st, parent, ci)
	s.h.Ops = append(s.h.Ops, op)
	st.pending = append(st.pending, pendingWrite{op: op.ID, lsn: ci.LSN})
	s.tr.notef(s.now, evClient, st.id, "%s(%s) committed at %v gen %d", kind, k, op.Commit, ci.Gen)
	if s.cfg.Buggify.CrashAfterCommit > 0 && s.rng.Float64() < s.cfg.Buggify.CrashAfterCommit && s.crashAllowed(st) {
		s.crash(st, "buggify: master crashes right after a commit, before shipping it")
		return
	}
	st.node.Committed(st.localNow(s.now), ci)
	s.ready(st)
}

// crashAllowed keeps crashes within what in-memory replication can survive:
// with SafeCrashes, at most a minority (at least one) of the sites is without
// its memory at any time.
func (s *Sim) crashAllowed(st *site) bool {
	if !s.cfg.SafeCrashes {
		return true
	}
	amnesiac := 0
	for _, o := range s.sites[1:] {
		if o != st && (!o.alive || o.recovering) {
			amnesiac++
		}
	}
	return amnesiac+1 <= max(1, (s.cfg.Sites-1)/2)
}

func (s *Sim) masters() []*site {
	var out []*site
	for _, st := range s.sites[1:] {
		if st.alive && st.isMaster() {
			out = append(out, st)
		}
	}
	return out
}

func (s *Sim) chaos() {
	c := s.cfg.Chaos
	total := c.Crash + c.CrashMstr + c.Partition + c.Isolate + c.Loss + c.Heal + c.Freeze
	if total == 0 {
		return
	}
	r := s.rng.IntN(total)
	n := s.cfg.Sites
	healAfter := func() {
		d := 200*time.Millisecond + time.Duration(s.rng.Int64N(int64(2*time.Second)))
		s.q.push(event{at: s.now + d, kind: evHeal})
	}
	switch {
	case r < c.Crash:
		st := s.sites[1+s.rng.IntN(n)]
		if st.alive && s.crashAllowed(st) {
			s.crash(st, "chaos")
		}
	case r < c.Crash+c.CrashMstr:
		if ms := s.masters(); len(ms) > 0 {
			st := ms[s.rng.IntN(len(ms))]
			if s.crashAllowed(st) {
				s.crash(st, "chaos: master")
			}
		}
	case r < c.Crash+c.CrashMstr+c.Partition:
		inA := make([]bool, n+1)
		sizeA := 1 + s.rng.IntN(n-1)
		for _, i := range s.rng.Perm(n)[:sizeA] {
			inA[i+1] = true
		}
		oneWay := s.rng.IntN(4) == 0
		s.net.split(inA, oneWay)
		s.stats.Partitions++
		s.tr.notef(s.now, evChaos, 0, "partition %v one-way=%v", sideOf(inA), oneWay)
		s.tell("partition: sites %v cut from the rest (one-way=%v)", sideOf(inA), oneWay)
		healAfter()
	case r < c.Crash+c.CrashMstr+c.Partition+c.Isolate:
		victim := uint16(1 + s.rng.IntN(n))
		if ms := s.masters(); len(ms) > 0 && s.rng.IntN(2) == 0 {
			victim = ms[0].id
		}
		inA := make([]bool, n+1)
		inA[victim] = true
		oneWay := s.rng.IntN(3) == 0
		s.net.split(inA, oneWay)
		s.stats.Partitions++
		s.tr.notef(s.now, evChaos, victim, "isolate one-way=%v", oneWay)
		s.tell("site %d isolated (one-way=%v)", victim, oneWay)
		healAfter()
	case r < c.Crash+c.CrashMstr+c.Partition+c.Isolate+c.Loss:
		b := s.cfg.Buggify.LossBurst
		if b == 0 {
			b = 0.3
		}
		s.net.burst = b
		s.stats.LossBursts++
		d := 50*time.Millisecond + time.Duration(s.rng.Int64N(int64(700*time.Millisecond)))
		s.tr.notef(s.now, evChaos, 0, "loss burst %.2f for %v", b, d)
		s.q.push(event{at: s.now + d, kind: evLossEnd})
	case r < c.Crash+c.CrashMstr+c.Partition+c.Isolate+c.Loss+c.Freeze:
		// Mostly the master, for a span around the failure detector's and
		// the keepalive's limits.
		st := s.sites[1+s.rng.IntN(n)]
		if ms := s.masters(); len(ms) > 0 && s.rng.IntN(3) != 0 {
			st = ms[s.rng.IntN(len(ms))]
		}
		d := heartbeatMonitor/2 + time.Duration(s.rng.Int64N(int64(keepAliveLimit+2*heartbeatMonitor)))
		s.freeze(st, d)
	default:
		s.net.healAll()
		s.tr.notef(s.now, evChaos, 0, "heal")
	}
}

func (s *Sim) script(f Fault) {
	switch f.Kind {
	case FaultSplit:
		inA := make([]bool, s.cfg.Sites+1)
		for _, x := range f.Sites {
			inA[x] = true
		}
		s.net.split(inA, f.OneWay)
		s.stats.Partitions++
		s.tr.notef(s.now, evScript, 0, "partition %v one-way=%v", f.Sites, f.OneWay)
		s.tell("scripted partition: sites %v cut from the rest (one-way=%v)", f.Sites, f.OneWay)
		if f.For > 0 {
			s.q.push(event{at: s.now + f.For, kind: evHeal})
		}
	case FaultHeal:
		s.net.healAll()
		s.tell("scripted heal")
	case FaultCrash, FaultCrashMaster:
		victims := f.Sites
		if f.Kind == FaultCrashMaster {
			victims = nil
			for _, st := range s.masters() {
				victims = append(victims, st.id)
			}
		}
		for _, x := range victims {
			st := s.sites[x]
			s.crash(st, "scripted")
			if f.For > 0 {
				s.q.push(event{at: s.now + f.For, kind: evRestart, site: st.id, boot: st.boot})
			}
		}
	case FaultFreeze:
		victims := f.Sites
		if len(victims) == 0 {
			for _, st := range s.masters() {
				victims = append(victims, st.id)
			}
		}
		for _, x := range victims {
			s.freeze(s.sites[x], f.For)
		}
	}
}

func sideOf(inA []bool) []int {
	var out []int
	for i, b := range inA {
		if b {
			out = append(out, i)
		}
	}
	return out
}

// checkLeases asserts, after every step, that no two sites hold a valid
// master lease at once, each judged on its own clock.
func (s *Sim) checkLeases() {
	holders := 0
	masters := 0
	for _, st := range s.sites[1:] {
		if !st.alive {
			continue
		}
		if st.isMaster() {
			masters++
		}
		if s.cfg.Leases && st.node.LeaseValid(st.localNow(s.now)) {
			holders++
		}
	}
	s.stats.MaxMasters = max(s.stats.MaxMasters, masters)
	if holders > 1 && !s.leaseViolated {
		s.leaseViolated = true
		var who []string
		for _, st := range s.sites[1:] {
			if st.alive && st.node.LeaseValid(st.localNow(s.now)) {
				who = append(who, fmt.Sprintf("site %d (local now %v, gen %d)", st.id, st.localNow(s.now), st.node.Status().Gen))
			}
		}
		s.violate("lease: %d masters hold valid leases at once: %s", holders, strings.Join(who, ", "))
	}
}

// quiesceStep ends the fault phase, then polls for convergence.
func (s *Sim) quiesceStep() {
	if s.phase == 0 {
		s.phase = 1
		s.tr.notef(s.now, evPhase, 0, "heal everything, quiesce")
		s.tell("faults stop: network healed, crashed sites restart")
		s.net.healAll()
		s.net.burst = 0
		s.net.faults.Drop, s.net.faults.Dup = 0, 0
		for _, st := range s.sites[1:] {
			if !st.alive {
				s.stats.Restarts++
				s.boot(st, rep.StartClient)
			}
		}
		s.q.push(event{at: s.now + 100*time.Millisecond, kind: evPhase})
		return
	}
	if s.converged() {
		s.h.Converged = true
		s.phase = 2
		return
	}
	if s.now >= s.cfg.Duration+s.cfg.Quiesce {
		s.phase = 2
		return
	}
	s.q.push(event{at: s.now + 100*time.Millisecond, kind: evPhase})
}

func (s *Sim) converged() bool {
	if len(s.masters()) != 1 {
		return false
	}
	var ref *site
	for _, st := range s.sites[1:] {
		if !st.alive {
			return false
		}
		cur := s.commitOf(st.env.LastCommit())
		if ref == nil {
			ref = st
			continue
		}
		if cur != s.commitOf(ref.env.LastCommit()) || st.env.ContentHash() != ref.env.ContentHash() {
			return false
		}
	}
	return true
}

// finish records every site's final state for the checkers.
func (s *Sim) finish() {
	for _, st := range s.sites[1:] {
		for _, p := range st.pending {
			s.h.Ops[p.op].Outcome = Orphaned
			s.stats.Orphaned++
		}
		st.pending = nil
		if st.store != nil {
			s.stats.Checkpoints += int(st.store.Checkpointer().Stats().Promoted)
		}
		if st.node != nil {
			s.countNode(st.node)
		}
		f := FinalSite{Site: st.id, Alive: st.alive, LastErr: st.lastErr}
		if st.alive {
			f.Master = st.isMaster()
			f.Last = s.commitOf(st.env.LastCommit())
			f.Hash = st.env.ContentHash()
			f.Data = make(map[string]string)
			err := st.env.View(func(tx *inmem.Tx) error {
				db := tx.DB(kvDB)
				if db == nil {
					return nil
				}
				c := db.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					f.Data[string(k)] = string(v)
				}
				return nil
			})
			if err != nil {
				s.fail("site %d: read final state: %v", st.id, err)
			}
		}
		s.h.Final = append(s.h.Final, f)
	}
	sort.Slice(s.h.Final, func(i, j int) bool { return s.h.Final[i].Site < s.h.Final[j].Site })
}
