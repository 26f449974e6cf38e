package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// targets checks the goals against this run's figures.
func (s *suite) targets() {
	add := func(name, goal, unit string, value float64, ok bool, met bool, reason string) {
		t := Target{Name: name, Goal: goal, Unit: unit}
		if !ok {
			t.Reason = reason
		} else {
			t.Value, t.Met = value, met
		}
		s.res.Targets = append(s.res.Targets, t)
	}
	find := func(id string, match func(Row) bool) (Row, string) {
		sec := s.section(id)
		if sec == nil {
			return Row{}, "section not selected"
		}
		if sec.NotMeasured != "" {
			return Row{}, sec.NotMeasured
		}
		for _, r := range sec.Rows {
			if match(r) {
				if r.NotMeasured != "" {
					return Row{}, r.NotMeasured
				}
				return r, ""
			}
		}
		return Row{}, "no such row in this run"
	}
	quorum := func(label string, boards, writers float64) func(Row) bool {
		return func(r Row) bool {
			return r.Label == label && (r.NotMeasured != "" || r.Values["boards"] == boards && r.Values["writers"] == writers)
		}
	}
	var (
		r   Row
		why string
		v   float64
		ok  bool
	)
	// Boards in one process, then one process per board.
	for _, layout := range []string{"", perProcessLabel} {
		r, why = find(secCommit, quorum("QUORUM"+layout, 3, 1))
		v, ok = r.Values["p50_over_bare_rtt64"]
		if why == "" && !ok {
			why = "bare round trip not measured"
		}
		add("QUORUM commit p50 / bare RTT (3 boards"+layout+", 1 writer)", "<= 2x", "x", v, why == "", v <= 2, why)

		r, why = find(secCommit, quorum("QUORUM"+layout, 3, 64))
		v = r.Values["commits_per_s"]
		add("QUORUM commits/s (3 boards"+layout+", 64 writers)", ">= 100000", "commits/s", v, why == "", v >= 100000, why)
	}

	r, why = find(secFailover, func(r Row) bool { return r.Label == "SIGKILL master" })
	v = r.Values["median_ms"]
	add("failover median after SIGKILL", "<= 20 ms", "ms", v, why == "", v <= 20, why)

	r, why = find(secFailover, func(r Row) bool { return r.Label == "SIGSTOP master" })
	v = r.Values["median_ms"]
	add("failover median after SIGSTOP", "<= 20 ms", "ms", v, why == "", v <= 20, why)

	r, why = find(secStability, func(r Row) bool { return !strings.Contains(r.Label, "half load") })
	v = r.Values["elections"]
	add(fmt.Sprintf("elections in a loaded run of %v without fault", s.cfg.StabilityTime), "0", "elections", v, why == "", v == 0, why)

	r, why = find(secInit, func(r Row) bool { return r.Label == "internal init" })
	v, ok = r.Values["of_bare_stream"]
	if why == "" && !ok {
		why = "bare stream not measured"
	}
	add("internal init rate / bare stream rate", ">= 50%", "%", 100*v, why == "", v >= .5, why)
	// The same init by the bytes the link carried (pages travel without
	// their free space, compressed where that helps): the stricter reading.
	v, ok = r.Values["wire_of_bare_stream"]
	if why == "" && !ok {
		why = "bare stream or wire bytes not measured"
	}
	add("internal init wire bytes/s / bare stream rate", ">= 50%", "%", 100*v, why == "", v >= .5, why)

	sec := s.section(secScale)
	var last Row
	why = "section not selected"
	if sec != nil {
		why = sec.NotMeasured
		if why == "" {
			why = "fewer than two group sizes measured"
			var measured []Row
			for _, r := range sec.Rows {
				if r.NotMeasured == "" {
					measured = append(measured, r)
				}
			}
			if len(measured) >= 2 {
				last, why = measured[len(measured)-1], ""
			}
		}
	}
	v = last.Values["growth_p50_1w"]
	largest := slices.Max(append([]int{0}, s.cfg.ScaleBoards...))
	if why == "" {
		largest = int(last.Values["boards"])
	}
	add(fmt.Sprintf("commit p50 growth %d -> %d boards (QUORUM, 1 writer)", slices.Min(append([]int{1 << 30}, s.cfg.ScaleBoards...)), largest), "<= 1.5x", "x", v, why == "", v <= 1.5, why)
}

// write stores results.md, results.json and the plots in cfg.Out.
func (s *suite) write() error {
	md := s.res.Markdown()
	js, err := json.MarshalIndent(s.res, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encoding the results: %w", err)
	}
	var errs []error
	if err := os.WriteFile(filepath.Join(s.cfg.Out, "results.md"), []byte(md), 0o644); err != nil {
		errs = append(errs, err)
	}
	if err := os.WriteFile(filepath.Join(s.cfg.Out, "results.json"), append(js, '\n'), 0o644); err != nil {
		errs = append(errs, err)
	}
	if err := s.plotCDF(filepath.Join(s.cfg.Out, "commit_latency_cdf.png")); err != nil {
		errs = append(errs, err)
	}
	if err := s.plotFailover(filepath.Join(s.cfg.Out, "failover_hist.png")); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: writing the results to %s: %w", s.cfg.Out, err)
	}
	return nil
}

func palette() []color.Color {
	return []color.Color{
		color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
		color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
	}
}

// plotCDF draws the commit latency distribution of each ack policy (3
// boards, 1 writer); with nothing measured it draws an empty, titled plot
// so the file set stays the same.
func (s *suite) plotCDF(path string) error {
	p := plot.New()
	p.Title.Text = "Commit latency CDF, 3 boards, 1 writer"
	p.X.Label.Text = "commit latency (µs, log scale)"
	p.Y.Label.Text = "fraction of commits"
	p.Legend.Top = false
	p.Legend.Left = false
	logX := false
	for i, pol := range ackPolicies() {
		lat := s.latency[policyName(pol)]
		if len(lat) == 0 {
			continue
		}
		sorted := lat.sorted()
		// At most ~500 points per line: the shape, not every sample.
		step := max(1, len(sorted)/500)
		var xy plotter.XYs
		for j := 0; j < len(sorted); j += step {
			xy = append(xy, plotter.XY{X: max(usF(sorted[j]), 0.1), Y: float64(j+1) / float64(len(sorted))})
		}
		xy = append(xy, plotter.XY{X: max(usF(sorted[len(sorted)-1]), 0.1), Y: 1})
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color = palette()[i%len(palette())]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(policyName(pol), l)
		logX = true
	}
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.Title.Text += " (not measured)"
	}
	if s.bare != nil && s.bare.rtt[64] > 0 && logX {
		x := usF(s.bare.rtt[64])
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: 1}})
		if err != nil {
			return err
		}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("bare RTT 64 B", l)
	}
	p.Add(plotter.NewGrid())
	return p.Save(18*vg.Centimeter, 12*vg.Centimeter, path)
}

// plotFailover draws histograms of the failover times, one per fault.
func (s *suite) plotFailover(path string) error {
	p := plot.New()
	p.Title.Text = "Failover: fault of the master -> first commit by the new master"
	p.X.Label.Text = "failover time (ms)"
	p.Y.Label.Text = "count"
	kinds := make([]string, 0, len(s.failover))
	for k := range s.failover {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	// Shared bins from 0 to the largest sample; within a bin each fault
	// gets its own slice of the width, so the distributions sit side by
	// side instead of hiding each other.
	var top time.Duration
	for _, k := range kinds {
		top = max(top, s.failover[k].Max())
	}
	const nbins = 25
	width := max(msF(top)*1.02, 1) / nbins
	any := false
	var tallest float64
	for i, k := range kinds {
		smp := s.failover[k]
		if len(smp) == 0 {
			continue
		}
		counts := make([]float64, nbins)
		for _, d := range smp {
			counts[min(int(msF(d)/width), nbins-1)]++
		}
		tallest = max(tallest, slices.Max(counts))
		sub := width / float64(len(kinds))
		h := &plotter.Histogram{FillColor: palette()[i%len(palette())], LineStyle: plotter.DefaultLineStyle}
		for b, c := range counts {
			lo := float64(b)*width + float64(i)*sub
			h.Bins = append(h.Bins, plotter.HistogramBin{Min: lo, Max: lo + sub, Weight: c})
		}
		h.Width = sub
		p.Add(h)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", k, len(smp)), h)
		any = true
	}
	p.Legend.Top = true
	p.Y.Max = tallest * 1.3 // room for the legend above the bars
	if !any {
		p.Title.Text += " (not measured)"
	}
	return p.Save(18*vg.Centimeter, 12*vg.Centimeter, path)
}
