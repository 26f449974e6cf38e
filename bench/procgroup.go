package main

import (
	"context"
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// openProcGroup opens a group of n boards laid out as a chassis runs them:
// one process per board. Board 1, the master, runs in this process (as a
// firmware process embeds it, with its writers); boards 2..n are `boardd run`
// processes in their namespaces. It returns once every replica has acked
// the master's log end. The caller closes both.
func (s *suite) openProcGroup(ctx context.Context, n int, name string, p board.AckPolicy) (*group, *cluster, error) {
	if n > len(s.chassis.Boards) {
		return nil, nil, fmt.Errorf("group of %d boards on a chassis of %d", n, len(s.chassis.Boards))
	}
	if err := s.isolate(n); err != nil {
		return nil, nil, err
	}
	c, err := s.buildCluster(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	peers := map[uint16]string{}
	for _, rb := range s.chassis.Boards[:n] {
		peers[rb.Site] = ""
	}
	for _, rb := range s.chassis.Boards[1:n] {
		if err := c.start(c.newProc(rb, name, s.chassis.Boards[:n], "-ack", policyName(p))); err != nil {
			c.close()
			return nil, nil, err
		}
	}
	rb := s.chassis.Boards[0]
	// Priority above the replicas' 100: after an election on a loaded
	// machine moved mastership away, board 1 wins it back once equally
	// current (group.reclaim).
	cfg := board.Config{Site: rb.Site, Group: "bench-" + name, Peers: peers, Priority: 200, Transport: board.RawTransport(rb.Iface),
		PoolSize: 256 << 20, LogSize: 32 << 20, CheckpointKiB: 256, AckPolicy: p}
	var m *board.Board
	if err := rb.Do(func() (err error) { m, err = board.Open(cfg); return err }); err != nil {
		c.close()
		return nil, nil, fmt.Errorf("opening board %d: %w", rb.Site, err)
	}
	g := &group{boards: []*board.Board{m}}
	g.reclaim = func(ctx context.Context) *board.Board { return reclaimMaster(ctx, m, c) }
	fail := func(err error) (*group, *cluster, error) {
		g.close()
		c.close()
		return nil, nil, err
	}
	if err := m.Start(ctx, board.StartMaster); err != nil {
		return fail(fmt.Errorf("starting board %d: %w", rb.Site, err))
	}
	caughtUp := func() bool {
		st := m.Stat()
		if st.Role != board.RoleMaster {
			return false
		}
		up := 0
		for _, ss := range st.Sites {
			if ss.AckedLSN > 0 && ss.LagBytes == 0 {
				up++
			}
		}
		return up == n-1
	}
	// A first commit gives the replicas a log end to ack.
	if _, err := m.Update(ctx, func(tx *board.Tx) error { return tx.Bucket("bench").Put([]byte("start"), nil) }); err != nil {
		return fail(fmt.Errorf("first commit on board %d: %w", rb.Site, err))
	}
	if err := waitFor(ctx, 30*time.Second, "every replica caught up", caughtUp); err != nil {
		return fail(fmt.Errorf("%v; board logs: %s", err, c.tail()))
	}
	return g, c, nil
}

// reclaimMaster gives mastership back to m, the in-process board, after an
// election moved it to a boardd replica: the replica master steps down and
// the group elects again, which m (priority 200 against 100) wins once it
// is as current. It returns m as master, or nil within 5 s.
func reclaimMaster(ctx context.Context, m *board.Board, c *cluster) *board.Board {
	deadline := time.Now().Add(5 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if m.IsMaster() {
			return m
		}
		if p := c.bySite(m.Master()); p != nil {
			_ = c.stepDown(p) // refused or lost: look again
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = m.WaitMaster(wctx)
		cancel()
		if !m.IsMaster() {
			time.Sleep(20 * time.Millisecond) // pacing the retries, not synchronisation
		}
	}
	if m.IsMaster() {
		return m
	}
	return nil
}
