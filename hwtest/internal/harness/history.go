package harness

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Outcome is how a write ended as seen by the client.
type Outcome uint8

const (
	// Failed: an error came back (unreachable board, no master, timeout).
	// The write may or may not have been committed.
	Failed Outcome = iota
	// NotPerm: committed on a master but its ack policy was not met
	// (Commit.Perm=false). It may be rolled back later.
	NotPerm
	// Perm: committed and its ack policy met. It must never be lost.
	Perm
)

func (o Outcome) String() string {
	switch o {
	case Failed:
		return "failed"
	case NotPerm:
		return "notperm"
	case Perm:
		return "perm"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Write is one recorded write attempt. Every key is written at most once,
// so a key's presence and value on a board say exactly which write it holds.
type Write struct {
	Key, Value string
	Via        uint16 // the site whose socket took the request
	Start, End time.Time
	Outcome    Outcome
	LSN        uint64
	Err        string
	Tag        string // scenario-defined: e.g. "minority" for writes sent to a partitioned master
}

// History records writes from any number of goroutines.
type History struct {
	mu     sync.Mutex
	writes []Write
}

// Add records w.
func (h *History) Add(w Write) {
	h.mu.Lock()
	h.writes = append(h.writes, w)
	h.mu.Unlock()
}

// Writes returns a copy of everything recorded, in completion order.
func (h *History) Writes() []Write {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Write(nil), h.writes...)
}

// Counts returns how many writes ended each way.
func (h *History) Counts() (perm, notPerm, failed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.writes {
		switch w.Outcome {
		case Perm:
			perm++
		case NotPerm:
			notPerm++
		default:
			failed++
		}
	}
	return
}

// PermCount returns the number of Perm writes so far.
func (h *History) PermCount() int {
	p, _, _ := h.Counts()
	return p
}

// FirstPermStartedAfter returns the Perm write that started at or after t
// and ended first: after a master's SIGKILL at t, it was committed by a new
// master, so its End - t is the failover time as a client sees it.
func (h *History) FirstPermStartedAfter(t time.Time) (Write, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var best Write
	found := false
	for _, w := range h.writes {
		if w.Outcome != Perm || w.Start.Before(t) {
			continue
		}
		if !found || w.End.Before(best.End) {
			best, found = w, true
		}
	}
	return best, found
}

// Content is what one board holds: key -> value.
type Content map[string]string

// Violation is one broken guarantee.
type Violation struct {
	Kind string // lost, wrong-value, phantom, diverged, two-leased-masters, not-rolled-back, ...
	Site uint16
	Key  string
	Msg  string
}

func (v Violation) String() string {
	s := v.Kind
	if v.Site != 0 {
		s += fmt.Sprintf(" site=%d", v.Site)
	}
	if v.Key != "" {
		s += fmt.Sprintf(" key=%q", v.Key)
	}
	if v.Msg != "" {
		s += ": " + v.Msg
	}
	return s
}

// CheckDurable: every Perm write is on the board with its value
// (guarantee 1).
func CheckDurable(ws []Write, site uint16, c Content) []Violation {
	var out []Violation
	for _, w := range ws {
		if w.Outcome != Perm {
			continue
		}
		got, ok := c[w.Key]
		switch {
		case !ok:
			out = append(out, Violation{Kind: "lost", Site: site, Key: w.Key,
				Msg: fmt.Sprintf("perm commit (lsn %d, via site %d, acked %s) is missing", w.LSN, w.Via, w.End.Format("15:04:05.000000"))})
		case got != w.Value:
			out = append(out, Violation{Kind: "wrong-value", Site: site, Key: w.Key,
				Msg: fmt.Sprintf("perm commit wrote %q, board holds %q", w.Value, got)})
		}
	}
	return out
}

// CheckNoPhantom: every key of the board that carries prefix was written by
// some recorded attempt, with that attempt's value (nothing invented,
// nothing corrupted).
func CheckNoPhantom(ws []Write, prefix string, site uint16, c Content) []Violation {
	want := make(map[string]string, len(ws))
	for _, w := range ws {
		want[w.Key] = w.Value
	}
	var out []Violation
	for k, v := range c {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		wv, ok := want[k]
		switch {
		case !ok:
			out = append(out, Violation{Kind: "phantom", Site: site, Key: k, Msg: "key was never written"})
		case wv != v:
			out = append(out, Violation{Kind: "wrong-value", Site: site, Key: k,
				Msg: fmt.Sprintf("written %q, board holds %q", wv, v)})
		}
	}
	sortViolations(out)
	return out
}

// CheckAbsent: the writes matched by sel (e.g. those a partitioned master
// took without its ack policy met, superseded by a new master) are on no
// board any more: they were rolled back.
func CheckAbsent(ws []Write, sel func(Write) bool, site uint16, c Content) []Violation {
	var out []Violation
	for _, w := range ws {
		if !sel(w) {
			continue
		}
		if _, ok := c[w.Key]; ok {
			out = append(out, Violation{Kind: "not-rolled-back", Site: site, Key: w.Key,
				Msg: fmt.Sprintf("%s write via site %d (outcome %s) survived", w.Tag, w.Via, w.Outcome)})
		}
	}
	return out
}

// CheckConverged: every board holds exactly the reference board's content
// (guarantee 4, by full comparison).
func CheckConverged(ref uint16, contents map[uint16]Content) []Violation {
	rc, ok := contents[ref]
	if !ok {
		return []Violation{{Kind: "diverged", Site: ref, Msg: "reference board has no content"}}
	}
	var out []Violation
	for _, site := range sortedSites(contents) {
		if site == ref {
			continue
		}
		c := contents[site]
		var missing, extra, differ []string
		for k, v := range rc {
			got, ok := c[k]
			if !ok {
				missing = append(missing, k)
			} else if got != v {
				differ = append(differ, k)
			}
		}
		for k := range c {
			if _, ok := rc[k]; !ok {
				extra = append(extra, k)
			}
		}
		if len(missing)+len(extra)+len(differ) > 0 {
			out = append(out, Violation{Kind: "diverged", Site: site, Msg: fmt.Sprintf(
				"vs master %d (%d keys): %d missing %s, %d extra %s, %d differ %s", ref, len(rc),
				len(missing), firstKeys(missing), len(extra), firstKeys(extra), len(differ), firstKeys(differ))})
		}
	}
	return out
}

func firstKeys(ks []string) string {
	if len(ks) == 0 {
		return ""
	}
	sort.Strings(ks)
	if len(ks) > 3 {
		return fmt.Sprintf("%q...", ks[:3])
	}
	return fmt.Sprintf("%q", ks)
}

func sortedSites[V any](m map[uint16]V) []uint16 {
	out := make([]uint16, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func sortViolations(vs []Violation) {
	sort.Slice(vs, func(i, j int) bool {
		if vs[i].Site != vs[j].Site {
			return vs[i].Site < vs[j].Site
		}
		return vs[i].Key < vs[j].Key
	})
}

// LeaseSample is one stat of one board taken between Sent and Recv.
type LeaseSample struct {
	Site       uint16
	Sent, Recv time.Time
	Master     bool // the board said it is master
	Valid      bool // ... holding valid leases
	Gen        uint32
}

// CheckLeases: no two boards reported being master with valid leases in
// stats whose request windows overlap (guarantee 3, as far as sampling can
// see: a lease handover leaves a gap of at least the lease timeout, far
// wider than a stat round trip).
func CheckLeases(samples []LeaseSample) []Violation {
	var held []LeaseSample
	for _, s := range samples {
		if s.Master && s.Valid {
			held = append(held, s)
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].Sent.Before(held[j].Sent) })
	var out []Violation
	for i := range held {
		for j := i + 1; j < len(held) && held[j].Sent.Before(held[i].Recv); j++ {
			if held[j].Site == held[i].Site {
				continue
			}
			out = append(out, Violation{Kind: "two-leased-masters", Site: held[j].Site, Msg: fmt.Sprintf(
				"site %d (gen %d) and site %d (gen %d) both master with valid leases in overlapping stats at %s",
				held[i].Site, held[i].Gen, held[j].Site, held[j].Gen, held[j].Sent.Format("15:04:05.000000"))})
		}
	}
	return out
}

// Report gathers a scenario's violations.
type Report struct {
	mu         sync.Mutex
	violations []Violation
	missing    []string
}

// Add records violations.
func (r *Report) Add(vs ...Violation) {
	r.mu.Lock()
	r.violations = append(r.violations, vs...)
	r.mu.Unlock()
}

// Missing records a check that could not run because the daemon lacks a
// feature; it is reported, not counted as a pass.
func (r *Report) Missing(feature string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.missing {
		if m == feature {
			return
		}
	}
	r.missing = append(r.missing, feature)
}

// Violations returns what was recorded.
func (r *Report) Violations() []Violation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Violation(nil), r.violations...)
}

// MissingFeatures returns the checks that could not run.
func (r *Report) MissingFeatures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.missing...)
}

// Count returns how many violations of kind were recorded ("" = all).
func (r *Report) Count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.violations {
		if kind == "" || v.Kind == kind {
			n++
		}
	}
	return n
}

// Summary lists up to n violations, one a line.
func (r *Report) Summary(n int) string {
	vs := r.Violations()
	var b strings.Builder
	for i, v := range vs {
		if i == n {
			fmt.Fprintf(&b, "... and %d more\n", len(vs)-n)
			break
		}
		b.WriteString(v.String())
		b.WriteByte('\n')
	}
	return b.String()
}
