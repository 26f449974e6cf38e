package rep

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// feed is a master-side memStore from which LOG messages are cut.
type feed struct {
	st   *memStore
	cis  []CommitInfo
	site uint16
	gen  uint32
}

func newFeed(gen uint32, txns int) *feed {
	f := &feed{st: newMemStore(), site: 1, gen: gen}
	f.st.gen = gen
	f.add(txns)
	return f
}

// add commits n more transactions at the master.
func (f *feed) add(n int) {
	for i := 0; i < n; i++ {
		f.cis = append(f.cis, f.st.commitTxn("k", "v"))
	}
}

func (f *feed) hdr(now time.Duration) Header {
	return Header{Gen: f.gen, End: f.st.EndLSN(), SendTime: now, Priority: 100, Flags: FlagMaster, Master: f.site}
}

// log cuts a LOG message carrying the records of txns [i, j).
func (f *feed) log(now time.Duration, i, j int) Message {
	from := uint64(0)
	if i > 0 {
		from = f.cis[i-1].End
	}
	to := f.cis[j-1].End
	m := mk(f.site, MsgLog, f.hdr(now), u64s(0), f.st.full[from:to])
	m.To = AllSites
	return m
}

func (f *feed) heartbeat(now time.Duration) Message {
	return mk(f.site, MsgHeartbeat, f.hdr(now), u64s(0))
}

func (f *feed) newMaster(now time.Duration) Message {
	return mk(f.site, MsgNewMaster, f.hdr(now))
}

func newReplica(t *testing.T, mod func(*Config)) *solo {
	cfg := Config{Site: 2, Priority: 100, Peers: []uint16{1, 3}, AckPolicy: AckQuorum}
	if mod != nil {
		mod(&cfg)
	}
	s := newSolo(t, cfg)
	s.n.Start(0, StartClient)
	s.ready()
	recoverFresh(s)
	return s
}

// recoverFresh lets a solo node that started empty hear its peers, empty
// too (a fresh group), so it may act.
func recoverFresh(s *solo) {
	s.t.Helper()
	for _, p := range s.n.cfg.Peers {
		if !s.n.recovering {
			break
		}
		s.recv(mk(p, MsgAlive, Header{Priority: 100}, u64s(0), appendU32(appendU32(nil, 0), 0)))
	}
	if s.n.recovering {
		s.t.Fatal("still recovering after hearing every peer")
	}
}

func decode(t *testing.T, m Message) Decoded {
	t.Helper()
	var d Decoded
	if err := DecodeMessage(m, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// joined returns a replica that adopted f's master and is live with the
// first `have` transactions applied.
func joined(t *testing.T, f *feed, have int, mod func(*Config)) *solo {
	s := newReplica(t, mod)
	o := s.recv(f.newMaster(s.now))
	if !hasEvent(o.events, EventNewMaster) {
		t.Fatalf("no NEWMASTER event: %v", o.events)
	}
	if len(o.only(MsgAllReq)) != 1 {
		t.Fatalf("empty replica should ask for everything: %v", o.msgs)
	}
	if have > 0 {
		s.recv(f.log(s.now, 0, have))
	}
	return s
}

func TestReplicaAppliesAndAcks(t *testing.T) {
	f := newFeed(1, 6)
	s := joined(t, f, 0, nil)
	o := s.recv(f.log(s.now, 0, 3))
	acks := o.only(MsgAck)
	if len(acks) != 1 || decode(t, acks[0]).LSN != f.cis[2].LSN {
		t.Fatalf("ack after applying 3 txns: %v", o.msgs)
	}
	if s.st.EndLSN() != f.cis[2].End {
		t.Fatalf("applied to %d, want %d", s.st.EndLSN(), f.cis[2].End)
	}
	o = s.recv(f.log(s.now, 3, 6))
	if !hasEvent(o.events, EventStartupDone) {
		t.Fatalf("no STARTUP_DONE at the master's end: %v", o.events)
	}
	if s.st.hash() != f.st.hash() {
		t.Fatal("replica content differs")
	}
	if err := s.n.CanWrite(); err != ErrNotMaster {
		t.Fatalf("CanWrite on a replica: %v", err)
	}
}

func TestReplicaDuplicateAndOutOfOrder(t *testing.T) {
	f := newFeed(1, 2)
	s := joined(t, f, 2, nil)
	f.add(8)
	// Out of order: 5..7 then 7..10 before 2..5.
	o := s.recv(f.log(s.now, 5, 7))
	reqs := o.only(MsgLogReq)
	if len(reqs) != 1 {
		t.Fatalf("gap not requested: %v", o.msgs)
	}
	if d := decode(t, reqs[0]); d.LSN != f.cis[1].End || d.LSN2 != f.cis[4].End {
		t.Fatalf("LOG_REQ [%d,%d), want [%d,%d)", d.LSN, d.LSN2, f.cis[1].End, f.cis[4].End)
	}
	s.recv(f.log(s.now, 7, 10))
	if s.st.EndLSN() != f.cis[1].End {
		t.Fatal("applied across a gap")
	}
	// A partial overlap (1..5) fills the gap; buffered runs follow on.
	o = s.recv(f.log(s.now, 1, 5))
	if s.st.EndLSN() != f.st.EndLSN() || s.st.hash() != f.st.hash() {
		t.Fatalf("end %d want %d after the gap filled", s.st.EndLSN(), f.st.EndLSN())
	}
	if a := o.only(MsgAck); len(a) != 1 || decode(t, a[0]).LSN != f.cis[9].LSN {
		t.Fatalf("one ack for everything: %v", o.msgs)
	}
	// Duplicates are dropped and counted.
	before := s.n.counters.Dropped[DropDuplicate]
	s.recv(f.log(s.now, 0, 10))
	s.recv(f.log(s.now, 3, 4))
	if s.n.counters.Dropped[DropDuplicate] != before+2 {
		t.Fatalf("duplicates counted %d", s.n.counters.Dropped[DropDuplicate]-before)
	}
	if s.st.hash() != f.st.hash() {
		t.Fatal("duplicates changed the content")
	}
}

func TestReplicaGapReRequestBackoff(t *testing.T) {
	f := newFeed(1, 1)
	s := joined(t, f, 1, func(c *Config) {
		c.ReRequestMin = 10 * time.Millisecond
		c.ReRequestMax = 80 * time.Millisecond
		c.HeartbeatMonitor = 10 * time.Second
		c.HeartbeatSend = time.Second
	})
	f.add(3)
	// The heartbeat shows the master is ahead: ask at once.
	o := s.recv(f.heartbeat(s.now))
	if len(o.only(MsgLogReq)) != 1 {
		t.Fatalf("heartbeat beyond our end: no LOG_REQ: %v", o.msgs)
	}
	// Nothing arrives: re-requests at 10, 20, 40, 80, 80 ms intervals.
	var at []time.Duration
	last := s.now
	for s.now < last+400*time.Millisecond {
		o := s.tick(time.Millisecond)
		if len(o.only(MsgLogReq)) > 0 {
			at = append(at, s.now)
		}
	}
	var gaps []time.Duration
	prev := last
	for _, a := range at {
		gaps = append(gaps, a-prev)
		prev = a
	}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, w := range want {
		if i >= len(gaps) || gaps[i] != w*time.Millisecond {
			t.Fatalf("re-request intervals %v, want %v ms...", gaps, want)
		}
	}
	// Progress resets the back-off and the gap closes.
	s.recv(f.log(s.now, 1, 4))
	if s.n.rs.gapActive || s.st.EndLSN() != f.st.EndLSN() {
		t.Fatal("gap still open after the records arrived")
	}
	if s.n.counters.ReRequestsSent < 7 {
		t.Fatalf("ReRequestsSent %d", s.n.counters.ReRequestsSent)
	}
}

func TestReplicaIgnoresLogWhileElecting(t *testing.T) {
	f := newFeed(1, 4)
	s := joined(t, f, 1, nil)
	// The master goes silent: an election starts; LOG records are ignored.
	s.listen(s.n.cfg.HeartbeatMonitor)
	if s.n.role != RoleElecting {
		t.Fatalf("role %v after HeartbeatMonitor of silence", s.n.role)
	}
	other := &feed{st: f.st, cis: f.cis, site: 3, gen: 1} // a site that is not the master
	m := other.log(s.now, 1, 2)
	hd := decode(t, m)
	hd.Header.Flags = 0
	m.Payload = append(appendHeader(nil, &hd.Header), m.Payload[HeaderSize:]...)
	s.recv(m)
	if s.n.counters.Dropped[DropElecting] != 1 || s.st.EndLSN() != f.cis[0].End {
		t.Fatalf("log during election: drops %v end %d", s.n.counters.Dropped, s.st.EndLSN())
	}
	// The old master turns out alive: the election ends, the stream resumes.
	s.recv(f.heartbeat(s.now))
	if s.n.role != RoleReplica || s.n.master != 1 {
		t.Fatalf("after the master's heartbeat: role %v master %d", s.n.role, s.n.master)
	}
}

func TestReplicaApplyFailureIsRetried(t *testing.T) {
	f := newFeed(1, 3)
	s := joined(t, f, 0, nil)
	s.st.failNext = 1
	o := s.recv(f.log(s.now, 0, 3))
	if len(o.only(MsgAck)) != 0 || s.n.counters.ApplyStalls != 1 {
		t.Fatalf("acked records the driver failed to apply: %v stalls %d", o.msgs, s.n.counters.ApplyStalls)
	}
	o = s.tick(s.n.cfg.ReRequestMin)
	if len(o.only(MsgLogReq))+len(o.only(MsgAllReq)) != 1 {
		t.Fatalf("no re-request after a failed apply: %v", o.msgs)
	}
	s.recv(f.log(s.now, 0, 3))
	if s.st.hash() != f.st.hash() {
		t.Fatal("not converged after retry")
	}
}

// TestReplicaLogFullFallsBackToInit: applies that keep failing at the same
// place (a full log that only this replica's own progress could free under
// ALL/ALL_PEERS) make the replica fall back to internal init instead of
// re-requesting the records forever.
func TestReplicaLogFullFallsBackToInit(t *testing.T) {
	f := newFeed(1, 3)
	s := joined(t, f, 0, nil)
	s.st.failNext = 1 << 30 // the log stays full
	var o out
	for i := 0; i < maxApplyStalls; i++ {
		o = s.recv(f.log(s.now, 0, 3))
		if len(o.only(MsgAck)) != 0 {
			t.Fatalf("acked records the driver failed to apply: %v", o.msgs)
		}
		if i < maxApplyStalls-1 && len(o.only(MsgUpdateReq)) != 0 {
			t.Fatalf("internal init after %d failed applies", i+1)
		}
	}
	if len(o.only(MsgUpdateReq)) != 1 || !s.n.lockedOut() {
		t.Fatalf("no internal init after %d failed applies at one place: %v", maxApplyStalls, o.msgs)
	}
	if s.n.counters.Inits != 1 {
		t.Fatalf("inits %d", s.n.counters.Inits)
	}
}

// A replica hands its driver whole transactions up to and including the
// first checkpoint record, then the rest in later Readys: the driver can
// promote each checkpoint (once durable) before applying what follows. One
// apply of a long catch-up used to carry many checkpoint records, of which
// the Checkpointer kept the last as its candidate only after the next apply
// had brought a newer one: nothing was promoted while applies kept coming.
func TestReplicaApplyEndsAtCheckpointRecord(t *testing.T) {
	f := newFeed(1, 3)
	ckpt := func() uint64 {
		f.st.full = append(f.st.full, f.st.record(recCheckpoint, f.st.txn, []byte("snapshot"))...)
		return f.st.EndLSN()
	}
	first := ckpt()
	f.add(3)
	second := ckpt()
	f.add(2)
	s := joined(t, f, 0, nil)
	var applied []uint64
	s.st.onApply = func(rd *Ready) {
		if len(rd.Apply) > 0 {
			_, _, lsn := recAt(rd.Apply)
			applied = append(applied, lsn+uint64(len(rd.Apply)))
		}
	}
	s.recv(f.log(s.now, 0, len(f.cis)))
	if want := []uint64{first, second, f.st.EndLSN()}; fmt.Sprint(applied) != fmt.Sprint(want) {
		t.Fatalf("applies ended at %v, want %v (each checkpoint record ends one)", applied, want)
	}
	if s.st.hash() != f.st.hash() {
		t.Fatal("replica differs from the master")
	}
}

// checkBuffer asserts the out-of-order buffer's invariants: runs in LSN
// order, each as long as its records, all past the stream's end, and
// segBytes their sum.
func checkBuffer(t *testing.T, n *Node) {
	t.Helper()
	rs := &n.rs
	total := 0
	for k, s := range rs.segs {
		if s.end != s.lsn+uint64(len(s.data)) {
			t.Fatalf("run %d [%d, %d) holds %d bytes", k, s.lsn, s.end, len(s.data))
		}
		if s.lsn <= rs.next() {
			t.Fatalf("run %d starts at %d, not past the stream's end %d", k, s.lsn, rs.next())
		}
		if k > 0 && s.lsn <= rs.segs[k-1].lsn {
			t.Fatalf("runs out of order: %d after %d", s.lsn, rs.segs[k-1].lsn)
		}
		total += len(s.data)
	}
	if total != rs.segBytes {
		t.Fatalf("segBytes %d, runs hold %d", rs.segBytes, total)
	}
}

// Live messages arriving in any order, duplicated and overlapping, end as
// the master's log, and the buffer keeps its invariants at every step;
// messages that follow on behind a hole take one run between them.
func TestReplicaBufferProperty(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			const txns = 120
			f := newFeed(1, 1)
			s := joined(t, f, 1, nil)
			f.add(txns - 1)
			var msgs []Message
			for i := 1; i < txns; {
				j := min(txns, i+1+rng.IntN(4))
				msgs = append(msgs, f.log(s.now, i, j))
				i = j
			}
			// Overlapping ranges and duplicates on top of the cover.
			for k := 0; k < 20; k++ {
				i := 1 + rng.IntN(txns-2)
				msgs = append(msgs, f.log(s.now, i, min(txns, i+1+rng.IntN(6))))
			}
			rng.Shuffle(len(msgs), func(a, b int) { msgs[a], msgs[b] = msgs[b], msgs[a] })
			for _, m := range msgs {
				s.recv(m)
				checkBuffer(t, s.n)
			}
			if s.st.EndLSN() != f.st.EndLSN() || s.st.hash() != f.st.hash() {
				t.Fatalf("replica ends at %d, master at %d (or the content differs)", s.st.EndLSN(), f.st.EndLSN())
			}
			if d := s.n.counters.Dropped[DropBufferFull]; d != 0 {
				t.Fatalf("%d messages dropped for a full buffer", d)
			}
		})
	}
	// In order behind a hole: one run however many messages.
	f := newFeed(1, 1)
	s := joined(t, f, 1, nil)
	f.add(60)
	for i := 3; i < 61; i++ {
		s.recv(f.log(s.now, i, i+1))
	}
	checkBuffer(t, s.n)
	if len(s.n.rs.segs) != 1 {
		t.Fatalf("%d runs for one stretch of records behind a hole, want 1", len(s.n.rs.segs))
	}
	s.recv(f.log(s.now, 1, 3))
	if s.st.EndLSN() != f.st.EndLSN() || len(s.n.rs.segs) != 0 {
		t.Fatalf("after the hole filled: end %d, master's %d, %d runs left", s.st.EndLSN(), f.st.EndLSN(), len(s.n.rs.segs))
	}
}
