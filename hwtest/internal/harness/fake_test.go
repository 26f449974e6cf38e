package harness

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// fakeBoard serves the boardd socket protocol from a map, so the client,
// the writer and the checkers can be tested without a daemon. It plays a
// master whose every commit is Perm unless notPerm says otherwise.
type fakeBoard struct {
	t    *testing.T
	path string
	ln   net.Listener

	mu      sync.Mutex
	data    map[string]string
	lsn     uint64
	notPerm func(key string) bool
	refuse  func(key string) bool // answer "unavail" without committing
	stat    map[string]any
	events  chan string // raw event JSON objects streamed to "events" subscribers
	done    chan struct{}
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

func newFakeBoard(t *testing.T) *fakeBoard {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "f.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBoard{t: t, path: path, ln: ln, data: map[string]string{},
		stat: map[string]any{"site": 1, "role": "master", "master": 1, "gen": 3}, conns: map[net.Conn]bool{}, events: make(chan string, 16), done: make(chan struct{})}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		close(f.done)
		ln.Close()
		f.mu.Lock()
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeBoard) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = true
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fakeBoard) serve(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	enc := json.NewEncoder(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			_ = enc.Encode(Response{Code: CodeUsage, Err: err.Error()})
			return
		}
		if req.Op == "events" {
			f.streamEvents(c)
			return
		}
		if enc.Encode(f.handle(req)) != nil {
			return
		}
	}
}

func (f *fakeBoard) handle(req Request) Response {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req.Op {
	case "stat":
		st := map[string]any{}
		for k, v := range f.stat {
			if k != "content_hash" || !req.NoHash {
				st[k] = v
			}
		}
		raw, _ := json.Marshal(st)
		return Response{Stat: raw}
	case "put":
		if f.refuse != nil && f.refuse(string(req.Key)) {
			return Response{Code: CodeUnavail, Err: "no master"}
		}
		f.lsn += 100
		f.data[string(req.Key)] = string(req.Value)
		perm := f.notPerm == nil || !f.notPerm(string(req.Key))
		return Response{Commit: &Commit{LSN: f.lsn, Perm: perm}}
	case "get":
		v, ok := f.data[string(req.Key)]
		if !ok {
			return Response{Code: CodeNotFound, Err: "key not found"}
		}
		return Response{Value: []byte(v)}
	case "scan":
		var keys []string
		for k := range f.data {
			if k >= string(req.Start) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		var resp Response
		for _, k := range keys {
			if len(resp.Items) == req.Limit {
				resp.More = true
				break
			}
			resp.Items = append(resp.Items, KV{Key: []byte(k), Value: []byte(f.data[k])})
		}
		return resp
	}
	return Response{Code: CodeUsage, Err: "unknown op " + req.Op}
}

func (f *fakeBoard) content() Content {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := Content{}
	for k, v := range f.data {
		c[k] = v
	}
	return c
}

// newLineServer answers every connection's first line with reply, verbatim.
func newLineServer(t *testing.T, path, reply string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := bufio.NewReader(c).ReadBytes('\n'); err == nil {
				_, _ = c.Write([]byte(reply))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln
}

// streamEvents acknowledges a subscription and forwards f.events until the
// connection breaks or the fake closes.
// Lines are written raw so that a test can stream a malformed event.
func (f *fakeBoard) streamEvents(w net.Conn) {
	if _, err := w.Write([]byte("{}\n")); err != nil {
		return
	}
	for {
		var raw string
		select {
		case raw = <-f.events:
		case <-f.done:
			return
		}
		if _, err := w.Write([]byte(`{"event":` + raw + "}\n")); err != nil {
			return
		}
	}
}
