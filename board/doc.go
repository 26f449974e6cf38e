// Package board is boardha's public API: one board's replicated, fully
// in-memory environment and the runtime that keeps it in step with the other
// boards of its group over the backplane.
//
//	b, err := board.Open(board.Config{Site: 3, Group: "fib", Priority: 100,
//	    Peers: map[uint16]string{1: "", 2: "", 3: ""}, Transport: board.RawTransport("bp0")})
//	err = b.Start(ctx, board.StartClient)
//	c, err := b.Update(ctx, func(tx *board.Tx) error {   // master only
//	    return tx.Bucket("routes").Put(k, v) })
//	c, err = b.Apply(ctx, board.Put("routes", k, v))     // any board: forwarded
//	err = b.View(func(tx *board.Tx) error { v := tx.Bucket("routes").Get(k); ... })
//	for ev := range b.Events() { ... }
//
// One mutex per Board guards the replication state machine (rep.Node), and
// the goroutine that has the work holds it, in the etcd-raft pattern:
// received message batches are stepped in, a ticker ticks it, local commits
// are reported to it; then its Ready is carried out (messages sent, records
// applied, rollbacks and internal init performed on the inmem environment,
// checkpoints taken, commit waiters released, events delivered) and
// acknowledged with Advance. Writes run in group-commit batches: while one
// commit waits for its acks, the writes that arrive meanwhile gather and go
// out as one transaction and one LOG message. The ticker's goroutine never
// waits for the mutex: while it is held, a master's loop sends heartbeats for
// it (rep.Node.KeepAlive), so a thread descheduled while holding it does
// not make a live master look dead.
//
// Every blocking call takes a context; errors wrap the sentinels below
// (errors.Is). Reads never block on replication: View reads this board's
// latest applied state, ViewLeased reads authoritatively on a master holding
// leases from a majority, and Attach lets other processes on the same board
// read the shared-memory region in place.
package board
