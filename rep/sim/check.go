package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// linearizabilityTimeout bounds porcupine; histories are partitioned per key
// and small, so hitting it means something pathological and is reported.
const linearizabilityTimeout = 20 * time.Second

// Check runs every checker over a finished run's history and returns the
// violations found (empty when the run upheld every guarantee it claims).
func Check(h *History) []string {
	var v []string
	v = append(v, h.Violations...)
	v = append(v, checkPermDurable(h)...)
	v = append(v, checkFinalPrefix(h)...)
	v = append(v, checkConverged(h)...)
	if h.Leases {
		v = append(v, checkLinearizable(h)...)
	}
	return v
}

func majority(n int) int { return n/2 + 1 }

// checkPermDurable: under a guarantee configuration, a write reported Perm
// is on every site at the end and was never rolled back on a majority.
func checkPermDurable(h *History) []string {
	if !h.Guarantee {
		return nil
	}
	var v []string
	// Keys some delete touched: a put of such a key may legitimately be gone
	// (the delete's own fate is unknown unless it was Perm itself).
	deleted := make(map[string]bool)
	for _, op := range h.Ops {
		if op.Kind == OpDelete && op.Commit.LSN != 0 {
			deleted[op.Key] = true
		}
	}
	// Judge the final master and the sites that reached its state; a site
	// that never caught up is a convergence failure (checkConverged), and
	// listing every Perm write it misses would bury the cause.
	var master *FinalSite
	for i := range h.Final {
		if h.Final[i].Alive && h.Final[i].Master {
			if master != nil {
				master = nil
				break
			}
			master = &h.Final[i]
		}
	}
	lines := lineSets{}
	judged := func(f *FinalSite) bool {
		return f.Alive && f.Data != nil && (master == nil || f == master || f.Last == master.Last)
	}
	for i, op := range h.Ops {
		if op.Outcome != Perm {
			continue
		}
		tag := ""
		if op.Amnesia {
			tag = " " + AmnesiaTag
		}
		for fi := range h.Final {
			f := &h.Final[fi]
			if !judged(f) {
				continue
			}
			got, ok := f.Data[op.Key]
			switch {
			case op.Kind == OpPut && !deleted[op.Key] && (!ok || got != op.Value):
				v = append(v, fmt.Sprintf("perm-lost: op %d put(%s,%s) at commit %v (master %d gen %d) returned Perm at %v, but site %d ends with %q present=%v%s",
					op.ID, op.Key, op.Value, op.Commit, op.Site, op.Gen, op.ReturnAt, f.Site, got, ok, tag))
			case op.Kind == OpDelete && ok:
				v = append(v, fmt.Sprintf("perm-lost: op %d del(%s) at commit %v returned Perm at %v, but site %d still has %q%s",
					op.ID, op.Key, op.Commit, op.ReturnAt, f.Site, got, tag))
			}
			if h.tree != nil && f.Last.LSN != 0 && h.tree.known(f.Last) && !lines.has(h.tree, f.Last, op.Commit) {
				v = append(v, fmt.Sprintf("perm-lost: op %d commit %v (Perm at %v) is not in site %d's final history (last commit %v)%s",
					op.ID, op.Commit, op.ReturnAt, f.Site, f.Last, tag))
			}
		}
		var sites []uint16
		for _, rb := range h.Rollbacks {
			if rb.Op == i && rb.At >= op.ReturnAt && !containsSite(sites, rb.Site) {
				sites = append(sites, rb.Site)
			}
		}
		if len(sites) >= majority(h.Sites) {
			v = append(v, fmt.Sprintf("perm-rolled-back: op %d %s(%s) commit %v returned Perm at %v, then was rolled back on sites %v (a majority of %d)%s",
				op.ID, op.Kind, op.Key, op.Commit, op.ReturnAt, sites, h.Sites, tag))
		}
	}
	return v
}

// lineSets caches, per final commit, the set of commits on its line, so
// that checking thousands of Perm writes does not walk the tree each time.
type lineSets map[CommitID]map[CommitID]bool

func (l lineSets) has(t *commitTree, last, c CommitID) bool {
	set, ok := l[last]
	if !ok {
		set = make(map[CommitID]bool)
		for b := last; ; {
			set[b] = true
			n, ok := t.nodes[b]
			if !ok || !n.hasParent {
				break
			}
			b = n.parent
		}
		l[last] = set
	}
	return set[c]
}

func containsSite(s []uint16, x uint16) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// checkFinalPrefix: every site's final state is a commit some master made,
// on the final master's line.
func checkFinalPrefix(h *History) []string {
	if h.tree == nil {
		return nil
	}
	var master *FinalSite
	for i := range h.Final {
		if h.Final[i].Master {
			master = &h.Final[i]
		}
	}
	var v []string
	for _, f := range h.Final {
		if !f.Alive {
			continue
		}
		if !h.tree.known(f.Last) {
			v = append(v, fmt.Sprintf("prefix: site %d ends at commit %v that no master made", f.Site, f.Last))
			continue
		}
		if master != nil && !h.tree.ancestor(f.Last, master.Last) {
			v = append(v, fmt.Sprintf("prefix: site %d ends at commit %v, not a prefix of master %d's history (last %v)",
				f.Site, f.Last, master.Site, master.Last))
		}
	}
	return v
}

// checkConverged: after healing, one master and every board with the same
// content.
func checkConverged(h *History) []string {
	var v []string
	var masters []uint16
	for _, f := range h.Final {
		if f.Alive && f.Master {
			masters = append(masters, f.Site)
		}
	}
	if len(masters) != 1 {
		v = append(v, fmt.Sprintf("converge: %d masters after healing and quiescing (%v), want exactly 1", len(masters), masters))
	}
	var ref *FinalSite
	for i := range h.Final {
		f := &h.Final[i]
		if !f.Alive {
			continue
		}
		if ref == nil {
			ref = f
			continue
		}
		if f.Hash != ref.Hash || f.Last != ref.Last {
			tag := ""
			for _, x := range []*FinalSite{f, ref} {
				switch {
				case strings.Contains(x.LastErr, "pool full"):
					tag = fmt.Sprintf(" %s site %d: %s", PoolFullTag, x.Site, x.LastErr)
				case strings.Contains(x.LastErr, "log full"):
					tag = fmt.Sprintf(" %s site %d: %s", LogFullTag, x.Site, x.LastErr)
				}
			}
			v = append(v, fmt.Sprintf("converge: site %d has content hash %016x at commit %v, site %d has %016x at %v%s",
				f.Site, f.Hash, f.Last, ref.Site, ref.Hash, ref.Last, tag))
		}
	}
	if !h.Converged && len(v) == 0 {
		v = append(v, "converge: the group did not settle within the quiesce period")
	}
	return v
}

// checkLinearizable runs porcupine over the writes and the leased reads.
func checkLinearizable(h *History) []string {
	ops := make([]porcupine.Operation, 0, len(h.Ops))
	for _, op := range h.Ops {
		if op.Kind != OpGet && op.Commit.LSN == 0 {
			continue // rejected before committing: no effect
		}
		ret := op.Return
		if op.Kind != OpGet && op.Outcome != Perm {
			ret = never // may or may not have taken effect, at any time after the call
		}
		ops = append(ops, porcupine.Operation{
			ClientId: op.ID,
			Input:    kvInput{kind: op.Kind, key: op.Key, value: op.Value},
			Output:   kvOutput{found: op.Found, value: op.Value},
			Call:     op.Call,
			Return:   ret,
		})
	}
	res := porcupine.CheckOperationsTimeout(kvModel(), ops, linearizabilityTimeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return []string{"linearizability: porcupine timed out; history too large to decide"}
	}
	// Name the keys whose histories could not be linearized.
	msg := "linearizability: leased reads and writes are not linearizable"
	bad := illegalKeys(ops)
	if len(bad) > 0 {
		msg += fmt.Sprintf("; offending keys: %v", bad)
		for i, k := range bad {
			if i == 5 {
				msg += fmt.Sprintf("\n    ... %d more keys", len(bad)-5)
				break
			}
			msg += "\n    " + describeKey(h, k)
		}
		// Reads that saw a Perm write which a site's memory loss then
		// destroyed are a consequence of that loss, not a lease failure.
		explained := true
		for _, k := range bad {
			if !amnesiaKey(h, k) {
				explained = false
			}
		}
		if explained {
			msg += " " + AmnesiaTag
		}
	}
	return []string{msg}
}

// illegalKeys rechecks each key on its own to name the offenders.
func illegalKeys(ops []porcupine.Operation) []string {
	var bad []string
	m := kvModel()
	for _, part := range m.Partition(ops) {
		if !porcupine.CheckOperations(m, part) {
			bad = append(bad, part[0].Input.(kvInput).key)
		}
	}
	return bad
}

// amnesiaKey reports whether a write to key was lost to a site's memory loss.
func amnesiaKey(h *History, key string) bool {
	for _, op := range h.Ops {
		if op.Key == key && op.Kind != OpGet && op.Amnesia {
			return true
		}
	}
	return false
}

func describeKey(h *History, key string) string {
	s := "key " + key + ":"
	for _, op := range h.Ops {
		if op.Key != key {
			continue
		}
		switch op.Kind {
		case OpGet:
			s += fmt.Sprintf(" [op %d get@site%d %v -> found=%v %q]", op.ID, op.Site, op.CallAt, op.Found, op.Value)
		default:
			s += fmt.Sprintf(" [op %d %s@site%d gen %d commit %v called %v %s at %v]", op.ID, op.Kind, op.Site, op.Gen, op.Commit, op.CallAt, op.Outcome, op.ReturnAt)
		}
	}
	return s
}
