// Package rig builds a whole chassis of boards on one Linux machine out of
// network namespaces, so transports and replication can be tested over real
// kernel networking (veth, a Linux bridge, AF_PACKET, UDP multicast) without
// hardware.
//
// # What a chassis is made of
//
// New (or NewForTest) with Options{Boards: N} creates, all named with a short
// unique chassis id such as "bh3f2a" (Options.Prefix, default "bh", plus four
// hex digits reserved through a marker file so that parallel tests and
// processes never collide):
//
//   - a backplane namespace "<id>-bp" holding a Linux bridge "<id>-br" with STP
//     off, forward delay 0 and multicast snooping off, so every frame floods
//     from the first instant;
//   - per board, a namespace "<id>-b<site>" holding "bp0", one end of a veth
//     pair whose other end, "<id>-v<site>" (Board.Bridgeside), is a port of the
//     bridge in the backplane namespace;
//   - in each board namespace: loopback up, bp0 up with the MAC
//     02:b5:<id>:<site> and the address 10.208.<c>.<site>/24 (c derived from the
//     id), a route 224.0.0.0/4 dev bp0 for the UDP transport's multicast, and
//     IPv6 disabled so no DAD, router solicitation or MLD frame disturbs the
//     counters of tests;
//   - a marker file /run/boardha-rig/<id> holding the creating pid and its
//     start time.
//
// Board i (0-based, Board.Index) has Site i+1. Nothing is created in the
// namespace of the caller: every link lives in a namespace the rig made, and
// the addresses 10.208.x.y exist only there.
//
// Namespaces are named namespaces under /run/netns, so `ip netns exec <ns>`,
// tcpdump and other external tools work on them while a test runs.
//
// # Running code inside a board
//
// Board.Do runs a function on a locked OS thread switched into the board's
// namespace; sockets it opens stay in that namespace after Do returns and can
// be used from any goroutine. Goroutines started by the function run in the
// caller's namespace, not the board's. Board.Command returns an *exec.Cmd
// running `ip netns exec <ns> name args...`: the caller owns that process and
// must wait for or kill it; a process still running keeps the namespace alive
// (though unnamed) after Close.
//
// # Faults
//
// Board.LinkDown and LinkUp take the bridge-side veth down and up: the board
// keeps its state but neither sends nor receives on the backplane.
// Chassis.Partition splits the boards into groups that hear only each other
// (each group's ports move to a bridge of its own, "<id>-p<g>"); Heal joins
// them again.
//
// An Injector is an XDP program (written with cilium/ebpf/asm, no compiler
// needed) attached in generic mode that drops backplane frames: EtherType
// 0x88B5 frames of the raw transport and, with InjectConfig.UDPPort, UDP
// datagrams of the UDP transport. It drops a random fraction (changeable
// while it runs) and/or every frame whose header "from" names a given site,
// and counts frames seen and dropped. Direction FromBoard attaches to the
// bridge-side veth (frames the board sends; InjectLoss), ToBoard to bp0
// inside the board (frames it receives; InjectDropFromSite, which so makes
// an asymmetric partition). One injector per board and direction.
//
// Available reports whether this machine can build a chassis at all, so a
// program can fall back to loopback without namespaces.
//
// # Cleanup
//
// Chassis.Close, which NewForTest registers with t.Cleanup (so it also runs
// when a test fails or panics), detaches injectors, deletes every board
// namespace and the backplane namespace (deleting a namespace destroys the
// veths, bridges and addresses inside it) and removes the marker file. Close
// is idempotent. Processes started with Command are not killed: the caller
// started them and must end them.
//
// A crashed test run cannot clean up; SweepStale, which New calls for its
// prefix, deletes namespaces of the rig's naming scheme whose marker names a
// dead process (or that have no marker at all) and removes such markers.
//
// Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the ip
// binary of iproute2; tests call RequireRoot to skip with a clear reason
// where that is missing.
package rig
