package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// The local socket protocol: newline-delimited JSON, one request per
// connection line and one response line per request (a stream of responses
// for "events", ended by the client closing the connection). Byte strings
// travel base64-encoded ([]byte in JSON).

// maxLine bounds one protocol line; a value is at most ~1 MiB.
const maxLine = 4 << 20

type request struct {
	Op     string `json:"op"` // get put del scan stat elect events
	DB     string `json:"db,omitempty"`
	Key    []byte `json:"key,omitempty"`
	Value  []byte `json:"value,omitempty"`
	Prefix []byte `json:"prefix,omitempty"`
	Start  []byte `json:"start,omitempty"` // scan: first key (inclusive)
	End    []byte `json:"end,omitempty"`   // scan: stop before this key
	Limit  int    `json:"limit,omitempty"`
	// TimeoutMS bounds the server-side work (writes, elect); 0 = server default.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Leased: get reads authoritatively on the master (ViewLeased).
	Leased bool `json:"leased,omitempty"`
	// NoHash: stat skips the content hash (it reads every key), for
	// frequent polls.
	NoHash bool `json:"nohash,omitempty"`
}

// Response codes; they select the client's exit status.
const (
	codeOK       = ""
	codeUsage    = "usage"    // exit 2
	codeNotFound = "notfound" // exit 3
	codeUnavail  = "unavail"  // exit 4: no master, not master, lockout, closed, timeout
	codeError    = "error"    // exit 1
)

type kv struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

type commitJSON struct {
	LSN  uint64 `json:"lsn"`
	Perm bool   `json:"perm"`
}

type response struct {
	Code   string       `json:"code,omitempty"`
	Err    string       `json:"error,omitempty"`
	Value  []byte       `json:"value,omitempty"`
	Commit *commitJSON  `json:"commit,omitempty"`
	Items  []kv         `json:"items,omitempty"`
	More   bool         `json:"more,omitempty"` // scan stopped at the limit
	Stat   *board.Stat  `json:"stat,omitempty"`
	Event  *board.Event `json:"event,omitempty"`
	Master uint16       `json:"master,omitempty"`
}

// errResponse classifies err for the client's exit status.
func errResponse(err error) response {
	code := codeError
	switch {
	case errors.Is(err, errNotFound):
		code = codeNotFound
	case errors.Is(err, errUsage):
		code = codeUsage
	case errors.Is(err, board.ErrNotMaster), errors.Is(err, board.ErrUnavail),
		errors.Is(err, board.ErrLockout), errors.Is(err, board.ErrClosed),
		errors.Is(err, board.ErrLeaseExpired), errors.Is(err, board.ErrDupMaster),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, board.ErrNotStarted):
		code = codeUnavail
	}
	return response{Code: code, Err: err.Error()}
}

var (
	errNotFound = errors.New("boardd: key not found")
	errUsage    = errors.New("boardd: bad request")
)

// remoteError carries a server error to the client with its code.
type remoteError struct{ code, msg string }

func (e *remoteError) Error() string { return e.msg }

// defaultSock is where `boardd run` listens unless -sock or $BOARDHA_SOCK say
// otherwise: /run/boardha/<group>-<site>.sock, or under the user's runtime
// directory when /run/boardha cannot be created (not root).
func defaultSock(group string, site uint16) string {
	if s := os.Getenv("BOARDHA_SOCK"); s != "" {
		return s
	}
	name := fmt.Sprintf("%s-%d.sock", group, site)
	if os.Geteuid() == 0 {
		return filepath.Join("/run/boardha", name)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "boardha", name)
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("boardha-%d", os.Getuid()), name)
}

// client is one connection to a boardd socket.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	enc  *json.Encoder
}

func dial(ctx context.Context, path string) (*client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, &remoteError{codeUnavail, fmt.Sprintf("boardd: cannot reach the board at %s (%v); is `boardd run` running? set -sock or $BOARDHA_SOCK", path, err)}
	}
	return &client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), enc: json.NewEncoder(conn)}, nil
}

func (c *client) Close() error { return c.conn.Close() }

func (c *client) send(req request) error {
	if err := c.enc.Encode(req); err != nil {
		return &remoteError{codeUnavail, fmt.Sprintf("boardd: sending request: %v", err)}
	}
	return nil
}

func (c *client) recv() (response, error) {
	var resp response
	line, err := readLine(c.r)
	if err != nil {
		return resp, &remoteError{codeUnavail, fmt.Sprintf("boardd: reading response: %v", err)}
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, &remoteError{codeError, fmt.Sprintf("boardd: malformed response: %v", err)}
	}
	if resp.Code != codeOK {
		return resp, &remoteError{resp.Code, resp.Err}
	}
	return resp, nil
}

// call sends one request and waits for its response, bounded by ctx.
func (c *client) call(ctx context.Context, req request) (response, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
		if req.TimeoutMS == 0 {
			req.TimeoutMS = max(1, time.Until(dl).Milliseconds())
		}
	}
	if err := c.send(req); err != nil {
		return response{}, err
	}
	return c.recv()
}

// readLine reads one newline-terminated line of at most maxLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("line longer than %d bytes", maxLine)
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}
