package board

import (
	"encoding/binary"
	"fmt"
)

// Commit reports a finished write.
type Commit struct {
	// LSN of the transaction's commit record (0 if the write changed nothing).
	LSN uint64
	// Perm: the ack policy was met before AckTimeout. Perm=false is not an
	// error: the write is committed on the master but not known durable
	// on enough boards to survive the master's loss.
	Perm bool
}

// OpKind is the kind of an Op.
type OpKind uint8

const (
	OpPut    OpKind = 1
	OpDelete OpKind = 2
)

// Op is one write for Apply: build it with Put or Delete.
type Op struct {
	Kind  OpKind
	DB    string
	Key   []byte
	Value []byte
}

// Put returns an Op that sets key to value in database db (created if needed).
func Put(db string, key, value []byte) Op { return Op{Kind: OpPut, DB: db, Key: key, Value: value} }

// Delete returns an Op that removes key from database db (absent keys are fine).
func Delete(db string, key []byte) Op { return Op{Kind: OpDelete, DB: db, Key: key} }

// Limits for forwarded operations: they must fit one backplane message.
const (
	maxOps    = 4096
	maxDBName = 255
)

// APP payload formats (board-level; rep carries them opaquely):
//
//	request: 'Q' | reqID u64 | nops u16 | ops...
//	   op:   kind u8 | dblen u8 | db | klen u32 | key | vlen u32 | value
//	reply:   'R' | reqID u64 | lsn u64 | perm u8 | code u8 | msglen u16 | msg
const (
	appRequest = 'Q'
	appReply   = 'R'
)

// Reply codes of a forwarded Apply; they map back to the sentinels.
const (
	replyOK uint8 = iota
	replyNotMaster
	replyLockout
	replyPoolFull
	replyLogFull
	replyInvalid
	replyOther
	replyClosed
)

func encodeAppRequest(dst []byte, id uint64, ops []Op) ([]byte, error) {
	if len(ops) == 0 || len(ops) > maxOps {
		return nil, fmt.Errorf("board: Apply with %d ops; allowed 1..%d", len(ops), maxOps)
	}
	dst = append(dst, appRequest)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(ops)))
	for _, op := range ops {
		if op.Kind != OpPut && op.Kind != OpDelete {
			return nil, fmt.Errorf("board: Apply op kind %d unknown; build ops with board.Put or board.Delete", op.Kind)
		}
		if op.DB == "" || len(op.DB) > maxDBName {
			return nil, fmt.Errorf("board: Apply database name of %d bytes; allowed 1..%d", len(op.DB), maxDBName)
		}
		dst = append(dst, byte(op.Kind), byte(len(op.DB)))
		dst = append(dst, op.DB...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(op.Key)))
		dst = append(dst, op.Key...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(op.Value)))
		dst = append(dst, op.Value...)
	}
	return dst, nil
}

// decodeAppRequest parses a forwarded request; the ops alias b.
func decodeAppRequest(b []byte) (id uint64, ops []Op, err error) {
	if len(b) < 11 || b[0] != appRequest {
		return 0, nil, fmt.Errorf("board: malformed APP request (%d bytes)", len(b))
	}
	id = binary.LittleEndian.Uint64(b[1:])
	n := int(binary.LittleEndian.Uint16(b[9:]))
	if n == 0 || n > maxOps {
		return id, nil, fmt.Errorf("board: APP request with %d ops; allowed 1..%d", n, maxOps)
	}
	p := b[11:]
	ops = make([]Op, 0, n)
	for i := 0; i < n; i++ {
		if len(p) < 2 {
			return id, nil, fmt.Errorf("board: APP request truncated in op %d", i)
		}
		op := Op{Kind: OpKind(p[0])}
		dl := int(p[1])
		p = p[2:]
		if op.Kind != OpPut && op.Kind != OpDelete || dl == 0 || len(p) < dl+4 {
			return id, nil, fmt.Errorf("board: APP request op %d malformed", i)
		}
		op.DB = string(p[:dl])
		p = p[dl:]
		if op.Key, p, err = lenPrefixed(p); err != nil {
			return id, nil, fmt.Errorf("board: APP request op %d key: %w", i, err)
		}
		if op.Value, p, err = lenPrefixed(p); err != nil {
			return id, nil, fmt.Errorf("board: APP request op %d value: %w", i, err)
		}
		ops = append(ops, op)
	}
	if len(p) != 0 {
		return id, nil, fmt.Errorf("board: APP request has %d trailing bytes", len(p))
	}
	return id, ops, nil
}

func lenPrefixed(p []byte) ([]byte, []byte, error) {
	if len(p) < 4 {
		return nil, nil, fmt.Errorf("truncated length")
	}
	n := binary.LittleEndian.Uint32(p)
	p = p[4:]
	if uint64(n) > uint64(len(p)) {
		return nil, nil, fmt.Errorf("length %d exceeds the %d bytes left", n, len(p))
	}
	return p[:n:n], p[n:], nil
}

type appReplyMsg struct {
	id   uint64
	lsn  uint64
	perm bool
	code uint8
	msg  string
}

func encodeAppReply(dst []byte, r appReplyMsg) []byte {
	dst = append(dst, appReply)
	dst = binary.LittleEndian.AppendUint64(dst, r.id)
	dst = binary.LittleEndian.AppendUint64(dst, r.lsn)
	perm := byte(0)
	if r.perm {
		perm = 1
	}
	msg := r.msg
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	dst = append(dst, perm, r.code)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...)
}

func decodeAppReply(b []byte) (appReplyMsg, error) {
	var r appReplyMsg
	if len(b) < 21 || b[0] != appReply {
		return r, fmt.Errorf("board: malformed APP_REPLY (%d bytes)", len(b))
	}
	r.id = binary.LittleEndian.Uint64(b[1:])
	r.lsn = binary.LittleEndian.Uint64(b[9:])
	r.perm = b[17] == 1
	r.code = b[18]
	n := int(binary.LittleEndian.Uint16(b[19:]))
	if len(b) != 21+n {
		return r, fmt.Errorf("board: APP_REPLY message length %d does not match %d bytes", n, len(b)-21)
	}
	r.msg = string(b[21:])
	return r, nil
}
