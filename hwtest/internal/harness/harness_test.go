package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shortTempDir is a temporary directory with a short path: unix socket
// paths are limited to 107 bytes and t.TempDir embeds the test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hwt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestClientOps(t *testing.T) {
	f := newFakeBoard(t)
	f.stat["content_hash"] = "0x1f"
	f.stat["counters"] = map[string]any{"frames_dropped": 7, "drops": map[string]any{"bad_crc": 3, "foreign_group": 4}}
	c := NewClient(f.path)
	defer c.Close()
	ctx := ctxT(t, 10*time.Second)

	cm, err := c.Put(ctx, "kv", []byte("a"), []byte("1"))
	if err != nil || !cm.Perm || cm.LSN == 0 {
		t.Fatalf("put: %+v %v", cm, err)
	}
	v, err := c.Get(ctx, "kv", []byte("a"), false)
	if err != nil || string(v) != "1" {
		t.Fatalf("get: %q %v", v, err)
	}
	if _, err := c.Get(ctx, "kv", []byte("zz"), false); !IsCode(err, CodeNotFound) {
		t.Fatalf("get of a missing key: %v, want code %q", err, CodeNotFound)
	}
	// More keys than one scan page, with keys that are prefixes of each
	// other, so the "next key after last" continuation is exercised.
	want := Content{"a": "1"}
	for i := range 23 {
		k := strings.Repeat("k", i%4+1) + fmt.Sprint(i)
		want[k] = fmt.Sprint(i)
		if _, err := c.Put(ctx, "kv", []byte(k), []byte(want[k])); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.ScanAll(ctx, "kv", 5)
	if err != nil {
		t.Fatal(err)
	}
	if vs := CheckConverged(1, map[uint16]Content{1: want, 2: Content(got)}); len(vs) != 0 {
		t.Fatalf("paged scan differs from what was written: %v", vs)
	}

	st, err := c.Stat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsMaster() || st.Gen != 3 || st.Counters.FramesDropped != 7 {
		t.Fatalf("stat decoded as %+v", st)
	}
	if _, ok := st.ContentHash(); ok {
		t.Fatal("Stat asked for (and got) the content hash; polling must not make the board read every key")
	}
	st, err = c.StatWithHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := st.ContentHash(); !ok || h != 0x1f {
		t.Fatalf("ContentHash = %#x, %v; want 0x1f, true", h, ok)
	}
	drops, ok := st.DropsByReason()
	if !ok || drops["bad_crc"] != 3 || drops["foreign_group"] != 4 {
		t.Fatalf("DropsByReason = %v, %v", drops, ok)
	}
	delete(f.stat, "content_hash")
	f.stat["counters"] = map[string]any{"frames_dropped": 7}
	st, err = c.StatWithHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.ContentHash(); ok {
		t.Fatal("ContentHash reported present in a stat without one")
	}
	if _, ok := st.DropsByReason(); ok {
		t.Fatal("DropsByReason reported present in a stat without them")
	}
}

func TestClientUnreachableAndRedial(t *testing.T) {
	dir := shortTempDir(t)
	c := NewClient(filepath.Join(dir, "none.sock"))
	_, err := c.Stat(ctxT(t, 5*time.Second))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("stat on a missing socket: %v, want ErrUnreachable", err)
	}
	f := newFakeBoard(t)
	c = NewClient(f.path)
	if _, err := c.Stat(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Break the connection under the client: the next call fails
	// unreachable or succeeds on a fresh connection, never hangs or
	// returns another request's response.
	f.mu.Lock()
	for cn := range f.conns {
		cn.Close()
	}
	f.mu.Unlock()
	_, err = c.Stat(ctxT(t, 5*time.Second))
	if err != nil && !errors.Is(err, ErrUnreachable) {
		t.Fatalf("stat after the server dropped the connection: %v", err)
	}
	if _, err := c.Stat(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("stat after redial: %v", err)
	}
}

func TestClientMalformedResponse(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "m.sock")
	newLineServer(t, path, "this is not json\n")
	c := NewClient(path)
	defer c.Close()
	_, err := c.Stat(ctxT(t, 5*time.Second))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("malformed response gave %v, want ErrProtocol", err)
	}
}

// TestWriterAndCheckersCatchPlantedLoss runs the writer against the fake,
// then plants each kind of fault in the final content and checks that the
// checkers name exactly it.
func TestWriterAndCheckersCatchPlantedLoss(t *testing.T) {
	f := newFakeBoard(t)
	f.notPerm = func(k string) bool { return strings.HasSuffix(k, "7") }
	f.refuse = func(k string) bool { return strings.HasSuffix(k, "3") }
	var h History
	w := &Writer{DB: "kv", Prefix: "t/", Workers: 3, ValueSize: 40,
		Pick: func(worker, attempt int) (Target, bool) { return Target{Site: 1, Sock: f.path}, true }}
	ctx := ctxT(t, 20*time.Second)
	if err := w.Start(ctx, &h); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, &h); err == nil {
		t.Fatal("a second Start succeeded")
	}
	if err := WaitFor(ctx, "200 perm writes", time.Millisecond, func(context.Context) (bool, error) {
		return h.PermCount() >= 200, nil
	}); err != nil {
		t.Fatal(err)
	}
	w.Stop()
	perm, notPerm, failed := h.Counts()
	if notPerm == 0 || failed == 0 {
		t.Fatalf("counts perm=%d notperm=%d failed=%d: the fake's not-perm and refused writes were not recorded", perm, notPerm, failed)
	}
	ws := h.Writes()
	for _, wr := range ws {
		if len(wr.Value) < 40 || !strings.HasPrefix(wr.Value, wr.Key) {
			t.Fatalf("value %q of %q: not padded or not derived from the key", wr.Value, wr.Key)
		}
	}
	final := f.content()
	if vs := append(CheckDurable(ws, 1, final), CheckNoPhantom(ws, "t/", 1, final)...); len(vs) != 0 {
		t.Fatalf("clean history flagged: %v", vs)
	}

	var lost, changed Write
	for _, wr := range ws {
		if wr.Outcome == Perm && lost.Key == "" {
			lost = wr
		} else if wr.Outcome == Perm && changed.Key == "" {
			changed = wr
		}
	}
	planted := Content{}
	for k, v := range final {
		planted[k] = v
	}
	delete(planted, lost.Key)
	planted[changed.Key] = "garbage"
	planted["t/999999999"] = "never written"
	planted["other/x"] = "outside the prefix"

	vs := CheckDurable(ws, 2, planted)
	if len(vs) != 2 || !hasViolation(vs, "lost", lost.Key) || !hasViolation(vs, "wrong-value", changed.Key) {
		t.Fatalf("CheckDurable on planted faults: %v; want lost %q and wrong-value %q", vs, lost.Key, changed.Key)
	}
	vs = CheckNoPhantom(ws, "t/", 2, planted)
	if len(vs) != 2 || !hasViolation(vs, "phantom", "t/999999999") || !hasViolation(vs, "wrong-value", changed.Key) {
		t.Fatalf("CheckNoPhantom on planted faults: %v", vs)
	}
	vs = CheckConverged(1, map[uint16]Content{1: final, 2: planted, 3: final})
	if len(vs) != 1 || vs[0].Site != 2 || !strings.Contains(vs[0].Msg, "1 missing") ||
		!strings.Contains(vs[0].Msg, "2 extra") || !strings.Contains(vs[0].Msg, "1 differ") {
		t.Fatalf("CheckConverged: %v", vs)
	}
	notPermKeys := func(w Write) bool { return w.Outcome == NotPerm }
	if vs := CheckAbsent(ws, notPermKeys, 1, final); len(vs) != notPerm {
		t.Fatalf("CheckAbsent found %d surviving not-perm writes, want all %d", len(vs), notPerm)
	}
	if vs := CheckAbsent(ws, notPermKeys, 1, Content{}); len(vs) != 0 {
		t.Fatalf("CheckAbsent on empty content: %v", vs)
	}
}

func hasViolation(vs []Violation, kind, key string) bool {
	for _, v := range vs {
		if v.Kind == kind && v.Key == key {
			return true
		}
	}
	return false
}

func TestFirstPermStartedAfter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var h History
	h.Add(Write{Key: "a", Outcome: Perm, Start: t0.Add(-time.Second), End: t0.Add(time.Millisecond)}) // started before
	h.Add(Write{Key: "b", Outcome: Failed, Start: t0.Add(time.Millisecond), End: t0.Add(2 * time.Millisecond)})
	h.Add(Write{Key: "c", Outcome: Perm, Start: t0.Add(5 * time.Millisecond), End: t0.Add(90 * time.Millisecond)})
	h.Add(Write{Key: "d", Outcome: Perm, Start: t0.Add(10 * time.Millisecond), End: t0.Add(40 * time.Millisecond)})
	h.Add(Write{Key: "e", Outcome: NotPerm, Start: t0.Add(10 * time.Millisecond), End: t0.Add(20 * time.Millisecond)})
	w, ok := h.FirstPermStartedAfter(t0)
	if !ok || w.Key != "d" {
		t.Fatalf("got %+v %v, want d", w, ok)
	}
	if _, ok := h.FirstPermStartedAfter(t0.Add(time.Hour)); ok {
		t.Fatal("found a write after every write")
	}
}

func TestCheckLeases(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := []LeaseSample{
		{Site: 1, Sent: at(0), Recv: at(2), Master: true, Valid: true, Gen: 1},
		{Site: 2, Sent: at(0), Recv: at(3), Master: false},
		{Site: 1, Sent: at(1), Recv: at(4), Master: true, Valid: true, Gen: 1},  // same site overlaps itself
		{Site: 2, Sent: at(3), Recv: at(5), Master: true, Valid: false, Gen: 2}, // master without lease
		{Site: 2, Sent: at(30), Recv: at(31), Master: true, Valid: true, Gen: 2},
		{Site: 1, Sent: at(30), Recv: at(31), Master: true, Valid: false, Gen: 1},
	}
	if vs := CheckLeases(ok); len(vs) != 0 {
		t.Fatalf("clean samples flagged: %v", vs)
	}
	bad := append(ok, LeaseSample{Site: 3, Sent: at(29), Recv: at(30).Add(time.Microsecond), Master: true, Valid: true, Gen: 3})
	vs := CheckLeases(bad)
	if len(vs) != 1 || vs[0].Kind != "two-leased-masters" {
		t.Fatalf("overlapping leased masters: %v", vs)
	}
}

func TestAgreedMaster(t *testing.T) {
	mk := func(role string, master uint16) Stat { return Stat{Role: role, Master: master} }
	sites := []uint16{1, 2, 3}
	cases := []struct {
		name  string
		stats map[uint16]Stat
		want  uint16
	}{
		{"agreed", map[uint16]Stat{1: mk("master", 1), 2: mk("client", 1), 3: mk("client", 1)}, 1},
		{"missing board", map[uint16]Stat{1: mk("master", 1), 2: mk("client", 1)}, 0},
		{"two masters", map[uint16]Stat{1: mk("master", 1), 2: mk("master", 2), 3: mk("client", 1)}, 0},
		{"disagree", map[uint16]Stat{1: mk("master", 1), 2: mk("client", 1), 3: mk("client", 2)}, 0},
		{"no master", map[uint16]Stat{1: mk("client", 0), 2: mk("client", 0), 3: mk("starting", 0)}, 0},
	}
	for _, c := range cases {
		lo := c.stats[2]
		got, ok := AgreedMaster(c.stats, sites)
		if got != c.want || ok != (c.want != 0) {
			t.Errorf("%s: got %d %v, want %d", c.name, got, ok, c.want)
		}
		c.stats[2] = lo
	}
	locked := map[uint16]Stat{1: mk("master", 1), 2: mk("client", 1), 3: mk("client", 1)}
	st := locked[3]
	st.LockedOut = true
	locked[3] = st
	if _, ok := AgreedMaster(locked, sites); ok {
		t.Error("a locked-out replica counted as agreeing")
	}
}

func TestSupervisorKillsEverything(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary:", err)
	}
	dir := shortTempDir(t)
	var s Supervisor
	var procs []*Proc
	for i := range 3 {
		p, err := s.Start(fmt.Sprint("sleeper", i), exec.Command(sleep, "300"), filepath.Join(dir, fmt.Sprint(i, ".log")))
		if err != nil {
			s.Close()
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	if got := len(s.Live()); got != 3 {
		t.Fatalf("%d live, want 3", got)
	}
	at := procs[0].Kill()
	if at.IsZero() || !procs[0].Exited() {
		t.Fatal("Kill did not reap the process")
	}
	if !procs[0].Kill().IsZero() {
		t.Fatal("second Kill of a dead process sent a signal")
	}
	if err := procs[1].Stop(10 * time.Second); err == nil {
		t.Fatal("sleep killed by SIGTERM reported a clean exit")
	}
	s.Close()
	for _, p := range procs {
		if !p.Exited() {
			t.Fatalf("%s (pid %d) still running after Close", p.Name, p.Pid)
		}
	}
	if _, err := s.Start("late", exec.Command(sleep, "300"), filepath.Join(dir, "late.log")); !errors.Is(err, ErrSupervisorClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	err := WaitFor(ctxT(t, 5*time.Second), "n reaching 3", time.Millisecond, func(context.Context) (bool, error) {
		n++
		return n >= 3, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("WaitFor: %v after %d polls", err, n)
	}
	boom := errors.New("boom")
	err = WaitFor(ctxT(t, 20*time.Millisecond), "never", time.Millisecond, func(context.Context) (bool, error) {
		return false, boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "never") {
		t.Fatalf("WaitFor timeout: %v; want the last error and the condition's name", err)
	}
	polls := 0
	start := time.Now()
	err = WaitFor(ctxT(t, 10*time.Second), "aborted", time.Millisecond, func(context.Context) (bool, error) {
		polls++
		return false, Abort(boom)
	})
	if !errors.Is(err, boom) || polls != 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("WaitFor with Abort: %v after %d polls", err, polls)
	}
}

func TestStatDecode(t *testing.T) {
	if _, err := DecodeStat(nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("empty stat: %v", err)
	}
	if _, err := DecodeStat(json.RawMessage(`{"site":"x"}`)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad stat: %v", err)
	}
	st, err := DecodeStat(json.RawMessage(`{"site":2,"role":"client","lease":{"enabled":true,"valid":false},"init":{"active":true},"hash":12}`))
	if err != nil || st.Site != 2 || st.IsMaster() || !st.Lease.Enabled || !st.Init.Active {
		t.Fatalf("%+v %v", st, err)
	}
	if h, ok := st.ContentHash(); !ok || h != 12 {
		t.Fatalf("hash %d %v", h, ok)
	}
}

func TestEventLog(t *testing.T) {
	f := newFakeBoard(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var l EventLog
	if err := l.Follow(ctx, 7, f.path); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.events <- `{"type":"client","time":"2026-01-01T00:00:01Z","seq":1}`
	f.events <- `{"type":"elected","time":"2026-01-01T00:00:03Z","seq":2,"gen":4}`
	f.events <- `{"type":"master","time":"2026-01-01T00:00:02Z","seq":3,"master":7}`
	f.events <- `{"type":`
	f.events <- `{"type":"master","time":"2026-01-01T00:00:09Z","seq":4}`
	if err := WaitFor(ctxT(t, 10*time.Second), "4 events", time.Millisecond, func(context.Context) (bool, error) {
		return len(l.Events()) == 4, nil
	}); err != nil {
		t.Fatal(err)
	}
	ev, ok := l.First(7, t0.Add(1500*time.Millisecond), "elected", "master")
	if !ok || ev.Type != "master" || ev.Seq != 3 || ev.Board != 7 || ev.Master != 7 {
		t.Fatalf("First = %+v, %v; want the master event of seq 3", ev, ok)
	}
	if _, ok := l.First(8, t0, "master"); ok {
		t.Fatal("First found an event of another board")
	}
	if errs := l.Errors(); len(errs) != 1 || !errors.Is(errs[0], ErrProtocol) {
		t.Fatalf("stream errors %v, want one ErrProtocol for the malformed event", errs)
	}
	cancel()
	l.Wait()
	if err := l.Follow(context.Background(), 9, filepath.Join(shortTempDir(t), "none.sock")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Follow on a missing socket: %v", err)
	}
}
