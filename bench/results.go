package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Results is one run of the suite: every figure in it was measured in that
// run, and every ratio is taken against the bare-link figures of the same run.
type Results struct {
	Date     string    `json:"date"`
	Mode     string    `json:"mode"` // full, quick or tiny
	Machine  Machine   `json:"machine"`
	Sections []Section `json:"sections"`
	Targets  []Target  `json:"targets"`
	Elapsed  string    `json:"elapsed"`
	// BoarddArgs are the arguments added to every `boardd run` (-boardd-args):
	// settings other than the defaults the targets are about.
	BoarddArgs []string `json:"boardd_args,omitempty"`
	// MTU is the chassis links' MTU when -mtu set one (0: the rig's 1500).
	MTU int `json:"mtu,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	CPU       string `json:"cpu,omitempty"`
}

// Section is one measured aspect. Either it has rows, or NotMeasured says
// why it has none; a row may itself be unmeasured.
type Section struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Setup       string   `json:"setup"`
	Columns     []string `json:"columns"`
	Rows        []Row    `json:"rows"`
	Notes       []string `json:"notes,omitempty"`
	NotMeasured string   `json:"not_measured,omitempty"`
}

// Row is one line of a section table. Cells are the rendered columns after
// the label; Values holds the same figures as numbers (units in the keys).
type Row struct {
	Label       string             `json:"label"`
	Cells       []string           `json:"cells,omitempty"`
	Values      map[string]float64 `json:"values,omitempty"`
	NotMeasured string             `json:"not_measured,omitempty"`
}

// Target is one of the goals checked against this run.
type Target struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Goal   string  `json:"goal"`
	Met    bool    `json:"met"`
	Reason string  `json:"not_measured,omitempty"` // set when Value could not be measured
}

func (s *Section) add(label string, values map[string]float64, cells ...string) {
	s.Rows = append(s.Rows, Row{Label: label, Cells: cells, Values: values})
}

func (s *Section) missing(label, reason string) {
	s.Rows = append(s.Rows, Row{Label: label, NotMeasured: reason})
}

func (s *Section) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// measured reports whether the section holds at least one measured row.
func (s *Section) measured() bool {
	for _, r := range s.Rows {
		if r.NotMeasured == "" && len(r.Values) > 0 {
			return true
		}
	}
	return false
}

// Markdown renders the results as the README table set.
func (r *Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## boardha benchmarks (%s mode)\n\n", r.Mode)
	fmt.Fprintf(&b, "Run %s on %d CPUs, Linux %s, %s", r.Date, r.Machine.NProc, r.Machine.Kernel, r.Machine.GoVersion)
	if r.Machine.CPU != "" {
		fmt.Fprintf(&b, ", %s", r.Machine.CPU)
	}
	fmt.Fprintf(&b, "; suite took %s. Every figure below was measured in this run; ratios are against the bare link of the same run.\n\n", r.Elapsed)
	if len(r.BoarddArgs) > 0 {
		fmt.Fprintf(&b, "**Not the default settings:** every `boardd run` had the extra arguments `%s`.\n\n", strings.Join(r.BoarddArgs, " "))
	}
	if r.MTU != 0 {
		fmt.Fprintf(&b, "**Not the default link:** every link of the chassis had an MTU of %d bytes (-mtu); the bare figures were measured on the same links.\n\n", r.MTU)
	}
	if len(r.Targets) > 0 {
		b.WriteString("### Targets\n\n| target | measured | goal | met |\n|---|---:|---|---|\n")
		for _, t := range r.Targets {
			if t.Reason != "" {
				fmt.Fprintf(&b, "| %s | not measured: %s | %s | - |\n", t.Name, mdCell(t.Reason), t.Goal)
				continue
			}
			met := "no"
			if t.Met {
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s %s | %s | %s |\n", t.Name, fmtNum(t.Value), t.Unit, t.Goal, met)
		}
		b.WriteString("\n")
	}
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "### %s\n\n", s.Title)
		if s.Setup != "" {
			fmt.Fprintf(&b, "%s\n\n", s.Setup)
		}
		if s.NotMeasured != "" {
			fmt.Fprintf(&b, "Not measured: %s\n\n", mdCell(s.NotMeasured))
		}
		if len(s.Rows) > 0 {
			b.WriteString("| " + strings.Join(s.Columns, " | ") + " |\n|")
			for i := range s.Columns {
				if i == 0 {
					b.WriteString("---|")
				} else {
					b.WriteString("---:|")
				}
			}
			b.WriteString("\n")
			for _, row := range s.Rows {
				cells := row.Cells
				if row.NotMeasured != "" {
					cells = []string{"not measured: " + mdCell(row.NotMeasured)}
					for len(cells) < len(s.Columns)-1 {
						cells = append(cells, "")
					}
				}
				b.WriteString("| " + row.Label + " | " + strings.Join(cells, " | ") + " |\n")
			}
			b.WriteString("\n")
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(s.Notes) > 0 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// mdCell keeps free text (error messages, log lines) inside one table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", "\\|", "\r", " ", "\n", " ").Replace(s)
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Samples is a set of durations with order statistics.
type Samples []time.Duration

func (s Samples) sorted() Samples {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// Quantile returns the q-quantile (0..1) by nearest rank; 0 for no samples.
func (s Samples) Quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s
	if !slices.IsSorted(c) {
		c = s.sorted()
	}
	i := int(math.Ceil(q*float64(len(c)))) - 1
	return c[min(max(i, 0), len(c)-1)]
}

// Max returns the largest sample.
func (s Samples) Max() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return slices.Max(s)
}

// us renders a duration in microseconds for tables.
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

// ms renders a duration in milliseconds for tables.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func usF(d time.Duration) float64 { return float64(d) / 1e3 }
func msF(d time.Duration) float64 { return float64(d) / 1e6 }
