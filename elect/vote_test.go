package elect

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestBeats(t *testing.T) {
	base := Vote{Site: 5, Egen: 3, LastGen: 4, LSN: 1000, Priority: 100, Tiebreaker: 7}
	with := func(f func(*Vote)) Vote { v := base; f(&v); return v }
	tests := []struct {
		name string
		v, o Vote
		want bool // v.Beats(o); o.Beats(v) must be !want for distinct votes
	}{
		{"higher gen beats longer log of older gen",
			with(func(v *Vote) { v.LastGen = 5; v.LSN = 10 }), with(func(v *Vote) { v.LastGen = 4; v.LSN = 1 << 40 }), true},
		{"higher gen beats higher priority",
			with(func(v *Vote) { v.LastGen = 5; v.Priority = 1 }), with(func(v *Vote) { v.Priority = 1000 }), true},
		{"same gen: longer log wins",
			with(func(v *Vote) { v.LSN = 1001 }), base, true},
		{"same gen: longer log beats higher priority",
			with(func(v *Vote) { v.LSN = 1001; v.Priority = 1 }), with(func(v *Vote) { v.Priority = 1000 }), true},
		{"same log: higher priority wins",
			with(func(v *Vote) { v.Priority = 101; v.Tiebreaker = 0 }), base, true},
		{"same log and priority: higher tiebreaker wins",
			with(func(v *Vote) { v.Tiebreaker = 8; v.Site = 1 }), base, true},
		{"all equal but site: higher site wins",
			with(func(v *Vote) { v.Site = 6 }), base, true},
		{"priority 0 never beats an electable vote, even far more current",
			with(func(v *Vote) { v.Priority = 0; v.LastGen = 99; v.LSN = 1 << 50; v.Site = 9 }), base, false},
		{"electable beats priority 0 with a higher tiebreaker",
			base, with(func(v *Vote) { v.Priority = 0; v.Tiebreaker = math.MaxUint32 }), true},
		{"between priority-0 votes the log still orders",
			with(func(v *Vote) { v.Priority = 0; v.LSN = 2000 }), with(func(v *Vote) { v.Priority = 0 }), true},
		{"egen does not matter",
			with(func(v *Vote) { v.Egen = 1; v.LSN = 1001 }), with(func(v *Vote) { v.Egen = 9 }), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.v.Beats(tt.o); got != tt.want {
				t.Errorf("%v.Beats(%v) = %v, want %v", tt.v, tt.o, got, tt.want)
			}
			if got := tt.o.Beats(tt.v); got == tt.want {
				t.Errorf("reverse %v.Beats(%v) = %v, want %v", tt.o, tt.v, got, !tt.want)
			}
		})
	}
	if base.Beats(base) {
		t.Errorf("a vote beats itself")
	}
}

// Beats must be a strict total order, or designees would depend on the
// order votes arrive in.
func TestBeatsTotalOrder(t *testing.T) {
	var vs []Vote
	for _, g := range []uint32{1, 2} {
		for _, l := range []uint64{10, 20} {
			for _, p := range []uint32{0, 1, 2} {
				for _, tb := range []uint32{0, 1} {
					for _, s := range []uint16{1, 2} {
						vs = append(vs, Vote{Site: s, LastGen: g, LSN: l, Priority: p, Tiebreaker: tb})
					}
				}
			}
		}
	}
	for _, a := range vs {
		for _, b := range vs {
			ab, ba := a.Beats(b), b.Beats(a)
			if a == b && (ab || ba) {
				t.Fatalf("%v beats itself", a)
			}
			if a != b && ab == ba {
				t.Fatalf("%v vs %v: Beats both ways = %v", a, b, ab)
			}
			for _, c := range vs {
				if ab && b.Beats(c) && !a.Beats(c) {
					t.Fatalf("not transitive: %v > %v > %v", a, b, c)
				}
			}
		}
	}
}

func TestVoteCodecRoundTrip(t *testing.T) {
	for _, v := range []Vote{
		{Site: 1, Egen: 1},
		{Site: 0, Egen: math.MaxUint32, LastGen: math.MaxUint32, LSN: math.MaxUint64, Priority: math.MaxUint32, Tiebreaker: math.MaxUint32},
		{Site: 0xFFFE, Egen: 7, LastGen: 3, LSN: 123456789, Priority: 100, Tiebreaker: 0xdeadbeef},
	} {
		prefix := []byte("hdr")
		b := AppendVote(prefix, v)
		if !bytes.Equal(b[:3], prefix) || len(b) != 3+VoteSize {
			t.Fatalf("AppendVote(%v) = %x: want prefix kept and %d bytes added", v, b, VoteSize)
		}
		got, err := DecodeVote(b[3:])
		if err != nil || got != v {
			t.Fatalf("DecodeVote(AppendVote(%v)) = %v, %v", v, got, err)
		}
	}
}

func TestVoteCodecLayout(t *testing.T) {
	b := AppendVote(nil, Vote{Site: 0x0102, Egen: 0x03040506, LastGen: 0x0708090a, LSN: 0x1112131415161718, Priority: 0x0b0c0d0e, Tiebreaker: 0x0f101112})
	want := []byte{1, 0, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0a, 0x09, 0x08, 0x07,
		0x0e, 0x0d, 0x0c, 0x0b, 0x12, 0x11, 0x10, 0x0f, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11}
	if !bytes.Equal(b, want) {
		t.Fatalf("layout\n got %x\nwant %x", b, want)
	}
}

func TestDecodeVoteErrors(t *testing.T) {
	good := AppendVote(nil, Vote{Site: 3, Egen: 2, LastGen: 1, LSN: 99, Priority: 10})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, ErrShortVote},
		{"one byte short", good[:VoteSize-1], ErrShortVote},
		{"trailing byte", append(bytes.Clone(good), 0), ErrLongVote},
		{"version 0", mod(func(b []byte) []byte { b[0] = 0; return b }), ErrVoteVersion},
		{"version 2", mod(func(b []byte) []byte { b[0] = 2; return b }), ErrVoteVersion},
		{"reserved set", mod(func(b []byte) []byte { b[1] = 1; return b }), ErrBadVote},
		{"broadcast site", mod(func(b []byte) []byte { b[2], b[3] = 0xff, 0xff; return b }), ErrBadVote},
		{"egen 0", mod(func(b []byte) []byte { b[4], b[5], b[6], b[7] = 0, 0, 0, 0; return b }), ErrBadVote},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := DecodeVote(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeVote(%x) = %v, %v; want %v", tt.b, v, err, tt.want)
			}
			if v != (Vote{}) {
				t.Fatalf("DecodeVote returned %v with an error", v)
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	for n := 0; n <= 15; n++ {
		for _, strict := range []bool{false, true} {
			q := Quorum(n, strict)
			want := n/2 + 1
			switch {
			case n <= 1:
				want = 1
			case n == 2 && !strict:
				want = 1
			}
			if q != want {
				t.Errorf("Quorum(%d, strict=%v) = %d, want %d", n, strict, q, want)
			}
			// Two disjoint quorums must not fit, except the documented
			// non-strict two-site case.
			if n >= 1 && 2*q <= n && !(n == 2 && !strict) {
				t.Errorf("Quorum(%d, strict=%v) = %d: two disjoint quorums fit", n, strict, q)
			}
		}
	}
	// Spot values a reader can check by eye.
	for _, c := range []struct {
		n      int
		strict bool
		q      int
	}{{1, false, 1}, {2, false, 1}, {2, true, 2}, {3, false, 2}, {4, false, 3}, {5, true, 3}, {7, false, 4}, {15, false, 8}} {
		if got := Quorum(c.n, c.strict); got != c.q {
			t.Errorf("Quorum(%d, %v) = %d, want %d", c.n, c.strict, got, c.q)
		}
	}
}
