package backplane

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// DefaultCompressThreshold is the payload size from which Send tries lz4.
const DefaultCompressThreshold = 4 << 10

// ErrDecompress reports an lz4 payload that is malformed or lies about its size.
var ErrDecompress = errors.New("backplane: lz4 payload does not decompress to its declared size; message dropped")

// Large payloads are probed before they are compressed whole: lz4 spends
// about a millisecond on 1 MiB of random bytes only to find it does not
// shrink, and the bulk of an internal init (pages of encrypted keys, hashes,
// packed counters) often does not. probes slices of probeBytes, spread over
// the payload, are compressed first; the payload is compressed whole only
// if together they shrink by at least a sixteenth. Data that compresses in
// some places only is judged by where the probes fall: a payload made of
// one kind of page throughout is judged right, and a misjudged one is sent
// as it is, which costs bandwidth, never correctness.
const (
	probeFrom  = 32 << 10 // payloads from this size are probed first
	probeBytes = 2 << 10
	probes     = 3
)

// compressor lz4-compresses payloads into a reused buffer. Compressed
// payload = uncompressed size (u32 LE) + lz4 block.
type compressor struct {
	threshold int // < 0: never compress
	lz        lz4.Compressor
	buf       []byte
	probeBuf  []byte
	ctr       *counters // nil: not counted
}

func normThreshold(t int) int {
	if t == 0 {
		return DefaultCompressThreshold
	}
	return t
}

// compress returns the compressed form of p, or ok=false when p is below the
// threshold or does not shrink.
func (c *compressor) compress(p []byte) ([]byte, bool) {
	if c.threshold < 0 || len(p) < c.threshold {
		return nil, false
	}
	if len(p) >= probeFrom && !c.probesShrink(p) {
		if c.ctr != nil {
			c.ctr.incompressible.Add(1)
		}
		return nil, false
	}
	need := 4 + lz4.CompressBlockBound(len(p))
	if cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	b := c.buf[:need]
	n, err := c.lz.CompressBlock(p, b[4:])
	if err != nil || n == 0 || 4+n >= len(p) {
		return nil, false
	}
	binary.LittleEndian.PutUint32(b, uint32(len(p)))
	return b[:4+n], true
}

// probesShrink compresses probes slices of p, the first at its start and
// the last at its end, and reports whether together they shrink by at least
// a sixteenth.
func (c *compressor) probesShrink(p []byte) bool {
	if c.probeBuf == nil {
		c.probeBuf = make([]byte, lz4.CompressBlockBound(probeBytes))
	}
	raw, packed := 0, 0
	for i := range probes {
		off := (len(p) - probeBytes) * i / (probes - 1)
		n, err := c.lz.CompressBlock(p[off:off+probeBytes], c.probeBuf)
		if err != nil || n == 0 {
			n = probeBytes // lz4 says 0 for a block it cannot shrink
		}
		raw += probeBytes
		packed += n
	}
	return packed <= raw-raw/16
}

// decompress expands src into *buf (grown as needed, reused). The declared
// size is checked against MaxMessageSize before anything is allocated, so a
// small frame cannot make the receiver allocate more than the message limit.
func decompress(src []byte, buf *[]byte) ([]byte, error) {
	if len(src) < 4 {
		return nil, fmt.Errorf("lz4 payload of %d bytes has no size prefix: %w", len(src), ErrDecompress)
	}
	size := int(binary.LittleEndian.Uint32(src))
	if size == 0 || size > MaxMessageSize {
		return nil, fmt.Errorf("lz4 payload declares %d bytes (limit %d): %w", size, MaxMessageSize, ErrDecompress)
	}
	if cap(*buf) < size {
		*buf = make([]byte, size)
	}
	dst := (*buf)[:size]
	n, err := lz4.UncompressBlock(src[4:], dst)
	if err != nil {
		return nil, fmt.Errorf("lz4 payload declaring %d bytes: %v: %w", size, err, ErrDecompress)
	}
	if n != size {
		return nil, fmt.Errorf("lz4 payload declares %d bytes, holds %d: %w", size, n, ErrDecompress)
	}
	return dst, nil
}
