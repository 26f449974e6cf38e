package harness

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Stat is the part of board.Stat (as `boardd stat -json` and the socket's
// "stat" op print it) the scenarios judge. Raw keeps the whole object so
// that fields the daemon may add later (a content hash, per-reason drop
// counters) can be looked up without changing this type.
type Stat struct {
	Site      uint16 `json:"site"`
	Group     string `json:"group"`
	Role      string `json:"role"` // starting, client, master, closed
	Master    uint16 `json:"master"`
	Gen       uint32 `json:"gen"`
	Egen      uint32 `json:"egen"`
	LSN       uint64 `json:"lsn"`
	PermLSN   uint64 `json:"perm_lsn"`
	LockedOut bool   `json:"locked_out"`
	Lease     struct {
		Enabled bool `json:"enabled"`
		Valid   bool `json:"valid"`
	} `json:"lease"`
	Election struct {
		InProgress   bool          `json:"in_progress"`
		Elections    uint64        `json:"elections"`
		LastFailover time.Duration `json:"last_failover_ns"`
		Recovering   bool          `json:"recovering"`
		Witnesses    int           `json:"witnesses"`
		VoteFloorLSN uint64        `json:"vote_floor_lsn"`
	} `json:"election"`
	Init struct {
		Active            bool          `json:"active"`
		PagesDone         uint64        `json:"pages_done"`
		PagesTotal        uint64        `json:"pages_total"`
		Count             uint64        `json:"count"`
		LastDuration      time.Duration `json:"last_duration_ns"`
		LastTotalDuration time.Duration `json:"last_total_duration_ns"`
		PagesReasked      uint64        `json:"pages_reasked"`
		InPlace           bool          `json:"in_place"`
		Restarts          uint64        `json:"restarts"`
		Resumes           uint64        `json:"resumes"`
		PagesKept         uint64        `json:"pages_kept"`
	} `json:"init"`
	Pool struct {
		PageSize   int    `json:"page_size"`
		TotalPages uint64 `json:"total_pages"`
		UsedPages  uint64 `json:"used_pages"`
	} `json:"pool"`
	Log struct {
		Size  uint64 `json:"size"`
		Begin uint64 `json:"begin"`
		End   uint64 `json:"end"`
	} `json:"log"`
	CheckpointLSN uint64 `json:"checkpoint_lsn"`
	Counters      struct {
		ReRequests    uint64 `json:"rerequests"`
		Elections     uint64 `json:"elections"`
		MsgsSent      uint64 `json:"msgs_sent"`
		MsgsRecv      uint64 `json:"msgs_recv"`
		FramesDropped uint64 `json:"frames_dropped"`
		Commits       uint64 `json:"commits"`
		PermFailed    uint64 `json:"perm_failed"`
	} `json:"counters"`

	Raw json.RawMessage `json:"-"`
}

// DecodeStat decodes a stat object.
func DecodeStat(raw json.RawMessage) (Stat, error) {
	var st Stat
	if len(raw) == 0 {
		return st, fmt.Errorf("%w: stat response without a stat object", ErrProtocol)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("%w: stat: %v", ErrProtocol, err)
	}
	st.Raw = append(json.RawMessage(nil), raw...)
	return st, nil
}

// IsMaster reports whether the board says it is master.
func (s Stat) IsMaster() bool { return s.Role == "master" }

// contentHashFields are the names a content hash may be published under.
var contentHashFields = [][]string{{"content_hash"}, {"env", "content_hash"}, {"hash"}}

// ContentHash returns the board's content hash (inmem.Env.ContentHash) if
// the daemon publishes one in its stat; ok=false when it does not.
func (s Stat) ContentHash() (h uint64, ok bool) {
	for _, path := range contentHashFields {
		if v, found := lookup(s.Raw, path); found {
			if h, ok := asUint(v); ok {
				return h, true
			}
		}
	}
	return 0, false
}

// DropsByReason returns the transport's drop counters by reason if the
// daemon publishes them (counters.drops or counters.drops_by_reason as an
// object of name -> count); ok=false when only the total is there.
func (s Stat) DropsByReason() (map[string]uint64, bool) {
	for _, path := range [][]string{{"counters", "drops"}, {"counters", "drops_by_reason"}, {"transport", "drops"}} {
		v, found := lookup(s.Raw, path)
		if !found {
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(v, &m) != nil {
			continue
		}
		out := make(map[string]uint64, len(m))
		for k, raw := range m {
			if n, ok := asUint(raw); ok {
				out[k] = n
			}
		}
		return out, true
	}
	return nil, false
}

func lookup(raw json.RawMessage, path []string) (json.RawMessage, bool) {
	cur := raw
	for _, p := range path {
		var m map[string]json.RawMessage
		if json.Unmarshal(cur, &m) != nil {
			return nil, false
		}
		next, ok := m[p]
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

// asUint reads a JSON number or a decimal/0x-hex string.
func asUint(v json.RawMessage) (uint64, bool) {
	var n uint64
	if json.Unmarshal(v, &n) == nil {
		return n, true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		n, err = strconv.ParseUint(s, 16, 64)
	}
	return n, err == nil
}
