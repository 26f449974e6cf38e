// Package harness holds the pieces the fault scenarios of package hwtest are
// built from: a client of boardd's local socket, a supervisor that owns the
// boardd processes it starts, a continuous writer that records every commit,
// and the checkers that judge the recorded history against what the boards
// hold at the end.
//
// It speaks boardd's socket protocol (cmd/boardd/proto.go: one JSON request
// per line, one JSON response per line) with its own types so that a change
// on the daemon side shows up here as a decoding or behaviour difference, not
// as a silent agreement through shared code.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Response codes of the socket protocol.
const (
	CodeOK       = ""
	CodeUsage    = "usage"
	CodeNotFound = "notfound"
	CodeUnavail  = "unavail"
	CodeError    = "error"
)

// maxLine bounds one response line, as the daemon does.
const maxLine = 4 << 20

var (
	// ErrUnreachable: the socket could not be dialled or the connection
	// broke (the board is down or restarting).
	ErrUnreachable = errors.New("harness: board socket unreachable; the board is down or restarting")
	// ErrProtocol: the daemon answered something this client cannot decode.
	ErrProtocol = errors.New("harness: malformed response from boardd; the socket protocol changed, update the harness")
)

// RemoteError is an error the daemon reported, with its protocol code.
type RemoteError struct {
	Code string
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("boardd %s: %s", e.Code, e.Msg) }

// IsCode reports whether err is a RemoteError with the given code.
func IsCode(err error, code string) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == code
}

// Request mirrors the daemon's request line.
type Request struct {
	Op        string `json:"op"`
	DB        string `json:"db,omitempty"`
	Key       []byte `json:"key,omitempty"`
	Value     []byte `json:"value,omitempty"`
	Prefix    []byte `json:"prefix,omitempty"`
	Start     []byte `json:"start,omitempty"`
	End       []byte `json:"end,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	// Leased asks for an authoritative read (Board.ViewLeased). Daemons
	// that do not know the field ignore it, so scenarios probe it first.
	Leased bool `json:"leased,omitempty"`
	// NoHash: stat without the content hash, which reads every key;
	// frequent polling must not turn into full scans of the board.
	NoHash bool `json:"nohash,omitempty"`
}

// Commit is a write's result.
type Commit struct {
	LSN  uint64 `json:"lsn"`
	Perm bool   `json:"perm"`
}

// KV is one scanned item.
type KV struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// Response mirrors the daemon's response line. Stat and Event stay raw so
// that callers decode them with DecodeStat / DecodeEvent.
type Response struct {
	Code   string          `json:"code,omitempty"`
	Err    string          `json:"error,omitempty"`
	Value  []byte          `json:"value,omitempty"`
	Commit *Commit         `json:"commit,omitempty"`
	Items  []KV            `json:"items,omitempty"`
	More   bool            `json:"more,omitempty"`
	Stat   json.RawMessage `json:"stat,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`
	Master uint16          `json:"master,omitempty"`
}

// Client is one connection to a board's socket. It redials after a broken
// connection; calls are serialised (one request in flight per Client).
type Client struct {
	Path string

	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// NewClient returns a client for the socket at path; it dials on first use.
func NewClient(path string) *Client { return &Client{Path: path} }

// Close drops the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropLocked()
}

func (c *Client) dropLocked() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.r = nil, nil
	return err
}

// Call sends req and returns the response, bounded by ctx. A daemon error
// comes back as *RemoteError (the response is returned too); a broken or
// refused connection as ErrUnreachable, after which the next call redials.
func (c *Client) Call(ctx context.Context, req Request) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", c.Path)
		if err != nil {
			return Response{}, fmt.Errorf("%w: dial %s: %v", ErrUnreachable, c.Path, err)
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 64<<10)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	if req.TimeoutMS == 0 {
		req.TimeoutMS = max(1, time.Until(dl).Milliseconds())
	}
	_ = c.conn.SetDeadline(dl)
	line, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("harness: encoding request %q: %w", req.Op, err)
	}
	line = append(line, '\n')
	if _, err := c.conn.Write(line); err != nil {
		_ = c.dropLocked()
		return Response{}, fmt.Errorf("%w: sending %s to %s: %v", ErrUnreachable, req.Op, c.Path, err)
	}
	resp, err := readResponse(c.r)
	if err != nil {
		// A half-read connection cannot be reused: the next response
		// line would belong to this request.
		_ = c.dropLocked()
		if errors.Is(err, ErrProtocol) {
			return resp, err
		}
		if ctx.Err() != nil {
			return resp, fmt.Errorf("%w: %s on %s: %w", ErrUnreachable, req.Op, c.Path, ctx.Err())
		}
		return resp, fmt.Errorf("%w: reading %s response from %s: %v", ErrUnreachable, req.Op, c.Path, err)
	}
	if resp.Code != CodeOK {
		return resp, &RemoteError{Code: resp.Code, Msg: resp.Err}
	}
	return resp, nil
}

func readResponse(r *bufio.Reader) (Response, error) {
	var resp Response
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return resp, err
		}
		if len(buf) > maxLine {
			// Skip to the end of the line so the stream stays in step.
			for {
				_, err := r.ReadSlice('\n')
				if err == nil {
					return resp, fmt.Errorf("%w: response line longer than %d bytes", ErrProtocol, maxLine)
				}
				if !errors.Is(err, bufio.ErrBufferFull) {
					return resp, err
				}
			}
		}
	}
	if err := json.Unmarshal(bytes.TrimSpace(buf), &resp); err != nil {
		return resp, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return resp, nil
}

// Stat asks for the board's state, without the content hash (cheap
// enough to poll).
func (c *Client) Stat(ctx context.Context) (Stat, error) {
	resp, err := c.Call(ctx, Request{Op: "stat", NoHash: true})
	if err != nil {
		return Stat{}, err
	}
	return DecodeStat(resp.Stat)
}

// StatWithHash asks for the board's state including its content hash
// (Stat.ContentHash): the daemon reads every key, so call it once at the
// end of a scenario, not in a polling loop.
func (c *Client) StatWithHash(ctx context.Context) (Stat, error) {
	resp, err := c.Call(ctx, Request{Op: "stat"})
	if err != nil {
		return Stat{}, err
	}
	return DecodeStat(resp.Stat)
}

// Put writes key=value in db and returns the commit.
func (c *Client) Put(ctx context.Context, db string, key, value []byte) (Commit, error) {
	resp, err := c.Call(ctx, Request{Op: "put", DB: db, Key: key, Value: value})
	if err != nil {
		return Commit{}, err
	}
	if resp.Commit == nil {
		return Commit{}, fmt.Errorf("%w: put answered without a commit", ErrProtocol)
	}
	return *resp.Commit, nil
}

// Get reads key from db; a missing key is a RemoteError with CodeNotFound.
func (c *Client) Get(ctx context.Context, db string, key []byte, leased bool) ([]byte, error) {
	resp, err := c.Call(ctx, Request{Op: "get", DB: db, Key: key, Leased: leased})
	if err != nil {
		return nil, err
	}
	return resp.Value, nil
}

// Elect asks the board to call an election and returns the master it knows
// afterwards.
func (c *Client) Elect(ctx context.Context) (uint16, error) {
	resp, err := c.Call(ctx, Request{Op: "elect"})
	return resp.Master, err
}

// ScanAll reads every key of db in pages of pageSize, as one map from key to
// value. The pages are separate snapshots: compare boards only once writes
// stopped.
func (c *Client) ScanAll(ctx context.Context, db string, pageSize int) (map[string]string, error) {
	out := map[string]string{}
	var start []byte
	for {
		resp, err := c.Call(ctx, Request{Op: "scan", DB: db, Start: start, Limit: pageSize})
		if err != nil {
			if IsCode(err, CodeNotFound) {
				return out, nil // the database does not exist yet
			}
			return nil, err
		}
		for _, it := range resp.Items {
			out[string(it.Key)] = string(it.Value)
		}
		if !resp.More || len(resp.Items) == 0 {
			return out, nil
		}
		last := resp.Items[len(resp.Items)-1].Key
		start = append(append([]byte{}, last...), 0) // the next key after last
	}
}
