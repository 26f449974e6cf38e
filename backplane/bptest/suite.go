package bptest

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// SuiteConfig sizes a comparison run. Zero fields take the defaults.
type SuiteConfig struct {
	RoundTrips int   // per ping-pong; default 2000
	StreamMsgs int   // per stream; default 20000
	Sizes      []int // ping-pong payload sizes; default 64 and 1400
	StreamSize int   // stream payload size; default 1400 (one frame on a 1500 MTU)
	// Rounds splits every measurement into rounds run variant after
	// variant, so a burst of load from other processes on the machine hits
	// all variants alike instead of skewing one; default 8.
	Rounds int
}

// Variant names, in report order.
const (
	VariantBare     = "bare"
	VariantRaw      = "raw"
	VariantRawNoBPF = "raw-nofilter"
	VariantUDP      = "udp"
)

// Result is one variant's measurements.
type Result struct {
	Variant string
	RTT     map[int]Latencies // by payload size
	Stream  Throughput        // all rounds together
	// BestStream is the round with the highest receive rate: on a shared
	// machine a round can lose the CPU to other work, and the best round is
	// the closer estimate of what the path can do. Ratios use it.
	BestStream Throughput
}

// Report is one comparison run.
type Report struct {
	Config  SuiteConfig
	Results []Result
}

// Get returns the variant's result.
func (r *Report) Get(variant string) *Result {
	for i := range r.Results {
		if r.Results[i].Variant == variant {
			return &r.Results[i]
		}
	}
	return nil
}

// RTTRatio is median RTT of variant over that of base at size.
func (r *Report) RTTRatio(variant, base string, size int) float64 {
	v, b := r.Get(variant), r.Get(base)
	if v == nil || b == nil || b.RTT[size].Median() == 0 {
		return 0
	}
	return float64(v.RTT[size].Median()) / float64(b.RTT[size].Median())
}

// StreamRatio is the received message rate of variant over that of base.
func (r *Report) StreamRatio(variant, base string) float64 {
	v, b := r.Get(variant), r.Get(base)
	if v == nil || b == nil || b.BestStream.MsgsPerSec() == 0 {
		return 0
	}
	return v.BestStream.MsgsPerSec() / b.BestStream.MsgsPerSec()
}

// String renders the report as a table followed by the target ratios.
func (r *Report) String() string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "variant\t")
	for _, s := range r.Config.Sizes {
		fmt.Fprintf(tw, "rtt p50 %dB\trtt p99 %dB\t", s, s)
	}
	fmt.Fprintf(tw, "stream %dB msg/s (best round)\tMB/s\tall rounds msg/s\tdelivered\t\n", r.Config.StreamSize)
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t", res.Variant)
		for _, s := range r.Config.Sizes {
			fmt.Fprintf(tw, "%v\t%v\t", res.RTT[s].Median().Round(100*time.Nanosecond), res.RTT[s].Percentile(99).Round(100*time.Nanosecond))
		}
		st, best := res.Stream, res.BestStream
		fmt.Fprintf(tw, "%.0f\t%.1f\t%.0f\t%d/%d\t\n", best.MsgsPerSec(), best.MBPerSec(), st.MsgsPerSec(), st.Received, st.Sent)
	}
	tw.Flush()
	for _, s := range r.Config.Sizes {
		fmt.Fprintf(&sb, "raw/bare RTT %dB: %.2fx (target <= 1.30)   udp/bare: %.2fx   filter cost raw/raw-nofilter: %+.1f%% (target <= 5%%)\n",
			s, r.RTTRatio(VariantRaw, VariantBare, s), r.RTTRatio(VariantUDP, VariantBare, s), 100*(r.RTTRatio(VariantRaw, VariantRawNoBPF, s)-1))
	}
	fmt.Fprintf(&sb, "raw/bare stream msg/s: %.2f (target >= 0.80)   udp/bare: %.2f   raw/raw-nofilter: %.2f\n",
		r.StreamRatio(VariantRaw, VariantBare), r.StreamRatio(VariantUDP, VariantBare), r.StreamRatio(VariantRaw, VariantRawNoBPF))
	return sb.String()
}

// Suite measures bare AF_PACKET, raw (with and without the eBPF filter) and
// udp between boards a and b of a rig, one variant at a time, in one run.
func Suite(a, b *rig.Board, cfg SuiteConfig) (*Report, error) {
	if cfg.RoundTrips <= 0 {
		cfg.RoundTrips = 2000
	}
	if cfg.StreamMsgs <= 0 {
		cfg.StreamMsgs = 20000
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []int{64, 1400}
	}
	if cfg.StreamSize <= 0 {
		cfg.StreamSize = 1400
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 8
	}
	rep := &Report{Config: cfg}
	for _, v := range variants {
		rep.Results = append(rep.Results, Result{Variant: v, RTT: map[int]Latencies{}})
	}
	round := cfg
	round.RoundTrips = max(1, cfg.RoundTrips/cfg.Rounds)
	round.StreamMsgs = max(1, cfg.StreamMsgs/cfg.Rounds)
	for r := 0; r < cfg.Rounds; r++ {
		if err := suiteRound(a, b, round, rep, r); err != nil {
			return nil, fmt.Errorf("round %d of %d: %w", r+1, cfg.Rounds, err)
		}
	}
	return rep, nil
}

func (r *Result) add(o Result) {
	for s, l := range o.RTT {
		r.RTT[s] = append(r.RTT[s], l...)
	}
	r.Stream.Sent += o.Stream.Sent
	r.Stream.Received += o.Stream.Received
	r.Stream.Elapsed += o.Stream.Elapsed
	r.Stream.Size = o.Stream.Size
	if o.Stream.MsgsPerSec() > r.BestStream.MsgsPerSec() {
		r.BestStream = o.Stream
	}
}

// variants in report order; each round starts at a different one so that
// position in a round (right after a transport was closed, say) favours none.
var variants = [...]string{VariantBare, VariantRaw, VariantRawNoBPF, VariantUDP}

func suiteRound(a, b *rig.Board, cfg SuiteConfig, rep *Report, round int) error {
	group := backplane.GroupID("bptest")
	sites := map[uint16]netip.AddrPort{a.Site: netip.AddrPortFrom(a.IP, backplane.DefaultUDPPort), b.Site: netip.AddrPortFrom(b.IP, backplane.DefaultUDPPort)}
	open := map[string]func(bd *rig.Board) (backplane.Transport, error){
		VariantRaw: func(bd *rig.Board) (backplane.Transport, error) {
			return backplane.NewRaw(backplane.RawConfig{Interface: bd.Iface, Site: bd.Site, Group: group})
		},
		VariantRawNoBPF: func(bd *rig.Board) (backplane.Transport, error) {
			return backplane.NewRaw(backplane.RawConfig{Interface: bd.Iface, Site: bd.Site, Group: group, NoFilter: true})
		},
		VariantUDP: func(bd *rig.Board) (backplane.Transport, error) {
			return backplane.NewUDP(backplane.UDPConfig{Site: bd.Site, Group: group, Sites: sites})
		},
	}
	for i := range variants {
		v := variants[(round+i)%len(variants)]
		var res Result
		var err error
		if v == VariantBare {
			res, err = measureBare(a, b, cfg)
		} else {
			res, err = measure(v, open[v], a, b, cfg)
		}
		if err != nil {
			return err
		}
		rep.Get(v).add(res)
	}
	return nil
}

func measureBare(a, b *rig.Board, cfg SuiteConfig) (Result, error) {
	res := Result{Variant: VariantBare, RTT: map[int]Latencies{}}
	var ba, bb *BareConn
	if err := a.Do(func() (err error) { ba, err = OpenBare(a.Iface, b.MAC); return err }); err != nil {
		return res, err
	}
	if err := b.Do(func() (err error) { bb, err = OpenBare(b.Iface, a.MAC); return err }); err != nil {
		ba.Close()
		return res, err
	}
	defer func() { _ = errors.Join(ba.Close(), bb.Close()) }()
	err := AwaitLink(ba, bb)
	for _, s := range cfg.Sizes {
		if err != nil {
			break
		}
		res.RTT[s], err = BarePingPong(ba, bb, s, cfg.RoundTrips)
	}
	if err == nil {
		res.Stream, err = BareStream(ba, bb, cfg.StreamSize, cfg.StreamMsgs)
	}
	if err != nil {
		return res, fmt.Errorf("bare: %w", err)
	}
	return res, nil
}

func measure(variant string, open func(*rig.Board) (backplane.Transport, error), a, b *rig.Board, cfg SuiteConfig) (Result, error) {
	res := Result{Variant: variant, RTT: map[int]Latencies{}}
	var ta, tb backplane.Transport
	if err := a.Do(func() (err error) { ta, err = open(a); return err }); err != nil {
		return res, fmt.Errorf("%s on board %d: %w", variant, a.Site, err)
	}
	if err := b.Do(func() (err error) { tb, err = open(b); return err }); err != nil {
		ta.Close()
		return res, fmt.Errorf("%s on board %d: %w", variant, b.Site, err)
	}
	defer func() { _ = errors.Join(ta.Close(), tb.Close()) }()
	var err error
	for _, s := range cfg.Sizes {
		if res.RTT[s], err = PingPong(ta, tb, b.Site, s, cfg.RoundTrips); err != nil {
			return res, fmt.Errorf("%s: %w", variant, err)
		}
	}
	if res.Stream, err = Stream(ta, tb, b.Site, cfg.StreamSize, cfg.StreamMsgs); err != nil {
		return res, fmt.Errorf("%s: %w", variant, err)
	}
	return res, nil
}
