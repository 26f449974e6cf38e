package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// backend is what the socket server needs from a board; *board.Board
// provides it through boardBackend, tests through a fake.
type backend interface {
	// Get reads key; leased asks for an authoritative read on the master
	// (board.ViewLeased). errNotFound when absent.
	Get(db string, key []byte, leased bool) ([]byte, error)
	Scan(db string, prefix, start, end []byte, limit int) ([]kv, bool, error)
	Apply(ctx context.Context, ops ...board.Op) (board.Commit, error)
	Stat(withHash bool) board.Stat
	Elect(ctx context.Context) (uint16, error)
	// StepDown makes a master a replica (board.StepDown); the group then
	// elects, and a board of higher priority equally current wins.
	StepDown(ctx context.Context) error
	Events() <-chan board.Event
}

const (
	defaultOpTimeout = 5 * time.Second
	maxScanLimit     = 100000
	maxConns         = 64
	subscriberQueue  = 256
)

// server serves the local unix socket.
type server struct {
	be   backend
	log  *slog.Logger
	ln   net.Listener
	path string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	subs   map[chan board.Event]struct{}
	closed bool
	doneCh chan struct{}
	wg     sync.WaitGroup
}

// listen creates the socket (mode 0600; the directory 0700 if created) and
// removes a stale one left by a dead process.
func listen(path string, be backend, log *slog.Logger) (*server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("boardd: creating socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("boardd: another boardd is serving %s; stop it or pick another -sock", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("boardd: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("boardd: chmod %s: %w", path, err)
	}
	s := &server{be: be, log: log, ln: ln, path: path,
		conns: map[net.Conn]struct{}{}, subs: map[chan board.Event]struct{}{}, doneCh: make(chan struct{})}
	s.wg.Add(2)
	go s.acceptLoop()
	go s.fanout()
	return s, nil
}

// Close stops accepting, closes every connection and removes the socket.
func (s *server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.doneCh)
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	_ = os.Remove(s.path)
	s.wg.Wait()
	return err
}

func (s *server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed || len(s.conns) >= maxConns {
			s.mu.Unlock()
			_ = json.NewEncoder(c).Encode(response{Code: codeUnavail, Err: fmt.Sprintf("boardd: too many connections (%d); retry later", maxConns)})
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

// fanout copies board events to every "events" subscriber; a slow
// subscriber loses events rather than holding up others.
func (s *server) fanout() {
	defer s.wg.Done()
	ch := s.be.Events()
	for {
		var ev board.Event
		var ok bool
		select {
		case ev, ok = <-ch:
		case <-s.doneCh:
			return
		}
		if !ok {
			return
		}
		s.mu.Lock()
		for sub := range s.subs {
			select {
			case sub <- ev:
			default:
			}
		}
		s.mu.Unlock()
	}
}

func (s *server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	enc := json.NewEncoder(w)
	for {
		line, err := readLine(r)
		if err != nil {
			return
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			_ = enc.Encode(errResponse(fmt.Errorf("%w: malformed request: %v", errUsage, err)))
			_ = w.Flush()
			return
		}
		if req.Op == "events" {
			s.streamEvents(c, w, enc)
			return
		}
		resp := s.handle(req)
		if enc.Encode(resp) != nil || w.Flush() != nil {
			return
		}
	}
}

func (s *server) streamEvents(c net.Conn, w *bufio.Writer, enc *json.Encoder) {
	sub := make(chan board.Event, subscriberQueue)
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()
	// The client never sends more; a read returning means it hung up.
	gone := make(chan struct{})
	go func() {
		var b [1]byte
		_, _ = c.Read(b[:])
		close(gone)
	}()
	// Acknowledge the subscription so clients know they are live.
	if enc.Encode(response{}) != nil || w.Flush() != nil {
		return
	}
	for {
		select {
		case ev := <-sub:
			if enc.Encode(response{Event: &ev}) != nil || w.Flush() != nil {
				return
			}
		case <-gone:
			return
		}
	}
}

func (s *server) handle(req request) response {
	timeout := defaultOpTimeout
	if req.TimeoutMS > 0 {
		timeout = min(time.Duration(req.TimeoutMS)*time.Millisecond, time.Hour)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	needKey := func() error {
		if req.DB == "" {
			return fmt.Errorf("%w: %s needs a database name", errUsage, req.Op)
		}
		if req.Op != "scan" && len(req.Key) == 0 {
			return fmt.Errorf("%w: %s needs a key", errUsage, req.Op)
		}
		return nil
	}
	switch req.Op {
	case "get":
		if err := needKey(); err != nil {
			return errResponse(err)
		}
		v, err := s.be.Get(req.DB, req.Key, req.Leased)
		if err != nil {
			return errResponse(err)
		}
		return response{Value: v}
	case "put", "del":
		if err := needKey(); err != nil {
			return errResponse(err)
		}
		op := board.Put(req.DB, req.Key, req.Value)
		if req.Op == "del" {
			op = board.Delete(req.DB, req.Key)
		}
		c, err := s.be.Apply(ctx, op)
		if err != nil {
			return errResponse(err)
		}
		return response{Commit: &commitJSON{LSN: c.LSN, Perm: c.Perm}}
	case "scan":
		if err := needKey(); err != nil {
			return errResponse(err)
		}
		limit := req.Limit
		if limit <= 0 || limit > maxScanLimit {
			limit = maxScanLimit
		}
		items, more, err := s.be.Scan(req.DB, req.Prefix, req.Start, req.End, limit)
		if err != nil {
			return errResponse(err)
		}
		return response{Items: items, More: more}
	case "stat":
		st := s.be.Stat(!req.NoHash)
		return response{Stat: &st}
	case "elect":
		m, err := s.be.Elect(ctx)
		if err != nil {
			return errResponse(err)
		}
		return response{Master: m}
	case "stepdown":
		if err := s.be.StepDown(ctx); err != nil {
			return errResponse(err)
		}
		return response{}
	}
	return errResponse(fmt.Errorf("%w: unknown op %q; use get, put, del, scan, stat, elect, stepdown or events", errUsage, req.Op))
}
