package rig

import (
	"testing"
)

// FuzzParseMarker: any bytes in a marker file give a marker or an error,
// never a panic, and a parsed marker formats back to an equal one.
func FuzzParseMarker(f *testing.F) {
	f.Add([]byte("boardha-rig pid=1234 start=5678\n"))
	f.Add([]byte("boardha-rig pid=-1 start=5678\n"))
	f.Add([]byte("boardha-rig pid=1 start=18446744073709551615"))
	f.Add([]byte(""))
	f.Add([]byte("boardha-rig pid= start="))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMarker(b)
		if err != nil {
			return
		}
		if m.pid <= 0 {
			t.Fatalf("parsed non-positive pid %d from %q", m.pid, b)
		}
		back, err := parseMarker(formatMarker(m))
		if err != nil || back != m {
			t.Fatalf("round trip of %+v: %+v, %v", m, back, err)
		}
	})
}

// FuzzParseStatStart: /proc/<pid>/stat parsing never panics, whatever the
// command name contains.
func FuzzParseStatStart(f *testing.F) {
	f.Add([]byte("1234 (go test) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 19 20\n"))
	f.Add([]byte("1 (a) b) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42"))
	f.Add([]byte("no paren"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStatStart(b)
	})
}

// FuzzSplitID: name matching for SweepStale never panics and only accepts
// "<prefix><4 lowercase hex>" ids.
func FuzzSplitID(f *testing.F) {
	f.Add("bh12ab-bp", "bh")
	f.Add("bh12ab-b17", "bh")
	f.Add("bhx2ab-bp", "bh")
	f.Add("bh12a", "bh")
	f.Fuzz(func(t *testing.T, name, prefix string) {
		id, ok := splitID(name, prefix)
		if !ok {
			return
		}
		if len(id) != len(prefix)+idHexLen || id[:len(prefix)] != prefix {
			t.Fatalf("splitID(%q, %q) = %q", name, prefix, id)
		}
		isChassisNS(name, id)
	})
}

func TestParseStatStart(t *testing.T) {
	got, err := parseStatStart([]byte("1 (a) b) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42 19"))
	if err != nil || got != 42 {
		t.Fatalf("parseStatStart = %d, %v; want 42", got, err)
	}
	for _, bad := range []string{"", "x", "1 (a) R 1 2"} {
		if _, err := parseStatStart([]byte(bad)); err == nil {
			t.Errorf("parseStatStart(%q) succeeded", bad)
		}
	}
}

func TestSplitIDAndNames(t *testing.T) {
	for _, c := range []struct {
		name, prefix, id string
		ok, ns           bool
	}{
		{"bh12ab-bp", "bh", "bh12ab", true, true},
		{"bh12ab-b3", "bh", "bh12ab", true, true},
		{"bh12ab-b", "bh", "bh12ab", true, false},
		{"bh12ab-bx", "bh", "bh12ab", true, false},
		{"bh12ab", "bh", "bh12ab", true, false},
		{"bha12ab-bp", "bh", "", false, false}, // prefix "bha" family, not "bh"
		{"bht12ab-bp", "bh", "", false, false},
		{"bh12AB-bp", "bh", "", false, false},
		{"xx12ab-bp", "bh", "", false, false},
	} {
		id, ok := splitID(c.name, c.prefix)
		if id != c.id || ok != c.ok {
			t.Errorf("splitID(%q, %q) = %q, %v; want %q, %v", c.name, c.prefix, id, ok, c.id, c.ok)
		}
		if ok && isChassisNS(c.name, id) != c.ns {
			t.Errorf("isChassisNS(%q, %q) = %v, want %v", c.name, id, !c.ns, c.ns)
		}
	}
}
