package rep

// AckSite is one other site as the ack policy sees it.
type AckSite struct {
	Acked     uint64 // highest commit LSN the site applied (all earlier too)
	Electable bool   // priority > 0
}

// PolicyLSN returns the highest commit LSN that policy p makes permanent,
// given the master's last commit LSN and the acks of the other sites that
// count (caught-up members). Group sizes too small for a policy degrade to
// what the group can give: a lone master's commits are permanent at once,
// ONE_PEER without electable peers accepts any site. It is a pure function so
// the arithmetic is testable for every policy and group size.
func PolicyLSN(p AckPolicy, masterElectable bool, sites []AckSite, last uint64) uint64 {
	var buf [maxSites]uint64
	all := buf[:0]
	var peersBuf [maxSites]uint64
	peers := peersBuf[:0]
	for i := range sites {
		if len(all) == len(buf) {
			break
		}
		a := min(sites[i].Acked, last)
		all = append(all, a)
		if sites[i].Electable {
			peers = append(peers, a)
		}
	}
	if p > AckAll {
		return 0
	}
	k, peersOnly := policyNeed(p, masterElectable, len(peers), len(all))
	set := all
	if peersOnly && len(peers) > 0 {
		set = peers
	}
	if k <= 0 || len(set) == 0 {
		return last // nobody whose ack the policy could wait for
	}
	if len(set) < k {
		return 0
	}
	return kthLargest(set, k)
}

// policyNeed says how many acks policy p waits for (k; 0: none) and whether
// only electable peers' acks count, given how many caught-up sites are
// electable peers and how many there are in all.
func policyNeed(p AckPolicy, masterElectable bool, peers, all int) (k int, peersOnly bool) {
	switch p {
	case AckOne:
		return 1, false
	case AckOnePeer:
		return 1, peers > 0
	case AckQuorum:
		e := peers
		if masterElectable {
			e++
		}
		if e == 0 {
			return 0, true
		}
		k = e/2 + 1
		if masterElectable {
			k--
		}
		return k, true
	case AckAllPeers:
		return peers, true
	case AckAll:
		return all, false
	}
	return 0, false // AckNone
}

// kthLargest returns the k-th largest value (1-based) of s, reordering s.
// Groups are small, so an insertion sort beats anything cleverer.
func kthLargest(s []uint64, k int) uint64 {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] > s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[k-1]
}
