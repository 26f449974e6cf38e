package backplane

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Type: 7, Group: 0xdeadbeef, From: 3, To: AllSites, MsgID: 0x01020304, Frag: 2, NFrags: 5, Flags: FlagLZ4}
	payload := []byte("hello backplane")
	f := AppendFrame(nil, h, payload)
	if len(f) != HeaderSize+len(payload) {
		t.Fatalf("frame length %d, want %d", len(f), HeaderSize+len(payload))
	}
	// Fixed layout from contracts.md.
	want := []byte{0xA7, 0xB0, 1, 7, 0xef, 0xbe, 0xad, 0xde, 3, 0, 0xff, 0xff, 4, 3, 2, 1, 2, 0, 5, 0, 1, 0, 0, 0, byte(len(payload)), 0, 0, 0}
	if !bytes.Equal(f[:28], want) {
		t.Fatalf("header bytes\n got %x\nwant %x", f[:28], want)
	}
	got, p, err := DecodeFrame(append(f, 0, 0, 0)) // trailing Ethernet padding is ignored
	if err != nil {
		t.Fatal(err)
	}
	h.Len, h.CRC = uint32(len(payload)), got.CRC
	if got != h || !bytes.Equal(p, payload) {
		t.Fatalf("decoded %+v %q, want %+v %q", got, p, h, payload)
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	good := AppendFrame(nil, Header{Type: 1, Group: 9, From: 1, To: 2, MsgID: 1, NFrags: 1}, []byte("payload"))
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShortFrame},
		{"short header", good[:HeaderSize-1], ErrShortFrame},
		{"short payload", good[:len(good)-1], ErrShortFrame},
		{"magic", mut(func(b []byte) []byte { b[0] ^= 1; return b }), ErrBadMagic},
		{"version", mut(func(b []byte) []byte { b[2] = 2; return b }), ErrBadVersion},
		{"crc payload", mut(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), ErrBadCRC},
		{"crc header", mut(func(b []byte) []byte { b[8] ^= 1; return b }), ErrBadCRC},
		{"absurd len", mut(func(b []byte) []byte { b[26] = 0x10; return b }), ErrAbsurdLength},
		{"absurd nfrags", mut(func(b []byte) []byte { b[19] = 0xff; return b }), ErrAbsurdLength},
		{"zero nfrags", mut(func(b []byte) []byte { b[18] = 0; return b }), ErrBadFragment},
		{"frag beyond", mut(func(b []byte) []byte { b[16] = 1; return b }), ErrBadFragment},
	}
	for _, c := range cases {
		if _, _, err := DecodeFrame(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestGroupIDAndMAC(t *testing.T) {
	// FNV-1a 32 reference values.
	if got := GroupID(""); got != 0x811c9dc5 {
		t.Errorf("GroupID(\"\") = %#x", got)
	}
	if got := GroupID("a"); got != 0xe40c292c {
		t.Errorf("GroupID(\"a\") = %#x", got)
	}
	if got := GroupMAC(0x01020304).String(); got != "03:b5:01:02:03:04" {
		t.Errorf("GroupMAC = %s", got)
	}
	ip := GroupIP(0x12345678)
	if ip[0] != 239 || ip[1] != 193 {
		t.Errorf("GroupIP = %v", ip)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(AppendFrame(nil, Header{Type: 1, Group: 9, From: 1, To: 2, MsgID: 1, NFrags: 1}, []byte("payload")))
	f.Add(AppendFrame(nil, Header{Type: 2, Group: 9, From: 1, To: AllSites, MsgID: 2, Frag: 1, NFrags: 3, Flags: FlagLZ4}, nil))
	f.Add([]byte{0xA7, 0xB0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if int(h.Len) != len(p) || h.Frag >= h.NFrags {
			t.Fatalf("accepted inconsistent frame %+v with %d payload bytes", h, len(p))
		}
		// Re-encoding what was accepted must give the same bytes.
		if re := AppendFrame(nil, h, p); !bytes.Equal(re, b[:HeaderSize+len(p)]) {
			t.Fatalf("re-encoded %x, input %x", re, b[:HeaderSize+len(p)])
		}
	})
}

// FuzzRxFrames feeds arbitrary frame sequences through the receive path:
// decode, checks, reassembly and decompression must never panic nor deliver
// a message larger than the limit.
func FuzzRxFrames(f *testing.F) {
	var seed []byte
	for i := 0; i < 3; i++ {
		fr := AppendFrame(nil, Header{Type: 1, Group: 9, From: 2, To: AllSites, MsgID: 5, Frag: uint16(i), NFrags: 3}, bytes.Repeat([]byte{byte(i)}, 40))
		seed = append(seed, byte(len(fr)))
		seed = append(seed, fr...)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c counters
		rx := newRxCore(9, 1, 64, ReassemblyConfig{PerSourceBytes: 4096, MaxBytes: 8192}, &c)
		var m Message
		for len(b) > 0 {
			n := int(b[0])
			b = b[1:]
			n = min(n, len(b))
			rx.begin()
			if rx.frame(b[:n], testNow, 0, &m) && len(m.Payload) > MaxMessageSize {
				t.Fatalf("delivered %d bytes", len(m.Payload))
			}
			b = b[n:]
		}
	})
}

func FuzzDecompress(f *testing.F) {
	var c compressor
	big := bytes.Repeat([]byte("backplane "), 1000)
	cp, _ := c.compress(big)
	f.Add(bytes.Clone(cp))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var buf []byte
		out, err := decompress(b, &buf)
		if err == nil && (len(out) == 0 || len(out) > MaxMessageSize) {
			t.Fatalf("decompressed to %d bytes", len(out))
		}
		if cap(buf) > MaxMessageSize {
			t.Fatalf("allocated %d bytes", cap(buf))
		}
	})
}

func TestCompressRoundTrip(t *testing.T) {
	var c compressor
	c.threshold = normThreshold(0)
	small := bytes.Repeat([]byte{1}, 100)
	if _, ok := c.compress(small); ok {
		t.Fatal("compressed a payload below the threshold")
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	cp, ok := c.compress(big)
	if !ok || len(cp) >= len(big) {
		t.Fatalf("compress: ok=%v len=%d", ok, len(cp))
	}
	var buf []byte
	out, err := decompress(cp, &buf)
	if err != nil || !bytes.Equal(out, big) {
		t.Fatalf("decompress: %v (equal=%v)", err, bytes.Equal(out, big))
	}
	// A bomb: tiny payload declaring more than the limit is refused before allocating.
	bomb := []byte{0, 0, 0x20, 0, 0x1f, 0}
	buf = nil
	if _, err := decompress(bomb, &buf); !errors.Is(err, ErrDecompress) || cap(buf) != 0 {
		t.Fatalf("bomb: err %v, allocated %d", err, cap(buf))
	}
	// Lying size: declares more than it holds.
	lie := bytes.Clone(cp)
	lie[0]++
	if _, err := decompress(lie, &buf); !errors.Is(err, ErrDecompress) {
		t.Fatalf("lying size: err %v", err)
	}
}

func BenchmarkEncodeHeader1400(b *testing.B) {
	p := make([]byte, 1400)
	var hdr [HeaderSize]byte
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		EncodeHeader(hdr[:], Header{Type: 1, Group: 9, From: 1, To: 2, NFrags: 1}, p)
	}
}

func BenchmarkDecodeFrame1400(b *testing.B) {
	f := AppendFrame(nil, Header{Type: 1, Group: 9, From: 1, To: 2, NFrags: 1}, make([]byte, 1400))
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		if _, _, err := DecodeFrame(f); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCompressProbes: a large payload that does not compress is sent as it
// is without being compressed whole, one that does is compressed, and one
// whose probes fall on compressible parts is compressed whole and kept only
// if it shrank.
func TestCompressProbes(t *testing.T) {
	var ctr counters
	c := compressor{threshold: normThreshold(0), ctr: &ctr}
	random := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	if _, ok := c.compress(random); ok {
		t.Fatal("compressed random bytes")
	}
	if got := ctr.incompressible.Load(); got != 1 {
		t.Fatalf("incompressible = %d after a random payload, want 1", got)
	}
	text := bytes.Repeat([]byte("vlan 100 port 7 state forwarding\n"), 8<<10)
	cp, ok := c.compress(text)
	if !ok || len(cp) > len(text)/4 {
		t.Fatalf("text: ok=%v %d of %d bytes", ok, len(cp), len(text))
	}
	var buf []byte
	if out, err := decompress(cp, &buf); err != nil || !bytes.Equal(out, text) {
		t.Fatalf("text round trip: %v", err)
	}
	// Compressible where the probes look (start, middle, end), random
	// elsewhere: compressed whole, and it does shrink.
	mixed := bytes.Clone(random)
	for _, off := range []int{0, (len(mixed) - probeBytes) / 2, len(mixed) - probeBytes} {
		clear(mixed[off : off+probeBytes])
	}
	if _, ok := c.compress(mixed); !ok {
		t.Fatal("mixed payload with compressible probes not compressed")
	}
	// Below probeFrom no probe is made: a small random payload is tried
	// whole and not counted.
	if _, ok := c.compress(random[:probeFrom-1]); ok {
		t.Fatal("compressed small random payload")
	}
	if got := ctr.incompressible.Load(); got != 1 {
		t.Fatalf("incompressible = %d, want still 1", got)
	}
}

func BenchmarkCompress(b *testing.B) {
	random := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("vlan 100 port 7 state forwarding\n"), 8<<10)[:256<<10]
	// Pages of random values with small headers between them, as an
	// internal init of hashed or encrypted state sends them.
	pages := bytes.Clone(random)
	for off := 0; off < len(pages); off += 2048 {
		clear(pages[off : off+48])
	}
	for _, tc := range []struct {
		name string
		p    []byte
	}{{"random-256K", random}, {"pages-256K", pages}, {"text-256K", text}} {
		b.Run(tc.name, func(b *testing.B) {
			c := compressor{threshold: normThreshold(0)}
			b.SetBytes(int64(len(tc.p)))
			for b.Loop() {
				c.compress(tc.p)
			}
		})
	}
}
