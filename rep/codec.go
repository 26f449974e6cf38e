package rep

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/elect"
	"github.com/seed61e250c8/boardha/logbuf"
)

// Wire format. Every payload starts with a 32-byte little-endian header:
//
//	0 gen u32 | 4 egen u32 | 8 end u64 (sender's log end) | 16 sendTime i64 (ns, sender's clock)
//	24 priority u32 | 28 flags u16 | 30 master u16 (sender's master, NoMaster if none)
//
// then a body whose layout depends on the type:
//
//	ALIVE_REQ NEWCLIENT NEWMASTER MASTER_REQ DUPMASTER UPDATE_REQ: empty
//	ALIVE:             end u64 | gen u32 (the sender's recovery point: a log end and its last gen) | promised u32
//	VERIFY_FAIL:       lsn u64 (newest point of the VERIFY_REQ answered; 0: answers a LOG_REQ)
//	NEWSITE:           site u16 | priority u32
//	HEARTBEAT:         perm u64 | pace
//	LOG LOG_MORE:      perm u64 | pace | whole encoded log records (consecutive LSNs)
//	LOG_REQ ALL_REQ:   from u64 | to u64 (0: up to the end)
//	ACK LEASE_GRANT:   lsn u64 | echo i64 (master sendTime of the newest message seen; 0: no grant)
//	VERIFY_REQ:        n u8 | n × (lsn u64 | gen u32 | chain u64), newest first
//	VERIFY:            lsn u64 | gen u32 | chain u64
//	UPDATE:            ckpt u64 | pages u32 | metaLen u32 | meta
//	PAGE_REQ:          ckpt u64 | first u32 | count u32
//	PAGE:              ckpt u64 | first u32 | n u32 | n × (pgno u64 | len u32 | data)
//	PAGE_FAIL:         ckpt u64
//	VOTE1:             elect's vote codec (elect.VoteSize bytes, versioned)
//	VOTE2:             the sender's vote, as VOTE1 (the designee learns its priority)
//	APP APP_REPLY:     opaque bytes
//
// pace is present only with FlagPaced: n u8 | n × site u16, the replicas
// whose acks the master waits for (Config.Pace); a master sets it on its
// multicast HEARTBEAT and LOG.
const HeaderSize = 32

// Header flags.
const (
	FlagMaster       uint16 = 1 << 0 // the sender is master at Gen
	FlagInitRequired uint16 = 1 << 1 // VERIFY_FAIL: the master's log no longer reaches back
	FlagLeases       uint16 = 1 << 2 // the sender runs with master leases
	FlagPaced        uint16 = 1 << 3 // HEARTBEAT, LOG: the body names the sites the master waits for
)

// Record framing (logbuf's fixed layout: len u32 at 0, type u8 at 4, gen u32 at 8,
// lsn u64 at 24). rep frames records itself so it never needs the log package
// to find transaction boundaries in a message.
const (
	recHeaderSize = logbuf.HeaderSize
	recCommit     = logbuf.RecCommit
	recNewGen     = logbuf.RecNewGen
	recCheckpoint = logbuf.RecCheckpoint
)

// endsUnit reports whether a record of type typ ends a unit the driver can
// apply on its own: a commit ends a transaction, and a checkpoint record
// stands alone between transactions.
func endsUnit(typ uint8) bool { return typ == recCommit || typ == recCheckpoint }

// Header is the common message header.
type Header struct {
	Gen      uint32
	Egen     uint32
	End      uint64
	SendTime time.Duration
	Priority uint32
	Flags    uint16
	Master   uint16
}

// CommitPoint identifies a commit for verification.
type CommitPoint struct {
	LSN   uint64
	Gen   uint32
	Chain uint64
}

// Decoded is a decoded message. Which body fields are meaningful depends on
// Type (see the wire format). Slices alias the payload.
type Decoded struct {
	Type     MsgType
	From, To uint16
	Header   Header

	LSN  uint64        // HEARTBEAT/LOG: perm; LOG_REQ/ALL_REQ: from; ACK: lsn; VERIFY: lsn; UPDATE/PAGE*: ckpt
	LSN2 uint64        // LOG_REQ/ALL_REQ: to
	Echo time.Duration // ACK/LEASE_GRANT
	Gen  uint32        // VERIFY: gen; ALIVE: recovery point's gen (LSN: its end)
	// Promised is ALIVE's: the egen the sender last cast a VOTE2 in.
	Promised uint32
	Chain    uint64 // VERIFY

	// Waited is the pace of a HEARTBEAT or LOG with FlagPaced: the sites
	// the master waits for, n × u16 (see Waits).
	Waited []byte

	Site     uint16 // NEWSITE
	Priority uint32 // NEWSITE

	Points  [maxVerifyPoints]CommitPoint // VERIFY_REQ
	NPoints int

	Vote elect.Vote // VOTE1, VOTE2

	First, Count uint32 // UPDATE: Count pages; PAGE_REQ: window; PAGE: first index, Count pages; LOG_REQ/ALL_REQ: Count message bytes
	// PAGE_REQ of a resumed init: the replica holds every page of the
	// snapshot it copied before (checkpoint KeepLSN) below page KeepBelow.
	KeepLSN, KeepBelow uint64
	Data               []byte // LOG: records; UPDATE: meta; PAGE: page entries; APP: payload
}

var le = binary.LittleEndian

func malformed(t MsgType, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", t, fmt.Sprintf(format, args...), ErrMalformed)
}

// DecodeMessage decodes m into d. It validates lengths and the framing of
// log records and pages; it never panics on any input.
func DecodeMessage(m Message, d *Decoded) error {
	*d = Decoded{Type: m.Type, From: m.From, To: m.To}
	if m.Type == 0 || m.Type > msgTypeMax {
		return fmt.Errorf("type %d: %w", uint8(m.Type), ErrUnknownType)
	}
	p := m.Payload
	if len(p) < HeaderSize {
		return malformed(m.Type, "payload %d bytes, header needs %d", len(p), HeaderSize)
	}
	h := &d.Header
	h.Gen = le.Uint32(p[0:])
	h.Egen = le.Uint32(p[4:])
	h.End = le.Uint64(p[8:])
	h.SendTime = time.Duration(le.Uint64(p[16:]))
	h.Priority = le.Uint32(p[24:])
	h.Flags = le.Uint16(p[28:])
	h.Master = le.Uint16(p[30:])
	b := p[HeaderSize:]
	exact := func(n int) error {
		if len(b) != n {
			return malformed(m.Type, "body %d bytes, want %d", len(b), n)
		}
		return nil
	}
	switch m.Type {
	case MsgAliveReq, MsgNewClient, MsgNewMaster, MsgMasterReq, MsgDupMaster, MsgUpdateReq:
		return exact(0)
	case MsgAlive:
		if err := exact(16); err != nil {
			return err
		}
		d.LSN = le.Uint64(b)
		d.Gen = le.Uint32(b[8:])
		d.Promised = le.Uint32(b[12:])
	case MsgVerifyFail:
		if err := exact(8); err != nil {
			return err
		}
		d.LSN = le.Uint64(b)
	case MsgNewSite:
		if err := exact(6); err != nil {
			return err
		}
		d.Site = le.Uint16(b)
		d.Priority = le.Uint32(b[2:])
		if d.Site == AllSites {
			return malformed(m.Type, "site %#x is the multicast address", d.Site)
		}
	case MsgHeartbeat:
		rest, err := decodePerm(m.Type, b, d)
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return malformed(m.Type, "%d bytes after the body", len(rest))
		}
	case MsgLog, MsgLogMore:
		rest, err := decodePerm(m.Type, b, d)
		if err != nil {
			return err
		}
		d.Data = rest
		if err := checkRecords(d.Data); err != nil {
			return fmt.Errorf("%s: %w", m.Type, err)
		}
	case MsgLogReq, MsgAllReq:
		// The message size the replica asks for is optional (20 bytes):
		// without it the master answers in its default size.
		if len(b) != 20 {
			if err := exact(16); err != nil {
				return err
			}
		}
		d.LSN = le.Uint64(b)
		d.LSN2 = le.Uint64(b[8:])
		if len(b) == 20 {
			d.Count = le.Uint32(b[16:])
		}
		if d.LSN2 != 0 && d.LSN2 < d.LSN {
			return malformed(m.Type, "range [%d, %d) is inverted", d.LSN, d.LSN2)
		}
	case MsgAck, MsgLeaseGrant:
		if err := exact(16); err != nil {
			return err
		}
		d.LSN = le.Uint64(b)
		d.Echo = time.Duration(le.Uint64(b[8:]))
	case MsgVerifyReq:
		if len(b) < 1 {
			return malformed(m.Type, "empty body")
		}
		n := int(b[0])
		if n == 0 || n > maxVerifyPoints {
			return malformed(m.Type, "%d points, want 1..%d", n, maxVerifyPoints)
		}
		if err := exact(1 + 20*n); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			q := b[1+20*i:]
			d.Points[i] = CommitPoint{LSN: le.Uint64(q), Gen: le.Uint32(q[8:]), Chain: le.Uint64(q[12:])}
		}
		d.NPoints = n
	case MsgVerify:
		if err := exact(20); err != nil {
			return err
		}
		d.LSN = le.Uint64(b)
		d.Gen = le.Uint32(b[8:])
		d.Chain = le.Uint64(b[12:])
	case MsgUpdate:
		if len(b) < 16 {
			return malformed(m.Type, "body %d bytes, want >= 16", len(b))
		}
		d.LSN = le.Uint64(b)
		d.Count = le.Uint32(b[8:])
		ml := le.Uint32(b[12:])
		if uint64(ml) != uint64(len(b)-16) {
			return malformed(m.Type, "meta length %d, %d bytes follow", ml, len(b)-16)
		}
		if d.Count > maxInitPages {
			return malformed(m.Type, "%d pages exceeds the limit %d", d.Count, maxInitPages)
		}
		d.Data = b[16:]
	case MsgPageReq:
		if len(b) != 16 && len(b) != 32 {
			return malformed(m.Type, "body %d bytes, want 16, or 32 resuming", len(b))
		}
		d.LSN = le.Uint64(b)
		d.First = le.Uint32(b[8:])
		d.Count = le.Uint32(b[12:])
		if len(b) == 32 {
			d.KeepLSN, d.KeepBelow = le.Uint64(b[16:]), le.Uint64(b[24:])
		}
		if d.Count == 0 || d.Count > maxInitPages {
			return malformed(m.Type, "window of %d pages", d.Count)
		}
	case MsgPage:
		if len(b) < 16 {
			return malformed(m.Type, "body %d bytes, want >= 16", len(b))
		}
		d.LSN = le.Uint64(b)
		d.First = le.Uint32(b[8:])
		d.Count = le.Uint32(b[12:])
		d.Data = b[16:]
		if err := checkPages(d.Data, d.Count); err != nil {
			return fmt.Errorf("%s: %w", m.Type, err)
		}
	case MsgPageFail:
		if err := exact(8); err != nil {
			return err
		}
		d.LSN = le.Uint64(b)
	case MsgVote1, MsgVote2:
		if err := exact(elect.VoteSize); err != nil {
			return err
		}
		v, err := elect.DecodeVote(b)
		if err != nil {
			return malformed(m.Type, "%v", err)
		}
		d.Vote = v
	case MsgApp, MsgAppReply:
		d.Data = b
	}
	return nil
}

// checkRecords validates the framing of consecutive encoded log records:
// each length covers at least a header and fits, and LSNs follow on.
func checkRecords(b []byte) error {
	var next uint64
	for off := 0; off < len(b); {
		if len(b)-off < recHeaderSize {
			return fmt.Errorf("record at offset %d: %d bytes left, header needs %d: %w", off, len(b)-off, recHeaderSize, ErrMalformed)
		}
		n := int(le.Uint32(b[off:]))
		if n < recHeaderSize || n > len(b)-off {
			return fmt.Errorf("record at offset %d: length %d, %d bytes left: %w", off, n, len(b)-off, ErrMalformed)
		}
		lsn := le.Uint64(b[off+24:])
		if off > 0 && lsn != next {
			return fmt.Errorf("record at offset %d: lsn %d, want %d: %w", off, lsn, next, ErrMalformed)
		}
		if lsn+uint64(n) < lsn {
			return fmt.Errorf("record at offset %d: lsn %d overflows: %w", off, lsn, ErrMalformed)
		}
		next = lsn + uint64(n)
		off += n
	}
	return nil
}

// recAt reads the framing fields of the record at the start of b (already
// validated by checkRecords).
func recAt(b []byte) (n int, typ uint8, lsn uint64) {
	return int(le.Uint32(b)), b[4], le.Uint64(b[24:])
}

// checkPages validates count page entries filling b exactly.
func checkPages(b []byte, count uint32) error {
	off := 0
	for i := uint32(0); i < count; i++ {
		if len(b)-off < 12 {
			return fmt.Errorf("page %d: %d bytes left, entry header needs 12: %w", i, len(b)-off, ErrMalformed)
		}
		n := le.Uint32(b[off+8:])
		if uint64(n) > uint64(len(b)-off-12) {
			return fmt.Errorf("page %d: length %d, %d bytes left: %w", i, n, len(b)-off-12, ErrMalformed)
		}
		off += 12 + int(n)
	}
	if off != len(b) {
		return fmt.Errorf("%d trailing bytes after %d pages: %w", len(b)-off, count, ErrMalformed)
	}
	return nil
}

// nextPage returns the first page entry of b (validated by checkPages) and the rest.
func nextPage(b []byte) (pgno uint64, data, rest []byte) {
	n := int(le.Uint32(b[8:]))
	return le.Uint64(b), b[12 : 12+n], b[12+n:]
}

// Encoding appends to dst.

func appendHeader(dst []byte, h *Header) []byte {
	var b [HeaderSize]byte
	le.PutUint32(b[0:], h.Gen)
	le.PutUint32(b[4:], h.Egen)
	le.PutUint64(b[8:], h.End)
	le.PutUint64(b[16:], uint64(h.SendTime))
	le.PutUint32(b[24:], h.Priority)
	le.PutUint16(b[28:], h.Flags)
	le.PutUint16(b[30:], h.Master)
	return append(dst, b[:]...)
}

// decodePerm decodes the perm LSN and pace that begin HEARTBEAT and LOG
// bodies, and returns what follows them.
func decodePerm(t MsgType, b []byte, d *Decoded) ([]byte, error) {
	if len(b) < 8 {
		return nil, malformed(t, "body %d bytes, want >= 8", len(b))
	}
	d.LSN = le.Uint64(b)
	b = b[8:]
	if d.Header.Flags&FlagPaced == 0 {
		return b, nil
	}
	if len(b) < 1 {
		return nil, malformed(t, "paced, but the body ends before the count of sites waited for")
	}
	n := int(b[0])
	if n > maxSites || len(b) < 1+2*n {
		return nil, malformed(t, "paced with %d sites waited for in %d bytes (at most %d sites)", n, len(b)-1, maxSites)
	}
	d.Waited = b[1 : 1+2*n]
	return b[1+2*n:], nil
}

// Waits reports whether a paced HEARTBEAT or LOG names site among those the
// master waits for. A message without FlagPaced waits for every site.
func (d *Decoded) Waits(site uint16) bool {
	if d.Header.Flags&FlagPaced == 0 {
		return true
	}
	for i := 0; i+1 < len(d.Waited); i += 2 {
		if le.Uint16(d.Waited[i:]) == site {
			return true
		}
	}
	return false
}

func appendU16(dst []byte, v uint16) []byte { return le.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return le.AppendUint32(dst, v) }
func appendU64(dst []byte, v uint64) []byte { return le.AppendUint64(dst, v) }

// appendVote uses elect's versioned vote codec so the two packages cannot drift.
func appendVote(dst []byte, v elect.Vote) []byte { return elect.AppendVote(dst, v) }

func appendPoint(dst []byte, p CommitPoint) []byte {
	dst = appendU64(dst, p.LSN)
	dst = appendU32(dst, p.Gen)
	return appendU64(dst, p.Chain)
}
