package rep

import (
	"math/rand/v2"
	"testing"
)

// policyHolds restates each ack policy directly: does commit L have the acks?
func policyHolds(p AckPolicy, masterElectable bool, sites []AckSite, l uint64) bool {
	others, peers, cnt, peerCnt := len(sites), 0, 0, 0
	for _, s := range sites {
		if s.Electable {
			peers++
		}
		if s.Acked >= l {
			cnt++
			if s.Electable {
				peerCnt++
			}
		}
	}
	me := 0
	if masterElectable {
		me = 1
	}
	switch p {
	case AckNone:
		return true
	case AckOne:
		return others == 0 || cnt >= 1
	case AckOnePeer:
		if peers > 0 {
			return peerCnt >= 1
		}
		return others == 0 || cnt >= 1
	case AckQuorum:
		e := peers + me
		return e == 0 || 2*(peerCnt+me) > e
	case AckAllPeers:
		return peerCnt == peers
	case AckAll:
		return cnt == others
	}
	return false
}

func oraclePerm(p AckPolicy, masterElectable bool, sites []AckSite, last uint64) uint64 {
	best := uint64(0)
	cands := []uint64{last}
	for _, s := range sites {
		cands = append(cands, min(s.Acked, last))
	}
	for _, l := range cands {
		if l > best && policyHolds(p, masterElectable, sites, l) {
			best = l
		}
	}
	return best
}

func TestPolicyLSNGroupSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for size := 1; size <= 7; size++ {
		for p := AckNone; p <= AckAll; p++ {
			for trial := 0; trial < 400; trial++ {
				sites := make([]AckSite, size-1)
				for i := range sites {
					sites[i] = AckSite{Acked: uint64(rng.IntN(6)) * 100, Electable: rng.IntN(4) != 0}
				}
				me := rng.IntN(5) != 0
				last := uint64(rng.IntN(6)) * 100
				got := PolicyLSN(p, me, append([]AckSite(nil), sites...), last)
				want := oraclePerm(p, me, sites, last)
				if got != want {
					t.Fatalf("size %d %v masterElectable=%v sites=%+v last=%d: got %d want %d",
						size, p, me, sites, last, got, want)
				}
			}
		}
	}
}

func TestPolicyLSNExamples(t *testing.T) {
	e := func(a uint64) AckSite { return AckSite{Acked: a, Electable: true} }
	z := func(a uint64) AckSite { return AckSite{Acked: a} }
	cases := []struct {
		p     AckPolicy
		sites []AckSite
		want  uint64
	}{
		{AckNone, nil, 500},
		{AckOne, nil, 500}, // a lone master has nobody to wait for
		{AckOne, []AckSite{z(300), e(100)}, 300},
		{AckOnePeer, []AckSite{z(300), e(100)}, 100},
		{AckOnePeer, []AckSite{z(300)}, 300}, // no electable peer: any site
		// 5 electable sites: master + 2 peers make a majority.
		{AckQuorum, []AckSite{e(400), e(300), e(200), e(100)}, 300},
		// 3 electable (master + 2), plus a priority-0 site whose ack never counts.
		{AckQuorum, []AckSite{z(500), e(200), e(100)}, 200},
		// 2 electable sites: both needed.
		{AckQuorum, []AckSite{e(100)}, 100},
		{AckQuorum, []AckSite{e(0)}, 0},
		{AckAllPeers, []AckSite{z(0), e(200), e(300)}, 200},
		{AckAll, []AckSite{z(50), e(200), e(300)}, 50},
		{AckAll, []AckSite{e(900)}, 500}, // never beyond the master's own last commit
	}
	for _, tc := range cases {
		if got := PolicyLSN(tc.p, true, tc.sites, 500); got != tc.want {
			t.Errorf("%v %+v: got %d want %d", tc.p, tc.sites, got, tc.want)
		}
	}
}
