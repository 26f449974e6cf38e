package inmem

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/seed61e250c8/boardha/logbuf"
)

const fuzzPS = 1024

// fuzzTx builds a read transaction over a 4-page pool made of the fuzz input, so
// every reader path runs on hostile pages: readers do not validate whole pages,
// they rely on per-access checks.
func fuzzTx(data []byte) *Tx {
	pool := make([]byte, 5*fuzzPS)
	copy(pool[fuzzPS:], data)
	return &Tx{data: pool, ps: fuzzPS, lo: 1, npages: 5, meta: meta{root: 1, txid: 1}, unpin: func() {}}
}

func FuzzDecodePage(f *testing.F) {
	for _, s := range samplePages(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= pageHeaderSize {
			_ = validatePage(data, pPgno(data), len(data))
			_ = validatePage(data, pPgno(data), fuzzPS)
		}
		if len(data) >= pageHeaderSize {
			q := make([]byte, len(data))
			initPage(q, pType(data), 1, 1)
			rebuildBoth(t, data, "fuzz input")
			if rebuildChecked(q, data) && pType(q) == pageLeaf {
				if err := validatePage(q, 1, len(q)); err != nil && validatePage(data, pPgno(data), len(data)) == nil {
					t.Fatalf("rebuilt copy of a valid page is invalid: %v", err)
				}
			}
		}
		tx := fuzzTx(data)
		_, _ = tx.get(1, []byte("k0001"))
		_, _ = tx.get(1, nil)
		c := tx.cursorOn(1)
		n := 0
		for k, _ := c.First(); k != nil && n < 1000; k, _ = c.Next() {
			n++
		}
		tx.err = nil
		for k, _ := c.Last(); k != nil && n < 2000; k, _ = c.Prev() {
			n++
		}
		tx.err = nil
		c.Seek([]byte("k0005"))
		tx.err = nil
		_ = tx.Check()
		_ = tx.walk(tx.meta, true, func(uint64, int) error { return nil })
	})
}

func FuzzDecodeMeta(f *testing.F) {
	m := meta{pageSize: 4096, nextDB: 3, txid: 77, root: 9, lsn: 1000, commitLSN: 900, chain: 5, lastTxn: 76, numPages: 100, gen: 2}
	b := make([]byte, metaSize)
	m.encode(b)
	f.Add(b)
	f.Add(b[:100])
	// An environment in which no database was ever created: no catalog.
	empty := meta{pageSize: 4096, nextDB: 1, txid: 1, numPages: 100}
	eb := make([]byte, metaSize)
	empty.encode(eb)
	f.Add(eb)
	l := layout{meta: [2]uint64{1, 2}, logPgno: 3, logPages: 10, pageSize: 4096}
	lb := make([]byte, layoutSize)
	l.encode(lb)
	f.Add(lb)
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := decodeMeta(data); err == nil {
			b := make([]byte, metaSize)
			m.encode(b)
			if m2, err := decodeMeta(b); err != nil || m2 != m {
				t.Fatalf("meta round trip: %+v -> %+v, %v", m, m2, err)
			}
		}
		if l, err := decodeLayout(data, 1<<20); err == nil {
			b := make([]byte, layoutSize)
			l.encode(b)
			if !bytes.Equal(b, data[:layoutSize]) {
				t.Fatalf("layout round trip differs")
			}
		}
	})
}

func FuzzRedoBody(f *testing.F) {
	f.Add(appendRedoBody(nil, 3, []byte("key"), []byte("value")))
	f.Add(appendCommitBody(nil, 4, 0xdeadbeef))
	f.Add(AppendCheckpointBody(nil, CheckpointInfo{Txid: 5, LSN: 99, CatalogRoot: 7, DBs: []DBInfo{{"a", 1, 10}, {"bb", 2, 11}}}))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if op, err := decodeRedoBody(data); err == nil {
			if b := appendRedoBody(nil, op.db, op.key, op.val); !bytes.Equal(b, data) {
				t.Fatalf("redo body round trip differs")
			}
		}
		if n, c, err := decodeCommitBody(data); err == nil {
			if b := appendCommitBody(nil, n, c); !bytes.Equal(b[:4], data[:4]) || !bytes.Equal(b[8:], data[8:]) {
				t.Fatalf("commit body round trip differs")
			}
		}
		_, _ = decodeNewGenBody(data)
		if ci, err := DecodeCheckpointBody(data); err == nil {
			if b := AppendCheckpointBody(nil, ci); !bytes.Equal(b, data) {
				t.Fatalf("checkpoint body round trip differs")
			}
		}
		// Whole records through the apply validator.
		_, _ = scanTxns(data, 0)
		rec := logbuf.EncodeRecord(nil, logbuf.Record{Type: logbuf.RecPut, Body: data})
		_, _ = scanTxns(rec, 0)
	})
}

// samplePages returns real leaf, branch and overflow pages from a small tree.
func samplePages(t testing.TB) [][]byte {
	e, err := Create(Options{PageSize: fuzzPS, PoolSize: 1 << 20, LogSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		for i := range 60 {
			if err := db.Put(fmt.Appendf(nil, "k%04d", i), bytes.Repeat([]byte{byte(i)}, i%7*3)); err != nil {
				return err
			}
		}
		return db.Put([]byte("big"), make([]byte, 1500))
	})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	seenType := map[uint8]bool{}
	_ = e.View(func(tx *Tx) error {
		return tx.walk(tx.meta, false, func(pg uint64, n int) error {
			p, _ := tx.rawPage(pg)
			if !seenType[pType(p)] {
				seenType[pType(p)] = true
				// Renumber as page 1, the fuzz pool's root.
				q := append([]byte(nil), tx.data[pg*fuzzPS:(pg+uint64(n))*fuzzPS]...)
				copy(q[16:24], []byte{1, 0, 0, 0, 0, 0, 0, 0})
				out = append(out, q)
			}
			return nil
		})
	})
	return out
}

// wireSeeds are sample pages whole and in their wire form.
func wireSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, p := range samplePages(t) {
		out = append(out, p, appendWirePage(nil, p))
	}
	return out
}

// TestWriteFuzzCorpus regenerates testdata/fuzz seed files (BOARDHA_WRITE_CORPUS=1).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("BOARDHA_WRITE_CORPUS") == "" {
		t.Skip("set BOARDHA_WRITE_CORPUS=1 to regenerate the committed seed corpus")
	}
	m := meta{pageSize: 4096, nextDB: 3, txid: 77, root: 9, lsn: 1000, commitLSN: 900, chain: 5, lastTxn: 76, numPages: 100, gen: 2}
	mb := make([]byte, metaSize)
	m.encode(mb)
	corpora := map[string][][]byte{
		"FuzzDecodePage": samplePages(t),
		"FuzzDecodeMeta": {mb},
		"FuzzWirePage":   wireSeeds(t),
		"FuzzImportTree": newFuzzImport(t).seeds(),
		"FuzzRedoBody": {
			appendRedoBody(nil, 3, []byte("key"), []byte("value")),
			appendCommitBody(nil, 4, 0xdeadbeef),
			AppendCheckpointBody(nil, CheckpointInfo{Txid: 5, LSN: 99, CatalogRoot: 7, DBs: []DBInfo{{"a", 1, 10}}}),
		},
	}
	for name, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
