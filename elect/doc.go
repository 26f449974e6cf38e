// Package elect is the election state machine of boardha, after the
// Berkeley DB HA election (the seeds' "Electing a master"). It is pure: no
// I/O, no clock reads, no goroutines. The caller (rep) passes the current
// monotonic time with every input, sends what Outbox returns, feeds received
// VOTE1/VOTE2 messages to StepVote1/StepVote2, and calls Tick at
// NextDeadline. Tiebreakers and back-off jitter come from a PRNG seeded by
// Config.Seed, so a simulation replays exactly.
//
// Phases, and who does what:
//
//	0 short circuit  rep: a master told to elect re-announces itself (NEWMASTER)
//	                 and never calls Start; it answers VOTE1s the same way.
//	1 init           Start: expected electable voters, fresh tally, egen chosen
//	                 above every egen seen (or joining a newer one already heard).
//	2 lease wait     PhaseLeaseWait until leaseWaitUntil: a site that granted a
//	                 master lease must not vote before it expires. Votes heard
//	                 meanwhile are tallied; a newer egen is adopted.
//	3 vote           PhaseVote1: broadcast VOTE1 (site, egen, last record's gen,
//	                 LSN, priority, tiebreaker), tally VOTE1s of this egen.
//	4 pick           PhaseVote2: once every expected electable site voted, or at
//	                 the vote timeout, send VOTE2 to the best electable site
//	                 heard (Vote.Beats) if its log is at least as current as
//	                 the floor (SetFloor; ignored once every electable site
//	                 voted). The designee that voted for itself and
//	                 collects VOTE2s from a quorum of electable sites (its own
//	                 included) wins: Won reports the egen; rep then becomes
//	                 master (gen+1, NEWMASTER) and calls Cancel, as does every
//	                 site that learns of a master.
//
// A VOTE1 or VOTE2 of a higher egen makes the site join that election at
// once (phase 3 in that egen); this is how HOLDELECTION spreads. While idle,
// such a vote is remembered and the next Start joins its election: rep
// should call Start when it hears a VOTE1 and has no master, then pass the
// vote to StepVote1 (or the other way round; both work). Lower egens are
// ignored. Without a winner by the end of phase 4's wait the site starts a
// new attempt with a higher egen; each attempt's timeout doubles up to
// Config.MaxBackoff, plus jitter.
//
// Electable sites (priority > 0) are the only ones counted for the expected
// voters and for quorums; see Election for why and for the other choices
// this package makes. The VOTE1/VOTE2 payload codec is AppendVote and
// DecodeVote.
package elect
