package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// fakeBackend is an in-memory backend for protocol tests.
type fakeBackend struct {
	mu      sync.Mutex
	data    map[string]map[string][]byte
	lsn     uint64
	unavail bool
	events  chan board.Event
	// steppedDown: a stepdown op reached the backend.
	steppedDown bool
}

func newFake() *fakeBackend {
	return &fakeBackend{data: map[string]map[string][]byte{}, events: make(chan board.Event, 16)}
}

func (f *fakeBackend) Get(db string, key []byte, leased bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.data[db][string(key)]
	if !ok {
		return nil, fmt.Errorf("%w: %q", errNotFound, key)
	}
	return v, nil
}

func (f *fakeBackend) Scan(db string, prefix, start, end []byte, limit int) ([]kv, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.data[db] {
		if strings.HasPrefix(k, string(prefix)) && k >= string(start) && (len(end) == 0 || k < string(end)) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	var out []kv
	for _, k := range keys {
		out = append(out, kv{Key: []byte(k), Value: f.data[db][k]})
	}
	return out, more, nil
}

func (f *fakeBackend) Apply(ctx context.Context, ops ...board.Op) (board.Commit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavail {
		return board.Commit{}, fmt.Errorf("no master: %w", board.ErrUnavail)
	}
	for _, op := range ops {
		if f.data[op.DB] == nil {
			f.data[op.DB] = map[string][]byte{}
		}
		if op.Kind == board.OpPut {
			f.data[op.DB][string(op.Key)] = append([]byte{}, op.Value...)
		} else {
			delete(f.data[op.DB], string(op.Key))
		}
	}
	f.lsn += 100
	return board.Commit{LSN: f.lsn, Perm: true}, nil
}

func (f *fakeBackend) Stat(bool) board.Stat {
	return board.Stat{Site: 1, Group: "g", Role: board.RoleMaster, Master: 1, Gen: 2, LSN: f.lsn,
		Sites: []board.SiteStat{{Site: 2, AckedLSN: f.lsn, LastHeard: time.Millisecond, Electable: true}}}
}
func (f *fakeBackend) Elect(ctx context.Context) (uint16, error) { return 1, nil }

func (f *fakeBackend) StepDown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steppedDown = true
	return nil
}
func (f *fakeBackend) Events() <-chan board.Event { return f.events }

func startFake(t *testing.T) (*fakeBackend, string) {
	t.Helper()
	f := newFake()
	sock := filepath.Join(t.TempDir(), "b.sock")
	srv, err := listen(sock, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return f, sock
}

// cli runs the boardd command line in-process.
func cli(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSocketMode(t *testing.T) {
	_, sock := startFake(t)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestClientCommands(t *testing.T) {
	f, sock := startFake(t)
	if code, out, errs := cli("put", "-sock", sock, "route/1", "eth0"); code != 0 || !strings.Contains(out, "perm=true") {
		t.Fatalf("put: code %d out %q err %q", code, out, errs)
	}
	if code, out, _ := cli("get", "route/1", "-sock", sock); code != 0 || out != "eth0\n" {
		t.Fatalf("get: code %d out %q", code, out)
	}
	code, out, _ := cli("get", "-json", "-sock", sock, "route/1")
	var got map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["value"] != "eth0" {
		t.Fatalf("get -json: code %d out %q", code, out)
	}
	if code, _, errs := cli("get", "-sock", sock, "nope"); code != exitNotFound {
		t.Fatalf("get missing: code %d (%s), want %d", code, errs, exitNotFound)
	}
	for i := 0; i < 5; i++ {
		cli("put", "-sock", sock, fmt.Sprintf("route/%d", i+2), "x")
	}
	cli("put", "-sock", sock, "other", "y")
	code, out, _ = cli("scan", "-sock", sock, "-prefix", "route/", "-limit", "3")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.HasPrefix(out, "route/1\teth0\n") {
		t.Fatalf("scan: code %d out %q", code, out)
	}
	if code, out, _ = cli("scan", "-sock", sock, "-json", "-start", "route/3", "-end", "route/5"); code != 0 || !strings.Contains(out, `"key":"route/3"`) || strings.Contains(out, "route/5") {
		t.Fatalf("scan range: code %d out %q", code, out)
	}
	if code, _, _ := cli("del", "-sock", sock, "route/1"); code != 0 {
		t.Fatalf("del: code %d", code)
	}
	if code, _, _ := cli("get", "-sock", sock, "route/1"); code != exitNotFound {
		t.Fatalf("get after del: code %d", code)
	}
	if code, out, _ := cli("stat", "-sock", sock); code != 0 || !strings.Contains(out, "role master") || !strings.Contains(out, "ACKED LSN") {
		t.Fatalf("stat: code %d out %q", code, out)
	}
	var st board.Stat
	if code, out, _ := cli("stat", "-json", "-sock", sock); code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Role != board.RoleMaster {
		t.Fatalf("stat -json: code %d out %q", code, out)
	}
	if code, out, _ := cli("elect", "-sock", sock); code != 0 || out != "master=1\n" {
		t.Fatalf("elect: code %d out %q", code, out)
	}
	if code, out, _ := cli("stepdown", "-sock", sock); code != 0 || out != "stepped down\n" {
		t.Fatalf("stepdown: code %d out %q", code, out)
	}
	f.mu.Lock()
	stepped := f.steppedDown
	f.mu.Unlock()
	if !stepped {
		t.Fatal("stepdown did not reach the board")
	}
	f.mu.Lock()
	f.unavail = true
	f.mu.Unlock()
	if code, _, errs := cli("put", "-sock", sock, "k", "v"); code != exitUnavail || !strings.Contains(errs, "unavailable") {
		t.Fatalf("put without master: code %d err %q", code, errs)
	}
}

func TestClientUsageAndUnavailable(t *testing.T) {
	_, sock := startFake(t)
	cases := []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"get", "-sock", sock}, exitUsage},
		{[]string{"put", "-sock", sock, "k"}, exitUsage},
		{[]string{"get", "-sock", sock, "-bogus", "k"}, exitUsage},
		{[]string{"get", "-sock", sock, "-hex", "zz"}, exitUsage},
		{[]string{"get", "-sock", filepath.Join(t.TempDir(), "none.sock"), "k"}, exitUnavail},
		{[]string{"load", "-sock", sock, "-rate", "0"}, exitUsage},
		{[]string{"rig", "-boards", "1"}, exitUsage},
		{[]string{"run", "-site", "0", "-peers", "1=127.0.0.1:1"}, exitUsage},
		{[]string{"run", "-site", "1", "-peers", "1=127.0.0.1:1", "-ack", "most"}, exitUsage},
		{[]string{"run", "-site", "1", "-peers", "1=127.0.0.1:1", "-heartbeat-send", "1h"}, exitUsage},
	}
	for _, tc := range cases {
		if code, _, errs := cli(tc.args...); code != tc.code {
			t.Errorf("boardd %q: exit %d (%s), want %d", tc.args, code, errs, tc.code)
		}
	}
}

func TestEventsStream(t *testing.T) {
	f, sock := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.send(request{Op: "events"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.recv(); err != nil { // subscription acknowledged
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		f.events <- board.Event{Type: board.EventNewMaster, Seq: uint64(i), Master: 2}
	}
	for i := 1; i <= 3; i++ {
		resp, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Event == nil || resp.Event.Seq != uint64(i) || resp.Event.Type != board.EventNewMaster {
			t.Fatalf("event %d: got %+v", i, resp.Event)
		}
	}
}

func TestMalformedRequest(t *testing.T) {
	_, sock := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, line := range []string{"{not json\n", `{"op":"get"}` + "\n", `{"op":"zap"}` + "\n"} {
		c, err := dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.conn.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		_, err = c.recv()
		var re *remoteError
		if !errors.As(err, &re) || re.code != codeUsage {
			t.Fatalf("%q: got %v, want a usage error", line, err)
		}
		c.Close()
	}
}
