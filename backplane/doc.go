// Package backplane moves replication messages between the boards of one
// chassis.
//
// Three transports implement Transport with the same semantics:
//
//   - raw (NewRaw): AF_PACKET frames with EtherType 0x88B5 on the backplane
//     interface, sent to the group MAC (03:b5 + group id) for multicast and
//     to a site's MAC, learned from its frames, for unicast (the group MAC
//     until learned). An eBPF socket filter assembled with cilium/ebpf/asm
//     drops other EtherTypes, other groups and runt frames in the kernel and
//     counts them (Stats.Filter). Batched sendmmsg/recvmmsg.
//   - udp (NewUDP): IPv4 multicast (239.193.x.y from the group id) plus
//     unicast to configured site addresses. Multicast is used only on an up
//     interface with the MULTICAST flag; elsewhere (plain loopback) every
//     multicast becomes unicast fan-out and Stats.MulticastFallback says why.
//   - mem (NewMem, NewMemHub): an in-process hub for board tests with seeded
//     fault injection (drop, duplicate, reorder, delay, partition, per
//     direction). Decisions come from a PRNG per link, so the same seed and
//     the same sends on a link give the same delivery; delays use real timers.
//
// # Semantics
//
// Delivery is best effort: messages may be lost (and, with the mem hub's
// faults, duplicated or reordered); the replication layer retransmits.
// Messages are at most MaxMessageSize (1 MiB) bytes, else ErrMessageTooLarge.
// Larger than one frame, they are split into link-MTU fragments that share a
// message id and are reassembled by the receiver in any order, duplicates
// dropped, with bounded memory (ReassemblyConfig: per-source and global
// limits, oldest partial message evicted and counted) and a timeout. Every
// site of a group must use the same MTU (raw) or MaxDatagram (udp).
// Payloads from CompressThreshold (default 4 KiB) are lz4-compressed when that
// saves space (from 32 KiB, only if three 2 KiB probes of them shrink; the
// others are counted in Stats.Incompressible); the declared size is checked against the 1 MiB limit before the
// receiver allocates anything.
//
// Every frame carries the fixed 32-byte little-endian header described in
// EncodeHeader, protected with crc32c. Bad frames (short, bad magic, version
// or crc, other group, absurd length, inconsistent fragments, undecodable lz4)
// are never delivered and never panic: they are counted in Stats.Drops by
// DropReason. Frames from this site itself and unicast to other sites are
// counted too (DropFromSelf, DropNotForMe).
//
// Payload slices returned by Recv alias transport-owned buffers and stay valid
// only until the next Recv call on that transport; copy what must live longer.
// Unfragmented messages cost no allocation in steady state. Send may be called
// from several goroutines and copies nothing it does not have to (header and
// payload go out as separate iovecs); Recv is for one goroutine at a time.
// Close unblocks a pending Recv (at once for udp and mem, within 100 ms for
// raw, whose sockets cannot be shut down) and makes both return ErrClosed.
//
// Create raw and udp transports inside the network namespace they are to use
// (hwtest/rig's Board.Do); the sockets stay there.
//
// Package bptest measures the transports against the bare link.
package backplane
