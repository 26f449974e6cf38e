package inmem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"github.com/seed61e250c8/boardha/logbuf"
	"github.com/seed61e250c8/boardha/shm"
)

func TestPoolFullAbortsCleanly(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 256 << 10, LogSize: 8 << 20})
	var good uint64
	var err error
	for i := 0; i < 10000; i++ {
		_, err = e.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("d")
			if err != nil {
				return err
			}
			for j := range 20 {
				if err := db.Put(fmt.Appendf(nil, "k%05d-%02d", i, j), make([]byte, 150)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			break
		}
		good = e.ContentHash()
	}
	if !errors.Is(err, ErrPoolFull) || !errors.Is(err, shm.ErrPoolFull) || !strings.Contains(err.Error(), "pages") {
		t.Fatalf("want ErrPoolFull with sizes, got %v", err)
	}
	if e.ContentHash() != good {
		t.Fatal("failed transaction changed the committed content")
	}
	mustNoErr(t, e.Check(), "check after pool full")
	last := e.LastCommit()
	if e.Log().End() != last.End {
		t.Fatalf("aborted transaction left log records: end %d, last commit end %d", e.Log().End(), last.End)
	}
	// Dropping the data makes room again.
	_, err = e.Update(func(tx *Tx) error { return tx.DropDB("d") })
	mustNoErr(t, err, "drop")
	_, err = e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("e")
		if err != nil {
			return err
		}
		return db.Put([]byte("k"), make([]byte, 20000))
	})
	mustNoErr(t, err, "put after drop")
}

func TestLimits(t *testing.T) {
	e := newTestEnv(t, Options{PoolSize: 16 << 20})
	_, err := e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		if err := db.Put(bytes.Repeat([]byte("k"), MaxKeySize), make([]byte, 64<<10)); err != nil {
			return fmt.Errorf("max key with a 64 KiB value: %w", err)
		}
		if err := db.Put([]byte("big"), make([]byte, MaxValueSize)); err != nil {
			return fmt.Errorf("max value: %w", err)
		}
		err = db.Put(bytes.Repeat([]byte("k"), MaxKeySize+1), nil)
		if !errors.Is(err, ErrKeyTooLarge) || !strings.Contains(err.Error(), "1024") {
			return fmt.Errorf("oversize key: %v", err)
		}
		err = db.Put([]byte("v"), make([]byte, MaxValueSize+1))
		if !errors.Is(err, ErrValueTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(MaxValueSize)) {
			return fmt.Errorf("oversize value: %v", err)
		}
		if err := db.Put(nil, []byte("x")); !errors.Is(err, ErrKeyEmpty) {
			return fmt.Errorf("empty key: %v", err)
		}
		return tx.Err()
	})
	mustNoErr(t, err, "limits")
	err = e.View(func(tx *Tx) error {
		db := tx.DB("d")
		if v := db.Get([]byte("big")); len(v) != MaxValueSize {
			return fmt.Errorf("big value has %d bytes", len(v))
		}
		if err := db.Put([]byte("a"), nil); !errors.Is(err, ErrReadOnlyTx) {
			return fmt.Errorf("put in a read transaction: %v", err)
		}
		return tx.Check()
	})
	mustNoErr(t, err, "view")
	tx, err := e.Begin(true)
	mustNoErr(t, err, "begin")
	db := tx.DB("d")
	tx.Abort()
	if err := db.Put([]byte("a"), nil); !errors.Is(err, ErrTxClosed) {
		t.Fatalf("put after abort: %v", err)
	}
	if _, err := tx.Commit(); !errors.Is(err, ErrTxClosed) {
		t.Fatalf("commit after abort: %v", err)
	}
}

func TestSecondWriter(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	if _, err := Open(e.Name()); !errors.Is(err, ErrWriterActive) {
		t.Fatalf("second writer on a live region: %v", err)
	}
	// A closed writer's region can be reopened with its content.
	_, err := e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		return db.Put([]byte("k"), []byte("v"))
	})
	mustNoErr(t, err, "put")
	h, last := e.ContentHash(), e.LastCommit()
	mustNoErr(t, e.Close(), "close")
	e2, err := Open(e.Name())
	mustNoErr(t, err, "reopen")
	defer e2.Close()
	if e2.ContentHash() != h || e2.LastCommit() != last {
		t.Fatalf("reopened env differs: last %+v, want %+v", e2.LastCommit(), last)
	}
	mustNoErr(t, e2.Check(), "check reopened")
	_, err = e2.Update(func(tx *Tx) error { return tx.DB("d").Put([]byte("k2"), []byte("v2")) })
	mustNoErr(t, err, "write after reopen")
}

func TestRecoverRedoesLoggedCommit(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	put := func(k string) {
		_, err := e.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("d")
			if err != nil {
				return err
			}
			return db.Put([]byte(k), []byte("v"))
		})
		mustNoErr(t, err, "put")
	}
	put("a")
	// Simulate a writer that died after appending its records but before the meta
	// flip: roll the meta pages back to the state before the last commit.
	before := make([]byte, 2*e.ps)
	off := e.lay.meta[0] * uint64(e.ps)
	copy(before, e.data[off:off+uint64(2*e.ps)])
	put("b")
	h := e.ContentHash()
	copy(e.data[off:], before)
	mustNoErr(t, e.Close(), "close")
	e2, err := Open(e.Name())
	mustNoErr(t, err, "open")
	defer e2.Close()
	if e2.ContentHash() != h {
		t.Fatal("recovery did not redo the logged commit")
	}
	mustNoErr(t, e2.Check(), "check")
}

func TestAttachCorruptRegion(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	initInvariant(t, e)
	path := e.Region().Path()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	mustNoErr(t, err, "open region file")
	defer f.Close()
	junk := bytes.Repeat([]byte{0xA5}, 64)
	// Both meta pages garbage: attach refuses with ErrCorrupt.
	saved := make([]byte, 2*e.ps)
	_, err = f.ReadAt(saved, int64(e.lay.meta[0])*int64(e.ps))
	mustNoErr(t, err, "read metas")
	for _, pg := range e.lay.meta {
		_, err = f.WriteAt(junk, int64(pg)*int64(e.ps))
		mustNoErr(t, err, "write junk")
	}
	if _, err := AttachReadOnly(e.Name()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("attach with corrupt metas: %v", err)
	}
	_, err = f.WriteAt(saved, int64(e.lay.meta[0])*int64(e.ps))
	mustNoErr(t, err, "restore metas")
	// A corrupt tree page: reads return ErrCorrupt, no panic.
	r, err := AttachReadOnly(e.Name())
	mustNoErr(t, err, "attach")
	defer r.Close()
	var root uint64
	mustNoErr(t, e.View(func(tx *Tx) error { root = tx.DB("inv").root; return nil }), "root")
	for _, corruption := range [][]byte{junk, {pageLeaf, 0, 0xff, 0xff}, {pageBranch, 0, 1, 0}} {
		pg := make([]byte, e.ps)
		_, err = f.ReadAt(pg, int64(root)*int64(e.ps))
		mustNoErr(t, err, "read page")
		_, err = f.WriteAt(corruption, int64(root)*int64(e.ps))
		mustNoErr(t, err, "corrupt page")
		if _, err := r.ContentHash(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("reading a corrupt page: %v", err)
		}
		_, err = f.WriteAt(pg, int64(root)*int64(e.ps))
		mustNoErr(t, err, "restore page")
	}
	// Garbage layout in the user area.
	if _, err := r.ContentHash(); err != nil {
		t.Fatalf("after restoring: %v", err)
	}
	ua := e.Region().UserArea()
	savedUA := append([]byte(nil), ua[:layoutSize]...)
	copy(ua, junk)
	if _, err := AttachReadOnly(e.Name()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("attach with a corrupt layout: %v", err)
	}
	copy(ua, savedUA)
}

func TestApplyRejectsBadBatches(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	r := newTestEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	_, err := m.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("d")
		if err != nil {
			return err
		}
		return db.Put([]byte("k"), []byte("v"))
	})
	mustNoErr(t, err, "put")
	b, _, err := m.Log().ReadEncoded(0, 1<<20, nil)
	mustNoErr(t, err, "read")
	b = append([]byte(nil), b...)
	check := func(what string, batch []byte, want error) {
		t.Helper()
		if _, err := r.ApplyEncoded(batch); !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", what, err, want)
		}
		if r.Log().End() != 0 || r.ContentHash() != 0 {
			t.Fatalf("%s: rejected batch changed the replica", what)
		}
	}
	check("garbage", bytes.Repeat([]byte{7}, 100), ErrBadRecords)
	check("partial transaction", b[:len(b)-commitRecLen], ErrBadRecords)
	wrongLSN := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(wrongLSN[24:], 5)
	reseal(wrongLSN)
	check("LSN gap", wrongLSN, ErrBadRecords)
	// A commit whose chain disagrees (a diverged log): the transaction is refused.
	bad := append([]byte(nil), b...)
	c := bad[len(bad)-commitRecLen:]
	binary.LittleEndian.PutUint64(c[logbuf.HeaderSize+8:], 12345)
	reseal(c)
	check("chain mismatch", bad, ErrChainMismatch)
	_, err = r.ApplyEncoded(b)
	mustNoErr(t, err, "good batch")
	if r.ContentHash() != m.ContentHash() {
		t.Fatal("replica differs")
	}
}

// reseal recomputes the crc of one encoded record.
func reseal(rec []byte) {
	binary.LittleEndian.PutUint32(rec[12:], 0)
	binary.LittleEndian.PutUint32(rec[12:], crc32.Checksum(rec[:binary.LittleEndian.Uint32(rec)], castagnoli))
}

func TestImportRejectsBadPages(t *testing.T) {
	m := newTestEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	initInvariant(t, m)
	s, err := m.PinSnapshot()
	mustNoErr(t, err, "pin")
	defer s.Release()
	im, err := NewImport(Options{PoolSize: 1 << 20, LogSize: 1 << 20}, s.Meta())
	mustNoErr(t, err, "import")
	defer im.Abort()
	pages := s.PageList()
	pg, err := s.ReadPage(pages[0], nil)
	mustNoErr(t, err, "read page")
	if err := im.PutPage(im.e.npages+5, pg); !errors.Is(err, ErrLayout) {
		t.Fatalf("page outside the pool: %v", err)
	}
	if err := im.PutPage(1, pg); !errors.Is(err, ErrLayout) {
		t.Fatalf("page in the reserved area: %v", err)
	}
	if err := im.PutPage(pages[0], pg[:100]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short page: %v", err)
	}
	bad := append([]byte(nil), pg...)
	bad[2] = 0xff
	if err := im.PutPage(pages[0], bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt page: %v", err)
	}
	mustNoErr(t, im.PutPage(pages[0], pg), "good page")
	if _, err := im.Finish(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("finish with pages missing: %v", err)
	}
	if _, err := NewImport(Options{}, []byte("short")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad meta: %v", err)
	}
}
