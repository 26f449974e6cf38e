// Package hwtest proves the guarantees of the design (docs/ARCHITECTURE.md,
// "Guarantees") on real processes, real sockets and real faults: every
// scenario builds boardd, starts a chassis of network namespaces with
// hwtest/rig, runs `boardd run` on 2 to 5 boards over the raw transport and
// injects faults (SIGKILL, reboot with empty memory, link down, XDP frame
// loss, malformed frames, and their combinations: a master restarted empty
// between a stale replica and a holder of the Perm writes) while a writer
// records every commit. One scenario also reads a replica's tables from its
// shared memory, as a forwarding agent does (board.Attach), across that
// board's reboot: the reader must learn the region is gone and, attached
// again, follow the group.
//
// At the end of each scenario the recorded history is judged against what
// the boards hold:
//
//   - no commit that returned Perm=true is lost: its key is on the final
//     master and on every replica with its value (guarantee 1);
//   - nothing appears that was never written (no phantom keys or values);
//   - every replica holds exactly the master's content once faults are
//     healed (guarantee 4), compared by full scan, and by content hash when
//     the daemon publishes one;
//   - with leases on, no two boards report being master with valid leases
//     in overlapping stat samples, and a partitioned master's last leased
//     read precedes the new master's election (guarantee 3).
//
// Each scenario prints one line: faults injected, commits (perm / not perm /
// failed), losses and the longest failover. The default run keeps to a few
// minutes on a 2-core machine; -hwtest.soak runs the long versions (20 master
// kills, a 200 MB group reboot).
//
// The scenarios need root (network namespaces, AF_PACKET, XDP) and skip with
// the reason otherwise; the harness they are built from (socket client,
// process supervisor, history recorder, checkers) lives in
// hwtest/internal/harness and is unit-tested without root.
package hwtest
