package bptest

import (
	"testing"

	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// TestSuiteRuns checks the comparison completes and measures something for
// every variant; it asserts no timing (that is the benchmark's job).
func TestSuiteRuns(t *testing.T) {
	c := newChassis(t)
	rep, err := Suite(c.Boards[0], c.Boards[1], SuiteConfig{RoundTrips: 50, StreamMsgs: 500, Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{VariantBare, VariantRaw, VariantRawNoBPF, VariantUDP} {
		r := rep.Get(v)
		if r == nil || len(r.RTT[64]) != 50 || len(r.RTT[1400]) != 50 || r.Stream.Sent != 500 || r.Stream.Received == 0 {
			t.Fatalf("variant %s incomplete: %+v", v, r)
		}
	}
	t.Logf("\n%s", rep)
}

// BenchmarkSuite runs the full comparison once and reports the ratios.
// go test -run XXX -bench Suite -benchtime 1x ./backplane/bptest
func BenchmarkSuite(b *testing.B) {
	c := newChassis(b)
	for i := 0; i < b.N; i++ {
		rep, err := Suite(c.Boards[0], c.Boards[1], SuiteConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("\n%s", rep)
		b.ReportMetric(rep.RTTRatio(VariantRaw, VariantBare, 64), "raw/bare-rtt64")
		b.ReportMetric(rep.RTTRatio(VariantRaw, VariantBare, 1400), "raw/bare-rtt1400")
		b.ReportMetric(rep.StreamRatio(VariantRaw, VariantBare), "raw/bare-stream")
		b.ReportMetric(rep.RTTRatio(VariantRaw, VariantRawNoBPF, 64), "filter-rtt64")
	}
}

// newChassis makes a two-board chassis named "bpb…", first removing the
// namespaces of killed earlier runs of this package (only dead ones).
func newChassis(t testing.TB) *rig.Chassis {
	t.Helper()
	rig.RequireRoot(t)
	_, _ = rig.SweepStale("bpb")
	return rig.NewForTest(t, rig.Options{Boards: 2, Prefix: "bpb"})
}
