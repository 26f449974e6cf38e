package backplane

import (
	"fmt"
	"sync/atomic"
)

// DropReason says why an incoming frame or message was not delivered.
type DropReason uint8

// Drop reasons, indexes into Stats.Drops.
const (
	DropBadMagic      DropReason = iota // not a backplane frame
	DropBadVersion                      // frame version this build does not speak
	DropBadCRC                          // corrupted frame
	DropForeignGroup                    // frame of another group (user-space check)
	DropShort                           // shorter than its header or declared length
	DropAbsurdLength                    // impossible length, fragment count or truncated datagram
	DropReasmTimeout                    // message whose fragments did not all arrive in time
	DropReasmOverflow                   // partial message evicted by the reassembly memory limits
	DropStrayFragment                   // fragment inconsistent with its message, or index >= count
	DropDupFragment                     // fragment already received (or of a completed message)
	DropDecompress                      // lz4 payload that does not decompress to its declared size
	DropNotForMe                        // unicast to another site
	DropFromSelf                        // our own frame looped back
	DropQueueFull                       // receiver queue full (mem hub)
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	"bad_magic", "bad_version", "bad_crc", "foreign_group", "short", "absurd_length",
	"reassembly_timeout", "reassembly_overflow", "stray_fragment", "duplicate_fragment",
	"decompress", "not_for_me", "from_self", "queue_full",
}

func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("drop_reason_%d", uint8(r))
}

// Stats is a snapshot of a transport's counters.
type Stats struct {
	FramesOut, BytesOut uint64 // frames / wire bytes sent (header included)
	FramesIn, BytesIn   uint64 // frames / wire bytes received, before any check
	MsgsOut, MsgsIn     uint64 // messages sent / delivered to Recv
	SendErrors          uint64 // failed send syscalls (the message may be partly sent)
	RecvErrors          uint64 // transient receive errors skipped (interface down, ICMP errors)
	// SocketDrops counts frames the kernel dropped because the socket's
	// receive buffer (raw: its receive ring) was full (raw:
	// PACKET_STATISTICS). Raise RecvBuffer (RingBytes) or drain faster
	// when it grows.
	SocketDrops uint64
	// RecvRing is true when the raw transport receives through a
	// PACKET_RX_RING; RingError says why not when it was asked for.
	RecvRing   bool
	RingError  string
	Compressed uint64 // messages sent lz4-compressed
	// Incompressible counts large messages sent uncompressed because
	// probes of them did not shrink (compressing them whole was not tried).
	Incompressible uint64

	// Drops counts undelivered frames (or messages, for reassembly and
	// decompression reasons) by reason.
	Drops [NumDropReasons]uint64

	// Reassembling is the number of partially received messages right now,
	// ReassemblyBytes the memory charged to them.
	Reassembling, ReassemblyBytes int

	// MulticastFallback is true when multicast is emulated by unicast
	// fan-out to every configured site; FallbackReason says why.
	MulticastFallback bool
	FallbackReason    string

	// Filter holds the raw transport's in-kernel eBPF filter counters.
	Filter FilterStats

	// Faults holds the mem hub's injected faults for this site's sends.
	Faults FaultStats
}

// FilterStats counts what the raw transport's eBPF socket filter decided.
type FilterStats struct {
	Attached       bool
	Passed         uint64 // frames let through to the socket
	OtherEtherType uint64 // frames of another EtherType dropped in the kernel
	ForeignGroup   uint64 // backplane frames of another group dropped in the kernel
	Short          uint64 // frames too short to hold a header dropped in the kernel
}

// FaultStats counts faults the mem hub injected into a site's outgoing messages.
type FaultStats struct {
	Dropped, Duplicated, Delayed, Reordered, Partitioned uint64
	Unreachable                                          uint64 // unicast to a site not attached to the hub
}

// Dropped is the total of all drop reasons.
func (s Stats) Dropped() uint64 {
	var t uint64
	for _, v := range s.Drops {
		t += v
	}
	return t
}

// Drop returns the count for one reason.
func (s Stats) Drop(r DropReason) uint64 {
	if r < NumDropReasons {
		return s.Drops[r]
	}
	return 0
}

// counters are the live, concurrently updated counters behind Stats.
type counters struct {
	framesOut, bytesOut, framesIn, bytesIn atomic.Uint64
	msgsOut, msgsIn, sendErrors            atomic.Uint64
	recvErrors                             atomic.Uint64
	compressed, incompressible             atomic.Uint64
	drops                                  [NumDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

func (c *counters) snapshot() Stats {
	s := Stats{
		FramesOut: c.framesOut.Load(), BytesOut: c.bytesOut.Load(),
		FramesIn: c.framesIn.Load(), BytesIn: c.bytesIn.Load(),
		MsgsOut: c.msgsOut.Load(), MsgsIn: c.msgsIn.Load(),
		SendErrors: c.sendErrors.Load(), RecvErrors: c.recvErrors.Load(), Compressed: c.compressed.Load(),
		Incompressible: c.incompressible.Load(),
	}
	for i := range c.drops {
		s.Drops[i] = c.drops[i].Load()
	}
	return s
}
