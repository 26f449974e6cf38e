package rep

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/elect"
)

// seedMessages are valid messages of every type, for the fuzz corpora.
func seedMessages() []Message {
	f := newFeed(1, 3)
	h := f.hdr(time.Second)
	var pages []byte
	pages = appendU64(pages, 100)
	pages = appendU32(pages, 3)
	pages = append(pages, 1, 2, 3)
	vote := appendVote(nil, voteFor(2))
	ms := []Message{
		mk(2, MsgAlive, h, u64s(900), appendU32(appendU32(nil, 1), 2)), mk(2, MsgAliveReq, h), mk(2, MsgNewSite, h, appendU32(appendU16(nil, 9), 5)),
		mk(2, MsgNewClient, h), mk(2, MsgNewMaster, h), mk(2, MsgMasterReq, h), mk(2, MsgDupMaster, h),
		mk(2, MsgHeartbeat, h, u64s(7)), f.log(time.Second, 0, 3), f.log(time.Second, 1, 2),
		mk(2, MsgLogReq, h, u64s(10, 20)), mk(2, MsgAllReq, h, u64s(10, 0)),
		mk(2, MsgAck, h, u64s(5, 1000)), mk(2, MsgLeaseGrant, h, u64s(5, 1000)),
		mk(2, MsgVerifyReq, h, []byte{2}, appendPoint(appendPoint(nil, CommitPoint{1, 2, 3}), CommitPoint{4, 5, 6})),
		mk(2, MsgVerify, h, appendPoint(nil, CommitPoint{1, 2, 3})), mk(2, MsgVerifyFail, Header{Flags: FlagInitRequired}, u64s(77)),
		mk(2, MsgUpdateReq, h), mk(2, MsgUpdate, h, u64s(64), appendU32(appendU32(nil, 2), 3), []byte("abc")),
		mk(2, MsgPageReq, h, u64s(64), appendU32(appendU32(nil, 0), 4)),
		mk(2, MsgPageReq, h, u64s(64), appendU32(appendU32(nil, 0), 4), u64s(32, 200)), // resuming
		mk(2, MsgPage, h, u64s(64), appendU32(appendU32(nil, 0), 1), pages),
		mk(2, MsgPageFail, h, u64s(64)), mk(2, MsgVote1, h, vote), mk(2, MsgVote2, h, vote),
		mk(2, MsgApp, h, []byte("hello")), mk(2, MsgAppReply, h),
		mk(2, MsgLogReq, h, u64s(10, 20), appendU32(nil, 8192)), // with the message size asked for
	}
	ms[8].Type, ms[9].Type = MsgLog, MsgLogMore
	// A master's multicasts with Config.Pace name the sites it waits for.
	ms = append(ms, withPace(ms[7], 2), withPace(ms[8], 2, 3))
	return ms
}

func TestSeedMessagesDecode(t *testing.T) {
	seen := map[MsgType]bool{}
	for _, m := range seedMessages() {
		var d Decoded
		if err := DecodeMessage(m, &d); err != nil {
			t.Errorf("%v: %v", m.Type, err)
		}
		seen[m.Type] = true
	}
	for typ := MsgType(1); typ <= msgTypeMax; typ++ {
		if !seen[typ] {
			t.Errorf("no seed for %v", typ)
		}
	}
}

func TestDecodeRejectsTruncation(t *testing.T) {
	for _, m := range seedMessages() {
		for cut := 0; cut < len(m.Payload); cut++ {
			var d Decoded
			mm := m
			mm.Payload = m.Payload[:cut]
			err := DecodeMessage(mm, &d)
			if err == nil && cut < HeaderSize {
				t.Fatalf("%v truncated to %d bytes decoded", m.Type, cut)
			}
		}
	}
	var d Decoded
	if err := DecodeMessage(Message{Type: 200, Payload: make([]byte, 64)}, &d); err == nil {
		t.Fatal("unknown type decoded")
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz seeds: REP_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("REP_WRITE_CORPUS") == "" {
		t.Skip("set REP_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	for _, name := range []string{"FuzzDecodeMessage", "FuzzStep"} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, m := range seedMessages() {
			var b bytes.Buffer
			b.WriteString("go test fuzz v1\n")
			if name == "FuzzStep" {
				fmt.Fprintf(&b, "byte(%q)\n", byte(i%2))
			}
			fmt.Fprintf(&b, "byte(%q)\n[]byte(%q)\n", byte(m.Type), m.Payload)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d-%v", i, m.Type)), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(byte(m.Type), m.Payload)
	}
	f.Fuzz(func(t *testing.T, typ byte, payload []byte) {
		var d Decoded
		err := DecodeMessage(Message{From: 2, To: 1, Type: MsgType(typ), Payload: payload}, &d)
		if err != nil {
			return
		}
		if h := appendHeader(nil, &d.Header); !bytes.Equal(h, payload[:HeaderSize]) {
			t.Fatalf("header does not round-trip: %x vs %x", h, payload[:HeaderSize])
		}
		if d.Type == MsgLog || d.Type == MsgLogMore {
			if lastCommitEnd(d.Data) > len(d.Data) {
				t.Fatal("commit end beyond data")
			}
		}
		if d.Type == MsgPage {
			b := d.Data
			for i := uint32(0); i < d.Count; i++ {
				_, _, b = nextPage(b)
			}
			if len(b) != 0 {
				t.Fatal("pages do not fill the body")
			}
		}
	})
}

// FuzzStep feeds arbitrary messages to a master and to a syncing replica:
// whatever arrives, the node must not panic and must keep its invariants.
func FuzzStep(f *testing.F) {
	for i, m := range seedMessages() {
		f.Add(byte(i%2), byte(m.Type), m.Payload)
	}
	f.Fuzz(func(t *testing.T, role, typ byte, payload []byte) {
		var s *solo
		from := uint16(2) // a replica talking to the master
		if role%2 == 0 {
			s = startMaster(t, nil)
			s.n.Committed(s.now, s.st.commitTxn("a"))
			s.st.checkpoint(false)
		} else {
			feed := newFeed(1, 3)
			s = joined(t, feed, 1, nil)
			from = 1 // the master talking to a replica
		}
		s.now += time.Millisecond
		_ = s.n.Step(s.now, Message{From: from, To: AllSites, Type: MsgType(typ), Payload: payload})
		s.ready()
		s.tick(time.Second)
		_ = s.n.Status()
	})
}

func voteFor(site uint16) elect.Vote {
	return elect.Vote{Site: site, Egen: 3, LastGen: 1, LSN: 100, Priority: 10, Tiebreaker: 7}
}
