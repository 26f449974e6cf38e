package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/backplane/bptest"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// bareFigures are the physical limits later sections are compared with.
type bareFigures struct {
	rtt        map[int]time.Duration // median round trip by payload size
	frameRate  float64               // streamed frames/s received
	mbPerSec   float64               // streamed payload MB/s received
	streamSize int
	streamVia  string // which bare stream gave frameRate (the faster one)
}

// rttSizes are the ping-pong payload sizes.
func rttSizes() []int { return []int{64, 1400} }

// streamSize is the stream's frame payload on links of MTU mtu: full
// frames less room for headers (1400 B at 1500), as an init's are full, so
// a chassis with jumbo frames (-mtu) is compared with jumbo frames.
func streamSize(mtu int) int { return mtu - 100 }

// runBare measures plain AF_PACKET sockets between boards 1 and 2 (no
// header, checksum, filter or reassembly: bptest's bare link), then the raw
// transport over the same veths for reference.
func (s *suite) runBare(ctx context.Context) Section {
	sec := emptySection(secBare)
	sec.Setup = fmt.Sprintf("Boards 1 and 2 of the chassis (veth pair through a Linux bridge, MTU %d). Bare: a plain AF_PACKET socket per board, "+
		"EtherType 0x88B6, nothing but an Ethernet header (backplane/bptest). Raw transport: backplane.NewRaw with its header, CRC32C and eBPF group filter. "+
		"Round trips: %d per size, one in flight. Stream: %d frames of %d B sent back to back (bptest: one write(2) per frame; sendmmsg x64: batches of 64 frames per system call, as the raw transport sends fragments), rate measured at the receiver (the init section measures the batched stream again beside its init, as its reference).",
		s.chassis.MTU(), s.cfg.RoundTrips, s.cfg.StreamFrames, streamSize(s.chassis.MTU()))
	sec.Columns = []string{"link", "RTT p50 64 B", "RTT p99 64 B", "RTT p50 1400 B", "RTT p99 1400 B", "stream frames/s", "stream MB/s", "delivered"}
	a, b := s.chassis.Boards[0], s.chassis.Boards[1]

	// A lost frame stalls bptest's bare exchange (it has no retransmission,
	// by design); on a busy machine that happens, so try a few times with
	// fresh sockets before giving up.
	var lastErr error
	for attempt := 1; attempt <= 3 && s.bare == nil && ctx.Err() == nil; attempt++ {
		fig, lat, th, err := bareOnce(ctx, a, b, s.cfg, streamSize(s.chassis.MTU()))
		if err != nil {
			lastErr = fmt.Errorf("attempt %d: %w", attempt, err)
			s.logf("bare: %v", lastErr)
			continue
		}
		s.bare = fig
		sec.add("bare AF_PACKET", linkValues(lat, th), linkCells(lat, th)...)
		if attempt > 1 {
			sec.note("bare AF_PACKET measured on attempt %d; earlier: %v", attempt, lastErr)
		}
	}
	if s.bare == nil {
		sec.missing("bare AF_PACKET", fmt.Sprint(lastErr))
	}

	// The same stream in sendmmsg batches: the transport sends a message's
	// fragments that way, so this is the link's limit for bulk transfer
	// (internal init); bptest's stream above costs one write(2) per frame.
	if rate, mb, got, err := streamRate(a, b, streamSize(s.chassis.MTU()), s.cfg.StreamFrames); err != nil {
		sec.missing("bare AF_PACKET, sendmmsg x64", fmt.Sprintf("%v (received %d frames)", err, got))
	} else {
		sec.add("bare AF_PACKET, sendmmsg x64", map[string]float64{"stream_frames_per_s": rate, "stream_mb_per_s": mb,
			"stream_received": float64(got), "stream_sent": float64(s.cfg.StreamFrames)},
			"-", "-", "-", "-", fmt.Sprintf("%.0f", rate), fmt.Sprintf("%.1f", mb), fmt.Sprintf("%d/%d", got, s.cfg.StreamFrames))
		if s.bare != nil && mb > s.bare.mbPerSec {
			s.bare.frameRate, s.bare.mbPerSec, s.bare.streamVia = rate, mb, "sendmmsg batches of 64"
		}
	}

	// The raw transport over the same link, for reference.
	group := backplane.GroupID("bench-bare")
	open := func(bd *rig.Board) (t backplane.Transport, err error) {
		err = bd.Do(func() error {
			t, err = backplane.NewRaw(backplane.RawConfig{Interface: bd.Iface, Site: bd.Site, Group: group})
			return err
		})
		return t, err
	}
	ta, err := open(a)
	var tb backplane.Transport
	if err == nil {
		if tb, err = open(b); err != nil {
			ta.Close()
		}
	}
	if err != nil {
		sec.missing("raw transport", fmt.Sprintf("opening: %v", err))
		return sec
	}
	defer func() { _ = errors.Join(ta.Close(), tb.Close()) }()
	rlat := map[int]bptest.Latencies{}
	for _, size := range rttSizes() {
		if ctx.Err() != nil {
			sec.missing("raw transport", "interrupted")
			return sec
		}
		if rlat[size], err = bptest.PingPong(ta, tb, b.Site, size, s.cfg.RoundTrips); err != nil {
			sec.missing("raw transport", err.Error())
			return sec
		}
	}
	rth, err := bptest.Stream(ta, tb, b.Site, streamSize(s.chassis.MTU()), s.cfg.StreamFrames)
	if err != nil {
		sec.missing("raw transport", err.Error())
		return sec
	}
	sec.add("raw transport", linkValues(rlat, rth), linkCells(rlat, rth)...)
	if s.bare != nil {
		sec.note("raw transport / bare: RTT 64 B %.2fx, RTT 1400 B %.2fx, stream rate %.2fx",
			float64(rlat[64].Median())/float64(s.bare.rtt[64]), float64(rlat[1400].Median())/float64(s.bare.rtt[1400]),
			rth.MsgsPerSec()/max(s.bare.frameRate, 1))
	}
	return sec
}

func linkValues(lat map[int]bptest.Latencies, th bptest.Throughput) map[string]float64 {
	return map[string]float64{
		"rtt_p50_64_us": usF(lat[64].Median()), "rtt_p99_64_us": usF(lat[64].Percentile(99)),
		"rtt_p50_1400_us": usF(lat[1400].Median()), "rtt_p99_1400_us": usF(lat[1400].Percentile(99)),
		"stream_frames_per_s": th.MsgsPerSec(), "stream_mb_per_s": th.MBPerSec(),
		"stream_received": float64(th.Received), "stream_sent": float64(th.Sent),
	}
}

func linkCells(lat map[int]bptest.Latencies, th bptest.Throughput) []string {
	return []string{us(lat[64].Median()), us(lat[64].Percentile(99)), us(lat[1400].Median()), us(lat[1400].Percentile(99)),
		fmt.Sprintf("%.0f", th.MsgsPerSec()), fmt.Sprintf("%.1f", th.MBPerSec()), fmt.Sprintf("%d/%d", th.Received, th.Sent)}
}

// bareOnce measures bptest's bare link once between a and b.
func bareOnce(ctx context.Context, a, b *rig.Board, cfg Config, frame int) (*bareFigures, map[int]bptest.Latencies, bptest.Throughput, error) {
	var ba, bb *bptest.BareConn
	var th bptest.Throughput
	err := a.Do(func() (err error) { ba, err = bptest.OpenBare(a.Iface, b.MAC); return err })
	if err == nil {
		err = b.Do(func() (err error) { bb, err = bptest.OpenBare(b.Iface, a.MAC); return err })
		if err != nil {
			ba.Close()
		}
	}
	if err != nil {
		return nil, nil, th, fmt.Errorf("opening the bare sockets: %w", err)
	}
	defer func() { ba.Close(); bb.Close() }()
	// A fresh link drops frames until carrier is up; a lost first frame
	// would stall the exchange.
	if err := errors.Join(bptest.AwaitLink(ba, bb), bptest.AwaitLink(bb, ba)); err != nil {
		return nil, nil, th, err
	}
	fig := &bareFigures{rtt: map[int]time.Duration{}, streamSize: frame, streamVia: "one write(2) per frame"}
	lat := map[int]bptest.Latencies{}
	for _, size := range rttSizes() {
		if ctx.Err() != nil {
			return nil, nil, th, errInterrupted
		}
		if lat[size], err = bptest.BarePingPong(ba, bb, size, cfg.RoundTrips); err != nil {
			return nil, nil, th, err
		}
		fig.rtt[size] = lat[size].Median()
	}
	if th, err = bptest.BareStream(ba, bb, frame, cfg.StreamFrames); err != nil {
		return nil, nil, th, err
	}
	fig.frameRate, fig.mbPerSec = th.MsgsPerSec(), th.MBPerSec()
	return fig, lat, th, nil
}
