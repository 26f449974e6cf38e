// Package sim is the deterministic simulator that proves rep's replication
// guarantees. N sites, each a rep.Node over a real private inmem environment,
// run over a simulated backplane with drops, duplicates, reordering, delays,
// one-way and two-way partitions, crashes that lose all memory, restarts,
// frozen runtimes (a master's process speaking for it with KeepAlive),
// per-site clock rates within the configured skew, and a client workload of
// puts, deletes and leased reads. Everything is driven from one seed: virtual
// time, one event queue, no goroutines, no wall clock, so a failing seed
// replays exactly with
//
//	go test ./rep/sim/ -run 'TestSeeds$' -sim.seed=S -v [-sim.fulltrace]
//
// -sim.seeds=N sets the sweep size (default 500), -sim.soak runs
// 5000, -sim.first=F moves the window, -sim.strict=false tolerates (and
// lists) losses explained by a site losing its memory and replicas stalled
// on a full pool or log; by default they fail (none in seeds 1-10000 since
// 2026-12-05: the sweep had tolerated 10 such losses in 1-5000 before).
//
// After each run the checkers verify: Perm writes are never lost under QUORUM
// or stronger with majority elections; every replica's history is a prefix of
// a master's (commit chains form a tree, and a site may only move along it);
// no two masters hold valid leases at once and leased reads are linearizable
// (porcupine); after healing every board converges to the same content.
package sim
