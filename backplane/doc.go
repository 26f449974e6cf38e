// Package backplane moves replication messages between the boards of one
// chassis.
//
// Three transports implement Transport with the same semantics:
//
//   - raw: AF_PACKET frames with EtherType 0x88B5 on the backplane interface,
//     a kernel eBPF socket filter that drops other EtherTypes and other
//     groups before they reach user space, batched sendmmsg/recvmmsg.
//   - udp: IPv4 multicast (or unicast fan-out where multicast is unavailable)
//     plus unicast, for rigs without CAP_NET_RAW and routed set-ups.
//   - mem: an in-process hub with seeded fault injection for board tests.
//
// Every frame carries the fixed 32-byte little-endian header described in
// EncodeHeader. Messages up to MaxMessageSize are split into link-MTU sized
// fragments and reassembled with bounded memory and a timeout. Bad frames are
// never delivered: they are dropped and counted by reason in Stats.
//
// Payload slices returned by Recv alias transport-owned buffers and stay valid
// only until the next Recv call on that transport; copy what must live longer.
// Send may be called from several goroutines; Recv from one at a time.
package backplane
