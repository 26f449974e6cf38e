package elect

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Broadcast is the destination of a VOTE1: every site of the group.
const Broadcast uint16 = 0xFFFF

// Vote is one site's ballot in one election generation. VOTE1 carries it to
// everyone; VOTE2 carries the sender's vote to the designee it picked (the
// designee only needs Site and Egen from it, Priority tells it whether the
// sender counts toward the electable quorum).
type Vote struct {
	Site       uint16
	Egen       uint32 // election generation this vote belongs to
	LastGen    uint32 // data generation of the site's last log record
	LSN        uint64 // end of the site's log
	Priority   uint32 // 0 = never master
	Tiebreaker uint32 // random per attempt, breaks ties between equal logs and priorities
}

// Beats reports whether v should be master rather than o. Any electable vote
// beats a priority-0 one, so priority 0 never wins against an electable site;
// then the more current log wins, comparing the record generation before the
// LSN (a stale master can have written a longer log in an old generation that
// must be rolled back, never elected); then the higher priority, tiebreaker
// and site id. The order is total and strict: for distinct votes exactly one
// of v.Beats(o), o.Beats(v) holds, and the same vote never beats itself.
func (v Vote) Beats(o Vote) bool {
	if (v.Priority == 0) != (o.Priority == 0) {
		return v.Priority != 0
	}
	if v.LastGen != o.LastGen {
		return v.LastGen > o.LastGen
	}
	if v.LSN != o.LSN {
		return v.LSN > o.LSN
	}
	if v.Priority != o.Priority {
		return v.Priority > o.Priority
	}
	if v.Tiebreaker != o.Tiebreaker {
		return v.Tiebreaker > o.Tiebreaker
	}
	return v.Site > o.Site
}

// Electable reports whether the vote's site may become master.
func (v Vote) Electable() bool { return v.Priority > 0 }

// AtLeastAsCurrent reports whether v's log is at least as current as o's:
// (LastGen, LSN) compared lexicographically.
func (v Vote) AtLeastAsCurrent(o Vote) bool {
	if v.LastGen != o.LastGen {
		return v.LastGen > o.LastGen
	}
	return v.LSN >= o.LSN
}

func (v Vote) String() string {
	return fmt.Sprintf("site=%d egen=%d gen=%d lsn=%d prio=%d tb=%d",
		v.Site, v.Egen, v.LastGen, v.LSN, v.Priority, v.Tiebreaker)
}

// Wire format of a vote payload (little-endian, VoteSize bytes):
//
//	0 version u8 (=1) | 1 reserved u8 (0) | 2 site u16 | 4 egen u32 |
//	8 lastGen u32 | 12 priority u32 | 16 tiebreaker u32 | 20 lsn u64
const (
	VoteSize    = 28
	VoteVersion = 1
)

var (
	// ErrShortVote: the payload is shorter than a vote.
	ErrShortVote = errors.New("elect: vote payload too short; the sender or the transport truncated it, drop the message")
	// ErrLongVote: bytes follow the vote.
	ErrLongVote = errors.New("elect: vote payload has trailing bytes; the sender speaks another format, drop the message")
	// ErrVoteVersion: the payload's version byte is not VoteVersion.
	ErrVoteVersion = errors.New("elect: unknown vote format version; upgrade this site or the sender so both speak the same version")
	// ErrBadVote: the fields are impossible (broadcast site id, egen 0, reserved bits set).
	ErrBadVote = errors.New("elect: malformed vote; drop the message and check the sender")
)

// AppendVote appends v's wire encoding to dst.
func AppendVote(dst []byte, v Vote) []byte {
	var b [VoteSize]byte
	b[0] = VoteVersion
	binary.LittleEndian.PutUint16(b[2:], v.Site)
	binary.LittleEndian.PutUint32(b[4:], v.Egen)
	binary.LittleEndian.PutUint32(b[8:], v.LastGen)
	binary.LittleEndian.PutUint32(b[12:], v.Priority)
	binary.LittleEndian.PutUint32(b[16:], v.Tiebreaker)
	binary.LittleEndian.PutUint64(b[20:], v.LSN)
	return append(dst, b[:]...)
}

// DecodeVote parses a payload written by AppendVote. It never panics; every
// failure wraps one of ErrShortVote, ErrLongVote, ErrVoteVersion, ErrBadVote.
func DecodeVote(b []byte) (Vote, error) {
	if len(b) < VoteSize {
		return Vote{}, fmt.Errorf("decode vote: %d bytes, need %d: %w", len(b), VoteSize, ErrShortVote)
	}
	if b[0] != VoteVersion {
		return Vote{}, fmt.Errorf("decode vote: version %d, this build speaks %d: %w", b[0], VoteVersion, ErrVoteVersion)
	}
	if len(b) > VoteSize {
		return Vote{}, fmt.Errorf("decode vote: %d bytes, want exactly %d: %w", len(b), VoteSize, ErrLongVote)
	}
	if b[1] != 0 {
		return Vote{}, fmt.Errorf("decode vote: reserved byte is %#x, want 0: %w", b[1], ErrBadVote)
	}
	v := Vote{
		Site:       binary.LittleEndian.Uint16(b[2:]),
		Egen:       binary.LittleEndian.Uint32(b[4:]),
		LastGen:    binary.LittleEndian.Uint32(b[8:]),
		Priority:   binary.LittleEndian.Uint32(b[12:]),
		Tiebreaker: binary.LittleEndian.Uint32(b[16:]),
		LSN:        binary.LittleEndian.Uint64(b[20:]),
	}
	if v.Site == Broadcast {
		return Vote{}, fmt.Errorf("decode vote: site id %#x is the broadcast address: %w", v.Site, ErrBadVote)
	}
	if v.Egen == 0 {
		return Vote{}, fmt.Errorf("decode vote from site %d: egen 0 is never used by an election: %w", v.Site, ErrBadVote)
	}
	return v, nil
}
