package backplane

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

var testNow = time.Unix(1_000_000, 0)

type rxHarness struct {
	t  *testing.T
	c  counters
	rx *rxCore
}

func newRxHarness(t *testing.T, rc ReassemblyConfig) *rxHarness {
	h := &rxHarness{t: t}
	h.rx = newRxCore(42, 1, 100, rc, &h.c)
	return h
}

// frames encodes a message from site `from` as whole frames of <= 100 payload bytes.
func frames(t *testing.T, from uint16, payload []byte, compress int) [][]byte {
	t.Helper()
	var c counters
	return framesOf(t, newTxCore(42, from, 100, compress, &c), payload)
}

// framesOf encodes the next message of tx as whole frames.
func framesOf(t *testing.T, tx *txCore, payload []byte) [][]byte {
	t.Helper()
	fr, err := tx.build(AllSites, 9, payload)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, f := range fr {
		out = append(out, append(bytes.Clone(f.hdr), f.data...))
	}
	return out
}

// feed delivers frames at time now and returns copies of completed messages.
func (h *rxHarness) feed(now time.Time, fs ...[]byte) [][]byte {
	var out [][]byte
	for _, f := range fs {
		h.rx.begin()
		var m Message
		if h.rx.frame(f, now, 0, &m) {
			out = append(out, bytes.Clone(m.Payload))
		}
	}
	return out
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func TestReassemblyReorderDuplicates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{101, 250, 1000, 64 << 10, 300 << 10} {
		h := newRxHarness(t, ReassemblyConfig{})
		msg := pattern(size, byte(size))
		fs := frames(t, 2, msg, -1)
		// Shuffle, then duplicate a few fragments.
		rng.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
		dups := min(3, len(fs)-1)
		fs = append(fs[:len(fs)-1:len(fs)-1], append(fs[:dups:dups], fs[len(fs)-1])...)
		got := h.feed(testNow, fs...)
		if len(got) != 1 || !bytes.Equal(got[0], msg) {
			t.Fatalf("size %d: got %d messages (equal=%v)", size, len(got), len(got) == 1 && bytes.Equal(got[0], msg))
		}
		s := h.c.snapshot()
		if s.Drop(DropDupFragment) != uint64(dups) {
			t.Fatalf("size %d: duplicate drops %d, want %d", size, s.Drop(DropDupFragment), dups)
		}
		// A late duplicate of a completed message is a duplicate, not a new message.
		if got := h.feed(testNow, fs[0]); len(got) != 0 || h.c.snapshot().Drop(DropDupFragment) != uint64(dups+1) {
			t.Fatalf("size %d: late duplicate delivered or not counted", size)
		}
		if h.rx.reasm.used != 0 || len(h.rx.reasm.active) != 0 {
			t.Fatalf("size %d: %d bytes / %d messages still charged", size, h.rx.reasm.used, len(h.rx.reasm.active))
		}
	}
}

func TestReassemblyLastFragmentFirst(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	msg := pattern(350, 7)
	fs := frames(t, 2, msg, -1)
	got := h.feed(testNow, fs[3], fs[1], fs[0], fs[2])
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatalf("got %d messages", len(got))
	}
}

func TestReassemblyInterleavedSources(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	a, b := pattern(500, 1), pattern(300, 2)
	fa, fb := frames(t, 2, a, -1), frames(t, 3, b, -1)
	var all [][]byte
	for i := 0; i < max(len(fa), len(fb)); i++ {
		if i < len(fa) {
			all = append(all, fa[i])
		}
		if i < len(fb) {
			all = append(all, fb[i])
		}
	}
	got := h.feed(testNow, all...)
	if len(got) != 2 || !bytes.Equal(got[0], b) || !bytes.Equal(got[1], a) {
		t.Fatalf("got %d messages", len(got))
	}
}

func TestReassemblyTimeout(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{Timeout: time.Second})
	fs := frames(t, 2, pattern(400, 3), -1)
	if got := h.feed(testNow, fs[0], fs[1], fs[3]); len(got) != 0 {
		t.Fatal("delivered an incomplete message")
	}
	if next := h.rx.reasm.expire(testNow.Add(999 * time.Millisecond)); !next.Equal(testNow.Add(time.Second)) {
		t.Fatalf("next expiry %v", next)
	}
	h.rx.reasm.expire(testNow.Add(time.Second))
	s := h.c.snapshot()
	if s.Drop(DropReasmTimeout) != 1 || h.rx.reasm.used != 0 {
		t.Fatalf("timeout drops %d, bytes charged %d", s.Drop(DropReasmTimeout), h.rx.reasm.used)
	}
	// The missing fragment arriving late starts a new partial message that
	// can never complete; it must not be delivered.
	if got := h.feed(testNow.Add(2*time.Second), fs[2]); len(got) != 0 {
		t.Fatal("late fragment delivered")
	}
}

func TestReassemblyMemoryLimits(t *testing.T) {
	t.Run("per source", func(t *testing.T) {
		h := newRxHarness(t, ReassemblyConfig{PerSourceMsgs: 4})
		var firsts [][]byte
		var msgs [][][]byte
		for i := 0; i < 6; i++ {
			fs := frames(t, 2, pattern(300, byte(i)), -1)
			msgs = append(msgs, fs)
			firsts = append(firsts, fs[0])
		}
		h.feed(testNow, firsts...)
		if d := h.c.snapshot().Drop(DropReasmOverflow); d != 2 {
			t.Fatalf("overflow drops %d, want 2", d)
		}
		if n := len(h.rx.reasm.active); n != 4 {
			t.Fatalf("%d partial messages, want 4", n)
		}
		// The newest ones survived: completing message 5 works.
		if got := h.feed(testNow, msgs[5][1:]...); len(got) != 1 {
			t.Fatal("newest message did not complete")
		}
		// Another source is unaffected by this source's limit.
		if got := h.feed(testNow, frames(t, 3, pattern(300, 9), -1)...); len(got) != 1 {
			t.Fatal("other source's message lost")
		}
	})
	t.Run("global bytes", func(t *testing.T) {
		// Each 250-byte message charges 300 bytes (3 x 100-byte fragments).
		h := newRxHarness(t, ReassemblyConfig{MaxBytes: 1000, PerSourceBytes: 1000})
		for s := uint16(2); s < 6; s++ {
			h.feed(testNow, frames(t, s, pattern(250, byte(s)), -1)[0])
		}
		if d := h.c.snapshot().Drop(DropReasmOverflow); d != 1 {
			t.Fatalf("overflow drops %d, want 1", d)
		}
		if h.rx.reasm.used > 1000 {
			t.Fatalf("charged %d bytes over the 1000-byte cap", h.rx.reasm.used)
		}
	})
	t.Run("message larger than cap", func(t *testing.T) {
		h := newRxHarness(t, ReassemblyConfig{MaxBytes: 500, PerSourceBytes: 500})
		if got := h.feed(testNow, frames(t, 2, pattern(900, 1), -1)...); len(got) != 0 {
			t.Fatal("delivered a message above the memory cap")
		}
		if d := h.c.snapshot().Drop(DropReasmOverflow); d == 0 {
			t.Fatal("no overflow counted")
		}
	})
}

func TestReassemblyStray(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	fs := frames(t, 2, pattern(300, 1), -1)
	h.feed(testNow, fs[0])
	// Same message id, different fragment count: inconsistent, stray.
	hd, p, _ := DecodeFrame(fs[1])
	hd.NFrags = 5
	if got := h.feed(testNow, AppendFrame(nil, hd, p)); len(got) != 0 {
		t.Fatal("delivered")
	}
	// A middle fragment with a different size than the first.
	hd.NFrags = 3
	if got := h.feed(testNow, AppendFrame(nil, hd, p[:50])); len(got) != 0 {
		t.Fatal("delivered")
	}
	// A fragment larger than the link allows.
	hd.MsgID++
	if got := h.feed(testNow, AppendFrame(nil, hd, pattern(101, 0))); len(got) != 0 {
		t.Fatal("delivered")
	}
	if d := h.c.snapshot().Drop(DropStrayFragment); d != 3 {
		t.Fatalf("stray drops %d, want 3", d)
	}
	// The original still completes.
	if got := h.feed(testNow, fs[1], fs[2]); len(got) != 1 {
		t.Fatal("original message lost")
	}
}

func TestRxChecks(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	mk := func(group uint32, from, to uint16) []byte {
		return AppendFrame(nil, Header{Type: 1, Group: group, From: from, To: to, MsgID: 1, NFrags: 1}, []byte("x"))
	}
	h.feed(testNow, mk(43, 2, AllSites), mk(42, 1, AllSites), mk(42, 2, 3), []byte{1, 2, 3})
	s := h.c.snapshot()
	if s.Drop(DropForeignGroup) != 1 || s.Drop(DropFromSelf) != 1 || s.Drop(DropNotForMe) != 1 || s.Drop(DropShort) != 1 {
		t.Fatalf("drops %v", s.Drops)
	}
	if got := h.feed(testNow, mk(42, 2, 1), mk(42, 2, AllSites)); len(got) != 2 {
		t.Fatalf("delivered %d of 2 good frames", len(got))
	}
}

func TestCompressedFragmentedMessage(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	msg := bytes.Repeat([]byte("route 10.0.0.0/8 via 1 "), 2000)
	fs := frames(t, 2, msg, 0)
	if len(fs) >= len(msg)/100 {
		t.Fatalf("%d fragments: not compressed", len(fs))
	}
	got := h.feed(testNow, fs...)
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatal("compressed message not restored")
	}
}

func TestUnfragmentedRecvAllocs(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	f := frames(t, 2, pattern(80, 1), -1)[0]
	var m Message
	allocs := testing.AllocsPerRun(100, func() {
		h.rx.begin()
		if !h.rx.frame(f, testNow, 0, &m) {
			t.Fatal("not delivered")
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per unfragmented message", allocs)
	}
}

// FuzzReassembly builds valid (crc-correct) fragments from the fuzz input so
// the fuzzer explores reassembly itself rather than checksums: every 6 bytes
// are one fragment (source, message id, index, count, length, time step).
func FuzzReassembly(f *testing.F) {
	f.Add([]byte{0, 1, 0, 3, 100, 0, 0, 1, 1, 3, 100, 0, 0, 1, 2, 3, 20, 0})
	f.Add([]byte{1, 2, 2, 3, 50, 0, 1, 2, 0, 3, 100, 200, 1, 2, 1, 3, 100, 0, 1, 2, 1, 3, 100, 0})
	f.Add([]byte{0, 1, 0, 2, 100, 0, 0, 1, 1, 5, 100, 0, 0, 1, 1, 2, 101, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c counters
		rc := ReassemblyConfig{Timeout: time.Second, PerSourceMsgs: 3, PerSourceBytes: 1000, MaxBytes: 1500, MaxMsgs: 4}
		rx := newRxCore(42, 1, 100, rc, &c)
		now := testNow
		payload := pattern(256, 0)
		var m Message
		for ; len(b) >= 6; b = b[6:] {
			nf := uint16(b[3]%8) + 1
			h := Header{Type: 1, Group: 42, From: 2 + uint16(b[0]%2), To: AllSites, MsgID: uint32(b[1] % 4),
				Frag: uint16(b[2]) % nf, NFrags: nf}
			now = now.Add(time.Duration(b[5]) * 10 * time.Millisecond)
			rx.begin()
			if rx.frame(AppendFrame(nil, h, payload[:int(b[4])%130]), now, 0, &m) && nf > 1 && len(m.Payload) > int(nf)*100 {
				t.Fatalf("delivered %d bytes from %d fragments of <= 100", len(m.Payload), nf)
			}
			r := rx.reasm
			sum := 0
			for _, e := range r.active {
				sum += e.charge
			}
			if sum != r.used || r.used > rc.MaxBytes || len(r.active) > rc.MaxMsgs {
				t.Fatalf("charged %d, entries sum %d, %d entries (caps %d, %d)", r.used, sum, len(r.active), rc.MaxBytes, rc.MaxMsgs)
			}
			for s, st := range r.srcs {
				if st.msgs > rc.PerSourceMsgs || st.bytes > rc.PerSourceBytes || st.msgs < 0 || st.bytes < 0 {
					t.Fatalf("source %d: %d msgs %d bytes", s, st.msgs, st.bytes)
				}
			}
		}
	})
}

// TestReassemblySameSourceInterleaved: one sender's messages may reach a
// receiver interleaved (a small message sent on another path overtaking a
// large one's fragments, or fragments reordered on the way): each is
// rebuilt by its message id, the one completed first is delivered first,
// and completing a later id does not make the earlier one's remaining
// fragments look like late duplicates.
func TestReassemblySameSourceInterleaved(t *testing.T) {
	h := newRxHarness(t, ReassemblyConfig{})
	var txc counters
	tx := newTxCore(42, 2, 100, -1, &txc)
	build := func(p []byte) [][]byte { return framesOf(t, tx, p) }
	a, b, small, c, d := pattern(450, 1), pattern(330, 2), pattern(40, 3), pattern(250, 4), pattern(260, 5)
	fa, fb, fs, fc, fd := build(a), build(b), build(small), build(c), build(d)
	if len(fa) < 3 || len(fb) < 3 || len(fs) != 1 {
		t.Fatalf("fragments: %d, %d, %d", len(fa), len(fb), len(fs))
	}
	var got [][]byte
	got = append(got, h.feed(testNow, fa[0], fa[1])...)
	got = append(got, h.feed(testNow, fs[0])...) // the small message overtakes both
	got = append(got, h.feed(testNow, fb...)...) // the second large one overtakes the first
	got = append(got, h.feed(testNow, fa[2:]...)...)
	// A later message complete before any fragment of an earlier one.
	got = append(got, h.feed(testNow, fd...)...)
	got = append(got, h.feed(testNow, fc...)...)
	want := [][]byte{small, b, a, d, c}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d differs", i)
		}
	}
	s := h.c.snapshot()
	if s.Drop(DropDupFragment) != 0 || s.Drop(DropStrayFragment) != 0 {
		t.Fatalf("drops: duplicate %d, stray %d; want none", s.Drop(DropDupFragment), s.Drop(DropStrayFragment))
	}
	// Both large messages are now remembered as done: a late copy of
	// either one's fragment is a duplicate.
	if got := h.feed(testNow, fa[0], fb[1]); len(got) != 0 || h.c.snapshot().Drop(DropDupFragment) != 2 {
		t.Fatalf("late duplicates: %d delivered, %d counted", len(got), h.c.snapshot().Drop(DropDupFragment))
	}
	if h.rx.reasm.used != 0 || len(h.rx.reasm.active) != 0 {
		t.Fatalf("%d bytes / %d messages still charged", h.rx.reasm.used, len(h.rx.reasm.active))
	}
}
