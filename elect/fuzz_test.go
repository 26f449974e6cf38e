package elect

import (
	"bytes"
	"errors"
	"testing"
	"time"
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

// FuzzElectionSchedule lets the fuzzer choose the schedule of a small group:
// which message is delivered, duplicated or lost, when timers fire, when
// sites start, the sites' logs and priorities. Whatever the schedule, the
// safety checks of the simulator must hold.
func FuzzElectionSchedule(f *testing.F) {
	f.Add([]byte{3, 1, 2, 3, 4, 5, 6, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3})
	f.Add([]byte{5, 9, 9, 0, 1, 7, 3, 200, 17, 33, 2, 6, 10, 14, 18, 22, 26, 30, 34})
	f.Add([]byte{2, 0, 0, 1, 1, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 2 {
			return
		}
		n := 2 + int(b[0])%4
		b = b[1:]
		s := newSim(t, simOpt{seed: 1, strict: b[0]&1 == 1})
		b = b[1:]
		next := func() byte {
			if len(b) == 0 {
				return 0
			}
			c := b[0]
			b = b[1:]
			return c
		}
		for i := range n {
			c := next()
			st := s.add(uint16(i+1), uint32(c>>6), uint64(c>>3&7)*100, uint32(c&3))
			st.startAt = -1 // the schedule starts sites
			if c&4 != 0 {
				st.leaseEnd = 2 * time.Second
			}
		}
		for len(b) > 0 {
			c := next()
			arg := int(c >> 3)
			switch c & 7 {
			case 0, 1, 2: // deliver a queued message
				if len(s.queue) > 0 {
					i := arg % len(s.queue)
					m := s.queue[i]
					s.queue = append(s.queue[:i], s.queue[i+1:]...)
					s.deliver(m)
				}
			case 3: // lose one
				if len(s.queue) > 0 {
					i := arg % len(s.queue)
					s.queue = append(s.queue[:i], s.queue[i+1:]...)
				}
			case 4: // duplicate one
				if len(s.queue) > 0 {
					s.queue = append(s.queue, s.queue[arg%len(s.queue)])
				}
			case 5: // fire the earliest timer
				var who *simSite
				var at time.Duration
				for _, st := range s.sites {
					if d, ok := st.e.NextDeadline(); ok && (who == nil || d < at) {
						who, at = st, d
					}
				}
				if who != nil {
					s.now = max(s.now, at)
					who.e.Tick(s.now)
					s.drain(who)
				}
			case 6: // start a site
				if st := s.sites[arg%n]; !st.e.InProgress() && st.master == 0 {
					s.start(st)
				}
			case 7: // time passes
				s.now += time.Duration(arg) * 100 * time.Millisecond
			}
		}
		s.checkSafety()
	})
}
