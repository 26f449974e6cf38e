package sim

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// runNet pushes a fixed traffic pattern through a faulty network and returns
// the trace hash of the deliveries.
func runNet(seed uint64) (uint64, *network) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	q := &queue{}
	nw := newNetwork(5, rng, q, NetFaults{Drop: 0.2, Dup: 0.1, DelayMin: time.Millisecond, DelayMax: 20 * time.Millisecond})
	tr := newTracer()
	inA := []bool{false, true, true, false, false, false}
	for i := 0; i < 400; i++ {
		now := time.Duration(i) * time.Millisecond
		if i == 100 {
			nw.split(inA, i%2 == 0)
		}
		if i == 250 {
			nw.healAll()
		}
		from := uint16(1 + i%5)
		to := uint16(1 + (i*7)%5)
		if i%9 == 0 {
			to = Broadcast
		}
		nw.send(now, from, to, uint8(i%13), []byte{byte(i), byte(i >> 8)})
	}
	for q.Len() > 0 {
		e := q.pop()
		tr.add(step{at: e.at, kind: e.kind, site: e.site, from: e.msg.from, typ: e.msg.typ, size: len(e.msg.payload)})
	}
	return tr.hash, nw
}

func TestNetworkDeterministic(t *testing.T) {
	h1, n1 := runNet(42)
	h2, _ := runNet(42)
	h3, _ := runNet(43)
	if h1 != h2 {
		t.Fatalf("same seed gave trace hashes %x and %x", h1, h2)
	}
	if h1 == h3 {
		t.Fatalf("seeds 42 and 43 gave the same trace hash %x: faults do not depend on the seed", h1)
	}
	if n1.dropped == 0 || n1.duplicated == 0 || n1.blockedCount == 0 {
		t.Fatalf("faults not exercised: dropped %d duplicated %d blocked %d", n1.dropped, n1.duplicated, n1.blockedCount)
	}
}

func TestQueueOrder(t *testing.T) {
	q := &queue{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		q.push(event{at: time.Duration(rng.IntN(50)), site: uint16(i)})
	}
	var last event
	for i := 0; q.Len() > 0; i++ {
		e := q.pop()
		if i > 0 && (e.at < last.at || (e.at == last.at && e.seq < last.seq)) {
			t.Fatalf("event %d (at %v seq %d) popped after (at %v seq %d)", i, e.at, e.seq, last.at, last.seq)
		}
		last = e
	}
}

func TestSplitOneWay(t *testing.T) {
	nw := newNetwork(3, rand.New(rand.NewPCG(1, 1)), &queue{}, NetFaults{})
	nw.split([]bool{false, true, false, false}, true)
	if nw.canReach(1, 2) || !nw.canReach(2, 1) || !nw.canReach(2, 3) {
		t.Fatalf("one-way split of {1}: 1->2 %v 2->1 %v 2->3 %v", nw.canReach(1, 2), nw.canReach(2, 1), nw.canReach(2, 3))
	}
	nw.healAll()
	if nw.partitioned() {
		t.Fatal("healAll left a cut direction")
	}
}

// plantedHistory is a clean 3-site history: one Perm put, one leased read
// that sees it, everyone converged on the same commit.
func plantedHistory() *History {
	tree := newCommitTree()
	root := CommitID{LSN: 0, Chain: 0}
	c1 := CommitID{LSN: 100, Chain: 0xaa}
	tree.addRoot(root, 1)
	if err := tree.add(c1, root, 1, 1, 7, true); err != nil {
		panic(err)
	}
	data := map[string]string{"k1": "v1"}
	return &History{
		Sites: 3, Guarantee: true, Leases: true, Converged: true, tree: tree,
		Ops: []Op{
			{ID: 0, Kind: OpPut, Key: "k1", Value: "v1", Site: 1, Gen: 1, Commit: c1, Call: 1, Return: 4, Outcome: Perm},
			{ID: 1, Kind: OpGet, Key: "k1", Value: "v1", Found: true, Site: 1, Call: 5, Return: 6, Outcome: Done},
		},
		Final: []FinalSite{
			{Site: 1, Alive: true, Master: true, Last: c1, Hash: 7, Data: data},
			{Site: 2, Alive: true, Last: c1, Hash: 7, Data: data},
			{Site: 3, Alive: true, Last: c1, Hash: 7, Data: data},
		},
	}
}

func TestCheckersCleanHistory(t *testing.T) {
	if v := Check(plantedHistory()); len(v) != 0 {
		t.Fatalf("clean history reported: %v", v)
	}
}

func TestCheckersCatchPlantedViolations(t *testing.T) {
	cases := []struct {
		name  string
		plant func(h *History)
		want  string
	}{
		{"perm write lost on a replica", func(h *History) {
			h.Final[2].Data = map[string]string{}
		}, "perm-lost"},
		{"perm commit not in final history", func(h *History) {
			other := CommitID{LSN: 100, Chain: 0xbb}
			_ = h.tree.add(other, CommitID{}, 2, 2, 9, true)
			for i := range h.Final {
				h.Final[i].Last = other
			}
		}, "perm-lost"},
		{"perm rolled back on a majority", func(h *History) {
			h.Rollbacks = []Rollback{{Site: 2, Op: 0, At: 1}, {Site: 3, Op: 0, At: 1}}
			h.Ops[0].ReturnAt = 0
		}, "perm-rolled-back"},
		{"two masters at the end", func(h *History) { h.Final[1].Master = true }, "2 masters"},
		{"diverged content", func(h *History) { h.Final[2].Hash = 8 }, "content hash"},
		{"replica at an unknown commit", func(h *History) {
			h.Final[1].Last = CommitID{LSN: 100, Chain: 0xcc}
		}, "no master made"},
		{"stale leased read", func(h *History) {
			h.Ops[1].Found = false
			h.Ops[1].Value = ""
		}, "linearizability"},
		{"read of a value never written", func(h *History) { h.Ops[1].Value = "v9" }, "linearizability"},
		{"invariant failed during the run", func(h *History) {
			h.Violations = append(h.Violations, "lease: two masters")
		}, "lease: two masters"},
		{"did not settle", func(h *History) { h.Converged = false }, "did not settle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := plantedHistory()
			c.plant(h)
			v := Check(h)
			if !strings.Contains(strings.Join(v, "\n"), c.want) {
				t.Fatalf("planted %q: want a violation mentioning %q, got %v", c.name, c.want, v)
			}
		})
	}
}

func TestCheckersWeakConfigTolerateLoss(t *testing.T) {
	h := plantedHistory()
	h.Guarantee = false
	h.Leases = false
	for i := range h.Final {
		h.Final[i].Data = map[string]string{}
	}
	if v := Check(h); len(v) != 0 {
		t.Fatalf("a lost Perm write under a non-guarantee policy must not be a violation, got %v", v)
	}
}

func TestCommitTreeAncestry(t *testing.T) {
	tr := newCommitTree()
	a := CommitID{0, 0}
	b := CommitID{10, 1}
	c := CommitID{20, 2}
	d := CommitID{20, 3}
	tr.addRoot(a, 0)
	for _, e := range []struct{ id, p CommitID }{{b, a}, {c, b}, {d, b}} {
		if err := tr.add(e.id, e.p, 1, 1, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if !tr.ancestor(a, c) || !tr.ancestor(b, d) || tr.ancestor(c, d) || tr.ancestor(d, b) {
		t.Fatal("ancestry wrong")
	}
	if err := tr.add(c, d, 1, 2, 0, false); err == nil {
		t.Fatal("same commit id with another parent must be reported")
	}
}
