package inmem

import (
	"encoding/binary"
	"fmt"
	"hash/crc64"
)

// Redo record bodies (little-endian):
//
//	RecPut, RecDelete, RecCreateDB, RecDropDB: db u32 | klen u32 | vlen u32 | key | value
//	(CreateDB/DropDB carry the database name as the key; Delete has vlen 0)
//	RecCommit:  nrec u32 | 0 u32 | chain u64
//	RecNewGen:  gen u32
//
// nrec is the number of records of the transaction before the commit record, so a
// replica can tell a whole transaction from a truncated one. The chain folds the
// crc of every non-commit record into the previous chain (see chainNext), so two
// logs that agree on a commit's (LSN, gen, chain) hold the same records up to it.
const (
	redoHdr       = 12
	commitBodyLen = 16
	newGenBodyLen = 4
)

type redoOp struct {
	db  uint32
	key []byte
	val []byte
}

func appendRedoBody(dst []byte, db uint32, k, v []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, db)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(k)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	dst = append(dst, k...)
	return append(dst, v...)
}

// decodeRedoBody parses a put/delete/create/drop body; key and value alias b.
func decodeRedoBody(b []byte) (redoOp, error) {
	var op redoOp
	if len(b) < redoHdr {
		return op, fmt.Errorf("redo body: %d bytes, shorter than its %d-byte header: %w", len(b), redoHdr, ErrCorrupt)
	}
	op.db = binary.LittleEndian.Uint32(b)
	kl := uint64(binary.LittleEndian.Uint32(b[4:]))
	vl := uint64(binary.LittleEndian.Uint32(b[8:]))
	if redoHdr+kl+vl != uint64(len(b)) {
		return op, fmt.Errorf("redo body: key %d + value %d bytes do not match body of %d: %w", kl, vl, len(b), ErrCorrupt)
	}
	op.key = b[redoHdr : redoHdr+kl]
	op.val = b[redoHdr+kl:]
	return op, nil
}

func appendCommitBody(dst []byte, nrec uint32, chain uint64) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, nrec)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	return binary.LittleEndian.AppendUint64(dst, chain)
}

func decodeCommitBody(b []byte) (nrec uint32, chain uint64, err error) {
	if len(b) != commitBodyLen {
		return 0, 0, fmt.Errorf("commit body: %d bytes, want %d: %w", len(b), commitBodyLen, ErrCorrupt)
	}
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[8:]), nil
}

func decodeNewGenBody(b []byte) (uint32, error) {
	if len(b) != newGenBodyLen {
		return 0, fmt.Errorf("new-gen body: %d bytes, want %d: %w", len(b), newGenBodyLen, ErrCorrupt)
	}
	return binary.LittleEndian.Uint32(b), nil
}

var crc64Table = crc64.MakeTable(crc64.ECMA)

// chainNext folds one record's crc32c into the chain.
func chainNext(chain uint64, crc uint32) uint64 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], crc)
	return crc64.Update(chain, crc64Table, b[:])
}
