package elect

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzDecodeVote(f *testing.F) {
	f.Add(AppendVote(nil, Vote{Site: 1, Egen: 1, LastGen: 1, LSN: 64, Priority: 100, Tiebreaker: 42}))
	f.Add(AppendVote(nil, Vote{Site: 0xFFFE, Egen: 0xFFFFFFFF, LSN: 1 << 63}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(bytes.Repeat([]byte{0xff}, VoteSize))
	f.Add(append(AppendVote(nil, Vote{Site: 2, Egen: 3}), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVote(b)
		if err != nil {
			if !errors.Is(err, ErrShortVote) && !errors.Is(err, ErrLongVote) &&
				!errors.Is(err, ErrVoteVersion) && !errors.Is(err, ErrBadVote) {
				t.Fatalf("DecodeVote(%x): unexpected error %v", b, err)
			}
			if v != (Vote{}) {
				t.Fatalf("DecodeVote(%x) returned %v with error %v", b, v, err)
			}
			return
		}
		// Accepted payloads are canonical: re-encoding gives the input back.
		if re := AppendVote(nil, v); !bytes.Equal(re, b) {
			t.Fatalf("DecodeVote(%x) = %v, re-encodes to %x", b, v, re)
		}
		// Whatever arrives, feeding it to an election must not panic.
		e := New(Config{Self: 1, Priority: 1})
		e.Start(0, 1, 1, 3, 0)
		e.StepVote1(1, v)
		e.StepVote2Vote(2, v)
		e.StepVote2(3, v.Site, v.Egen)
		e.Tick(1 << 40)
		_ = e.Outbox()
	})
}
