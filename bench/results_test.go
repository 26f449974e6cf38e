package main

import (
	"strings"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	s := Samples{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {.1, 1}, {.5, 5}, {.9, 9}, {.99, 10}, {1, 10}} {
		if got := s.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if Samples(nil).Quantile(.5) != 0 || Samples(nil).Max() != 0 {
		t.Error("empty samples must give 0")
	}
	if s[0] != 5 {
		t.Error("Quantile reordered its receiver")
	}
}

// A reason with table syntax in it must stay inside its cell, and every
// unmeasured row and section must show its reason.
func TestMarkdownNotMeasured(t *testing.T) {
	r := &Results{Mode: "tiny", Sections: []Section{
		{ID: "a", Title: "A", Columns: []string{"x", "y", "z"}, Rows: []Row{
			{Label: "ok", Cells: []string{"1", "2"}, Values: map[string]float64{"y": 1}},
			{Label: "bad", NotMeasured: "pipe | and\nnewline"},
		}},
		{ID: "b", Title: "B", NotMeasured: "no chassis"},
	}, Targets: []Target{{Name: "t", Goal: "<= 1", Reason: "section not selected"}}}
	md := r.Markdown()
	for _, want := range []string{"| bad | not measured: pipe \\| and newline |  |", "Not measured: no chassis", "| t | not measured: section not selected | <= 1 | - |", "| ok | 1 | 2 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| bad") && strings.Count(strings.ReplaceAll(line, "\\|", ""), "|") != 4 {
			t.Errorf("row split into the wrong number of cells: %q", line)
		}
	}
	if r.Sections[0].measured() != true || r.Sections[1].measured() {
		t.Error("measured() wrong")
	}
	if strings.Contains(md, "MTU") {
		t.Error("a run on the default links says its MTU was changed")
	}
	r.MTU = 9000
	if md := r.Markdown(); !strings.Contains(md, "an MTU of 9000 bytes") {
		t.Errorf("a run with -mtu 9000 does not say so:\n%s", md)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-sections", "nope"}, {"-sections", ""}, {"extra"}, {"-nosuchflag"}, {"-mtu", "100"}, {"-mtu", "9001"}} {
		var out, errw strings.Builder
		if code := cliMain(args, &out, &errw); code != 2 {
			t.Errorf("cliMain(%q) = %d, want 2 (stderr %q)", args, code, errw.String())
		}
		if errw.Len() == 0 {
			t.Errorf("cliMain(%q) said nothing about the mistake", args)
		}
	}
	if _, err := sized("huge"); err == nil {
		t.Error("unknown mode accepted")
	}
}
