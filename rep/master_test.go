package rep

import (
	"encoding/binary"
	"testing"
	"time"
)

// solo drives one node by hand; peers are simulated by crafted messages.
type solo struct {
	t   *testing.T
	n   *Node
	st  *memStore
	now time.Duration
	// listLater: ready leaves Ready.ListPages unanswered and collects
	// them in lists (a board lists on another goroutine).
	listLater bool
	lists     []Snapshot
}

// out is a Ready with its slices copied (they are recycled after Advance).
type out struct {
	msgs   []Message
	events []Event
	failed []uint64
	perm   uint64
	ckpt   uint64
	rd     Ready
}

func newSolo(t *testing.T, cfg Config) *solo {
	t.Helper()
	st := newMemStore()
	n, err := NewNode(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	return &solo{t: t, n: n, st: st}
}

// ready runs Ready/Advance until the node is quiet, merging the outputs.
func (s *solo) ready() out {
	s.t.Helper()
	var o out
	for i := 0; i < 50; i++ {
		rd := s.n.Ready()
		o.perm, o.ckpt = rd.PermLSN, rd.CheckpointOK
		if i == 0 {
			o.rd = rd
		}
		if rd.Empty() {
			s.n.Advance(rd)
			return o
		}
		for _, m := range rd.Messages {
			m.Payload = append([]byte(nil), m.Payload...)
			o.msgs = append(o.msgs, m)
		}
		o.events = append(o.events, rd.Events...)
		o.failed = append(o.failed, rd.PermFailed...)
		if err := s.st.apply(&rd); err != nil {
			s.t.Logf("apply: %v", err)
		}
		s.n.Advance(rd)
		switch {
		case rd.ListPages != nil && s.listLater:
			s.lists = append(s.lists, rd.ListPages)
		case rd.ListPages != nil:
			s.n.PagesListed(rd.ListPages.LSN(), rd.ListPages.PageList())
		}
	}
	s.t.Fatal("Ready never empties")
	return o
}

func (s *solo) tick(d time.Duration) out {
	s.now += d
	s.n.Tick(s.now)
	return s.ready()
}

// listen lets d pass ticking as a driver does, well within
// Node.deafAllowance: one Tick d later would be a node that could not run,
// whose master's silence meanwhile does not count (see Node.tick). It
// returns everything sent.
func (s *solo) listen(d time.Duration) out {
	var all out
	step := s.n.deafAllowance() / 2
	for end := s.now + d; s.now < end; {
		o := s.tick(min(step, end-s.now))
		all.msgs = append(all.msgs, o.msgs...)
		all.events = append(all.events, o.events...)
	}
	return all
}

func (s *solo) recv(m Message) out {
	s.t.Helper()
	if err := s.n.Step(s.now, m); err != nil {
		s.t.Fatalf("Step %v: %v", m.Type, err)
	}
	return s.ready()
}

func (o out) only(t MsgType) []Message {
	var r []Message
	for _, m := range o.msgs {
		if m.Type == t {
			r = append(r, m)
		}
	}
	return r
}

// mk builds a message from a fake peer.
func mk(from uint16, t MsgType, h Header, body ...[]byte) Message {
	p := appendHeader(nil, &h)
	for _, b := range body {
		p = append(p, b...)
	}
	return Message{From: from, To: AllSites, Type: t, Payload: p}
}

func u64s(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func commitsIn(t *testing.T, m Message) (n int) {
	var d Decoded
	if err := DecodeMessage(m, &d); err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(d.Data); {
		sz, typ, _ := recAt(d.Data[off:])
		if typ == recCommit {
			n++
		}
		off += sz
	}
	if lc := lastCommitEnd(d.Data); lc != len(d.Data) {
		t.Errorf("LOG ends with a partial transaction: %d of %d bytes whole", lc, len(d.Data))
	}
	return n
}

func startMaster(t *testing.T, mod func(*Config)) *solo {
	cfg := Config{Site: 1, Priority: 100, Peers: []uint16{2, 3}, AckPolicy: AckQuorum}
	if mod != nil {
		mod(&cfg)
	}
	s := newSolo(t, cfg)
	s.n.Start(0, StartMaster)
	o := s.ready()
	if len(o.only(MsgNewMaster)) != 1 || o.rd.NewGen != 1 {
		t.Fatalf("start master: msgs %v newgen %d", o.msgs, o.rd.NewGen)
	}
	if !hasEvent(o.events, EventMaster) {
		t.Fatalf("no MASTER event: %v", o.events)
	}
	if len(o.only(MsgLog)) != 1 {
		t.Fatalf("new gen record not shipped: %v", o.msgs)
	}
	return s
}

func TestMasterGroupCommit(t *testing.T) {
	s := startMaster(t, nil)
	for i := 0; i < 5; i++ {
		s.n.Committed(s.now, s.st.commitTxn("a", "b"))
	}
	o := s.ready()
	logs := o.only(MsgLog)
	if len(logs) != 1 {
		t.Fatalf("5 commits before one Ready: %d LOG messages, want 1", len(logs))
	}
	if c := commitsIn(t, logs[0]); c != 5 {
		t.Fatalf("LOG carries %d commits, want 5", c)
	}
	if o := s.ready(); len(o.msgs) != 0 {
		t.Fatalf("nothing new but sent %v", o.msgs)
	}
}

func TestMasterSplitsLargeBatches(t *testing.T) {
	s := startMaster(t, func(c *Config) { c.MaxMessageBytes = minMessageBytes })
	big := string(make([]byte, 1000))
	for i := 0; i < 10; i++ {
		s.n.Committed(s.now, s.st.commitTxn(big))
	}
	// One transaction larger than a message travels alone, split.
	s.n.Committed(s.now, s.st.commitTxn(big, big, big, big, big))
	o := s.ready()
	total := 0
	for _, m := range o.only(MsgLog) {
		if len(m.Payload) > minMessageBytes {
			t.Errorf("LOG of %d bytes exceeds MaxMessageBytes %d", len(m.Payload), minMessageBytes)
		}
		var d Decoded
		if err := DecodeMessage(m, &d); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(d.Data); {
			sz, typ, _ := recAt(d.Data[off:])
			if typ == recCommit {
				total++
			}
			off += sz
		}
	}
	if total != 11 {
		t.Fatalf("shipped %d commits, want 11", total)
	}
	if len(o.only(MsgLog)) < 3 {
		t.Fatalf("%d LOG messages for ~15 KB at 4 KiB each", len(o.only(MsgLog)))
	}
}

func TestMasterHeartbeatWhenIdle(t *testing.T) {
	s := startMaster(t, nil)
	hb := s.n.cfg.HeartbeatSend
	if o := s.tick(hb / 2); len(o.only(MsgHeartbeat)) != 0 {
		t.Fatal("heartbeat before HeartbeatSend")
	}
	if o := s.tick(hb / 2); len(o.only(MsgHeartbeat)) != 1 {
		t.Fatalf("no heartbeat after HeartbeatSend idle: %v", o.msgs)
	}
	// Traffic postpones heartbeats.
	s.now += hb - time.Millisecond
	s.n.Committed(s.now, s.st.commitTxn("x"))
	s.ready()
	if o := s.tick(hb - time.Millisecond); len(o.only(MsgHeartbeat)) != 0 {
		t.Fatal("heartbeat although a LOG went out within HeartbeatSend")
	}
}

func ackFrom(site uint16, gen uint32, lsn uint64, echo time.Duration) Message {
	return mk(site, MsgAck, Header{Gen: gen, Master: 1, Priority: 100}, u64s(lsn, uint64(echo)))
}

func TestMasterAckTimeoutPermFailed(t *testing.T) {
	s := startMaster(t, nil)
	c1 := s.st.commitTxn("a")
	s.n.Committed(s.now, c1)
	o := s.ready()
	if o.perm >= c1.LSN {
		t.Fatalf("perm %d before any ack", o.perm)
	}
	o = s.tick(s.n.cfg.AckTimeout)
	// The RecNewGen commit was never acked either.
	if len(o.failed) != 2 || o.failed[1] != c1.LSN || !hasEvent(o.events, EventPermFailed) {
		t.Fatalf("after AckTimeout: failed %v events %v", o.failed, o.events)
	}
	// A late ack still makes it (and what follows) permanent.
	c2 := s.st.commitTxn("b")
	s.n.Committed(s.now, c2)
	s.ready()
	o = s.recv(ackFrom(2, 1, c2.LSN, 0))
	if o.perm != c2.LSN || o.ckpt != c2.End {
		t.Fatalf("perm %d ckptOK %d after quorum ack, want %d and %d", o.perm, o.ckpt, c2.LSN, c2.End)
	}
	if o := s.tick(s.n.cfg.AckTimeout); len(o.failed) != 0 {
		t.Fatalf("perm commit reported failed: %v", o.failed)
	}
	// An ack from an older generation does not count.
	c3 := s.st.commitTxn("c")
	s.n.Committed(s.now, c3)
	s.ready()
	if o := s.recv(ackFrom(3, 0, c3.LSN, 0)); o.perm >= c3.LSN {
		t.Fatal("stale-gen ack counted")
	}
}

func TestMasterServesLogRequests(t *testing.T) {
	s := startMaster(t, func(c *Config) { c.MaxMessageBytes = minMessageBytes })
	var cis []CommitInfo
	for i := 0; i < 100; i++ {
		ci := s.st.commitTxn(string(make([]byte, 300)))
		cis = append(cis, ci)
		s.n.Committed(s.now, ci)
	}
	s.ready()
	req := func(t MsgType, from, to uint64) Message {
		return mk(2, t, Header{Gen: 1, Master: 1, Priority: 100}, u64s(from, to))
	}
	// A gap: exactly the records in [from, to) (rounded to whole txns).
	o := s.recv(req(MsgLogReq, cis[10].End, cis[12].End))
	logs := o.only(MsgLog)
	if len(logs) != 1 || commitsIn(t, logs[0]) != 2 {
		t.Fatalf("LOG_REQ of 2 txns: %d messages", len(logs))
	}
	// ALL_REQ is served up to the end when that fits the budget (see
	// TestMasterServeBudgetBytes for what does not), in messages of the
	// size the request asks for.
	o = s.recv(mk(2, MsgAllReq, Header{Gen: 1, Master: 1, Priority: 100}, append(u64s(cis[0].End, 0), 0, 16, 0, 0)))
	bytes := 0
	for _, m := range o.only(MsgLog) {
		d := decode(t, m)
		if len(d.Data) > 4<<10 {
			t.Fatalf("ALL_REQ for messages of 4 KiB answered with a message of %d bytes of log", len(d.Data))
		}
		bytes += len(d.Data)
	}
	if len(o.only(MsgLogMore)) != 0 || bytes != int(cis[len(cis)-1].End-cis[0].End) {
		t.Fatalf("ALL_REQ: %d LOG %d LOG_MORE, %d bytes of %d", len(o.only(MsgLog)), len(o.only(MsgLogMore)),
			bytes, cis[len(cis)-1].End-cis[0].End)
	}
	if s.n.counters.ReRequestsServed != 2 {
		t.Fatalf("served counter %d", s.n.counters.ReRequestsServed)
	}
	// Records reclaimed from the log: tell the replica to init.
	s.st.checkpoint(true)
	o = s.recv(req(MsgLogReq, cis[0].End, cis[1].End))
	vf := o.only(MsgVerifyFail)
	if len(vf) != 1 {
		t.Fatalf("LOG_REQ below the log: %v", o.msgs)
	}
	var d Decoded
	if err := DecodeMessage(vf[0], &d); err != nil || d.Header.Flags&FlagInitRequired == 0 {
		t.Fatalf("VERIFY_FAIL without FlagInitRequired: %+v %v", d.Header, err)
	}
}

// A catch-up request is answered with at most serveBudgetBytes of log (in
// messages no larger), whatever MaxMessageBytes: the driver sends a Ready's
// messages back to back and the master says nothing else meanwhile. With
// the board's 1 MiB messages, eight per request silenced the master for
// longer than its 10 ms heartbeat monitor on a loaded chassis: the other
// replicas elected while the master served a restarted board.
func TestMasterServeBudgetBytes(t *testing.T) {
	for _, size := range []int{1 << 20, 256 << 10, 64 << 10} {
		s := startMaster(t, func(c *Config) { c.MaxMessageBytes = size })
		var cis []CommitInfo
		for len(cis) == 0 || cis[len(cis)-1].End < 3*serveBudgetBytes {
			ci := s.st.commitTxn(string(make([]byte, 1000)))
			cis = append(cis, ci)
			s.n.Committed(s.now, ci)
		}
		s.ready()
		o := s.recv(mk(2, MsgAllReq, Header{Gen: 1, Master: 1, Priority: 100}, u64s(cis[0].End, 0)))
		bytes := 0
		for _, m := range o.msgs {
			if m.Type == MsgLog || m.Type == MsgLogMore {
				var d Decoded
				if err := DecodeMessage(m, &d); err != nil {
					t.Fatal(err)
				}
				bytes += len(d.Data)
			}
		}
		want := serveMessages(s.n.serveChunk(0))
		if len(o.only(MsgLogMore)) != 1 || len(o.only(MsgLog)) != want-1 || bytes > serveBudgetBytes || bytes < serveBudgetBytes/2 {
			t.Errorf("MaxMessageBytes %d: ALL_REQ answered with %d LOG, %d LOG_MORE, %d bytes of log; want %d messages, at most %d bytes",
				size, len(o.only(MsgLog)), len(o.only(MsgLogMore)), bytes, want, serveBudgetBytes)
		}
	}
}

// TestUpdateWaitsForThePageList: the master does not walk a snapshot's
// trees itself (tens of ms under its lock for a large one, its heartbeats
// waiting): UPDATE_REQ asks the driver for the page list once, however many
// replicas ask, and the UPDATEs go out when PagesListed reports it; later
// requests for the same checkpoint are answered at once. A list that came
// too late for its checkpoint, or none, answers PAGE_FAIL, and a driver
// that never reports is asked again.
func TestUpdateWaitsForThePageList(t *testing.T) {
	s := startMaster(t, nil)
	s.listLater = true
	s.n.Committed(s.now, s.st.commitTxn("a", "b"))
	s.st.checkpoint(false)
	s.ready()
	h := Header{Gen: s.n.Status().Gen}
	ask := func(from uint16) out { return s.recv(mk(from, MsgUpdateReq, h)) }

	if o := ask(2); len(o.only(MsgUpdate)) != 0 || len(s.lists) != 1 {
		t.Fatalf("UPDATE_REQ: %d UPDATEs sent, %d lists asked; want none sent and one asked", len(o.only(MsgUpdate)), len(s.lists))
	}
	if o := ask(3); len(o.only(MsgUpdate)) != 0 || len(s.lists) != 1 {
		t.Fatalf("a second replica's UPDATE_REQ: %d UPDATEs, %d lists asked; want none and still one", len(o.only(MsgUpdate)), len(s.lists))
	}
	snap := s.lists[0]
	s.n.PagesListed(snap.LSN(), snap.PageList())
	o := s.ready()
	if ups := o.only(MsgUpdate); len(ups) != 2 || ups[0].To != 2 || ups[1].To != 3 {
		t.Fatalf("after the list: UPDATEs %v, want one each to sites 2 and 3", ups)
	}
	if o := ask(2); len(o.only(MsgUpdate)) != 1 || len(s.lists) != 1 {
		t.Fatalf("UPDATE_REQ for the listed checkpoint: %d UPDATEs, %d lists; want one at once, no new list", len(o.only(MsgUpdate)), len(s.lists))
	}

	// The checkpoint moves while the driver lists: PAGE_FAIL names the
	// new one, and the replica starts over from it.
	s.n.Committed(s.now, s.st.commitTxn("c"))
	s.st.checkpoint(false)
	s.ready()
	ask(2)
	if len(s.lists) != 2 {
		t.Fatalf("a new checkpoint asked for %d lists in all, want 2", len(s.lists))
	}
	stale := s.lists[1]
	s.n.Committed(s.now, s.st.commitTxn("d"))
	s.st.checkpoint(false)
	s.ready()
	s.n.PagesListed(stale.LSN(), stale.PageList())
	fails := s.ready().only(MsgPageFail)
	var d Decoded
	if len(fails) != 1 || DecodeMessage(fails[0], &d) != nil || d.LSN != s.st.CheckpointLSN() {
		t.Fatalf("a list of a moved checkpoint: PAGE_FAILs %v (LSN %d), want one naming checkpoint %d", fails, d.LSN, s.st.CheckpointLSN())
	}

	// A list that failed (nil) answers PAGE_FAIL without a checkpoint.
	ask(3)
	failed := s.lists[len(s.lists)-1]
	s.n.PagesListed(failed.LSN(), nil)
	fails = s.ready().only(MsgPageFail)
	if len(fails) != 1 || DecodeMessage(fails[0], &d) != nil || d.LSN != 0 || fails[0].To != 3 {
		t.Fatalf("a failed list: PAGE_FAILs %v (LSN %d), want one to site 3 with LSN 0", fails, d.LSN)
	}

	// A driver that does not report is asked again after a while.
	ask(2)
	n := len(s.lists)
	s.listen(3 * s.n.cfg.ReRequestMax)
	ask(2)
	if len(s.lists) != n+1 {
		t.Fatalf("a list never reported was not asked again (%d asks, want %d)", len(s.lists), n+1)
	}
}
