package rep

import (
	"testing"
	"time"
)

// The replica's steady state — a LOG arrives, whole transactions go to the
// driver, the ack goes back — allocates nothing in the node.
func TestReplicaSteadyStateAllocs(t *testing.T) {
	const n = 600
	f := newFeed(1, 1)
	s := joined(t, f, 1, nil)
	f.add(n)
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = f.log(s.now, i+1, i+2)
	}
	s.st.full = append(make([]byte, 0, 1<<20), s.st.full...)
	s.st.commits = append(make([]CommitInfo, 0, 2*n), s.st.commits...)
	i := 0
	step := func() {
		_ = s.n.Step(s.now, msgs[i])
		i++
		for k := 0; k < 3; k++ {
			rd := s.n.Ready()
			if len(rd.Apply) > 0 {
				_ = s.st.applyEncoded(rd.Apply)
			}
			s.n.Advance(rd)
		}
	}
	for k := 0; k < 50; k++ {
		step()
	}
	if a := testing.AllocsPerRun(500, step); a > 0 {
		t.Fatalf("%.2f allocations per LOG on a replica", a)
	}
	if s.st.EndLSN() != f.cis[i].End {
		t.Fatal("replica did not keep up")
	}
}

// The master's steady state — a commit is tracked, shipped, acked and
// released — allocates nothing in the node.
func TestMasterSteadyStateAllocs(t *testing.T) {
	s := startMaster(t, func(c *Config) { c.Peers = []uint16{2} })
	const n = 600
	s.st.full = append(make([]byte, 0, 1<<20), s.st.full...)
	var cis []CommitInfo
	for i := 0; i < n; i++ {
		cis = append(cis, s.st.commitTxn("k", "v"))
	}
	acks := make([]Message, n)
	for i := range acks {
		acks[i] = ackFrom(2, 1, cis[i].LSN, 0)
	}
	i := 0
	step := func() {
		s.now += time.Millisecond
		s.n.Committed(s.now, cis[i])
		rd := s.n.Ready()
		s.n.Advance(rd)
		_ = s.n.Step(s.now, acks[i])
		rd = s.n.Ready()
		s.n.Advance(rd)
		s.n.Tick(s.now)
		i++
	}
	for k := 0; k < 50; k++ {
		step()
	}
	if a := testing.AllocsPerRun(500, step); a > 0 {
		t.Fatalf("%.2f allocations per commit on the master", a)
	}
	if s.n.ms.perm != cis[i-1].LSN {
		t.Fatal("perm did not follow the acks")
	}
}

func BenchmarkReplicaApplyPath(b *testing.B) {
	t := &testing.T{}
	f := newFeed(1, 1)
	s := joined(t, f, 1, nil)
	f.add(b.N)
	msgs := make([]Message, b.N)
	for i := range msgs {
		msgs[i] = f.log(0, i+1, i+2)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = s.n.Step(s.now, msgs[i])
		for k := 0; k < 2; k++ {
			rd := s.n.Ready()
			if len(rd.Apply) > 0 {
				_ = s.st.applyEncoded(rd.Apply)
			}
			s.n.Advance(rd)
		}
	}
}
