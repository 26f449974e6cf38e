package backplane

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFuzzCorpus regenerates testdata/fuzz seeds when
// BACKPLANE_WRITE_CORPUS=1; otherwise it checks they exist.
func TestWriteFuzzCorpus(t *testing.T) {
	good := AppendFrame(nil, Header{Type: 1, Group: 9, From: 2, To: 1, MsgID: 1, NFrags: 1}, []byte("payload"))
	frag := func(i int) []byte {
		return AppendFrame(nil, Header{Type: 1, Group: 9, From: 2, To: AllSites, MsgID: 5, Frag: uint16(i), NFrags: 3}, bytes.Repeat([]byte{byte(i)}, 40))
	}
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 1
	var seq []byte
	for _, i := range []int{2, 0, 0, 1} {
		f := frag(i)
		seq = append(append(seq, byte(len(f))), f...)
	}
	var c compressor
	cp, _ := c.compress(bytes.Repeat([]byte("backplane "), 1000))
	lz := AppendFrame(nil, Header{Type: 1, Group: 9, From: 2, To: 1, MsgID: 9, NFrags: 1, Flags: FlagLZ4}, cp)
	seeds := map[string][][]byte{
		"FuzzDecodeFrame": {good, badCRC, good[:20], frag(1), append(bytes.Clone(good), 0, 0, 0, 0)},
		"FuzzRxFrames":    {seq, append([]byte{byte(len(good))}, good...), append([]byte{byte(len(lz))}, lz...)},
		"FuzzDecompress":  {bytes.Clone(cp), {0xff, 0xff, 0xff, 0x7f, 0}, {4, 0, 0, 0, 0x40, 1, 2, 3, 4}},
	}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, b := range list {
			path := filepath.Join(dir, fmt.Sprintf("seed%d", i))
			if os.Getenv("BACKPLANE_WRITE_CORPUS") == "1" {
				var sb bytes.Buffer
				sb.WriteString("go test fuzz v1\n[]byte(\"")
				for _, c := range b {
					fmt.Fprintf(&sb, "\\x%02x", c)
				}
				sb.WriteString("\")\n")
				if err := os.WriteFile(path, sb.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if _, err := os.Stat(path); err != nil {
				t.Errorf("fuzz seed missing (run with BACKPLANE_WRITE_CORPUS=1): %v", err)
			}
		}
	}
}
