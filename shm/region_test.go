package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestCreateAttachRemove(t *testing.T) {
	name := uniqueName(t)
	w := newRegion(t, name, Options{Size: 1 << 20})
	if w.Path() != "/dev/shm/"+name || w.Name() != name || w.ReadOnly() || w.Private() {
		t.Fatalf("path %q name %q ro %v private %v", w.Path(), w.Name(), w.ReadOnly(), w.Private())
	}
	fi, err := os.Stat(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 1<<20 {
		t.Fatalf("file mode %v size %d, want 0600 and %d", fi.Mode(), fi.Size(), 1<<20)
	}
	if w.PageSize() != DefaultPageSize || w.NumPages() != 256 || w.FirstDataPage() != 3 || len(w.Data()) != 1<<20 {
		t.Fatalf("geometry: page %d pages %d first %d data %d", w.PageSize(), w.NumPages(), w.FirstDataPage(), len(w.Data()))
	}
	if len(w.UserArea()) < 512 {
		t.Fatalf("user area %d bytes, want >= 512", len(w.UserArea()))
	}
	copy(w.UserArea(), "meta pointers")
	pg, err := w.Pages(10, 2)
	if err != nil || len(pg) != 2*DefaultPageSize {
		t.Fatalf("Pages(10,2) = %d bytes, %v", len(pg), err)
	}
	copy(pg, "page ten")

	if _, err := Create(name, Options{Size: 1 << 20}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	for _, mode := range []AttachMode{ReadOnly, ReadWrite} {
		a := attach(t, name, mode)
		if a.ReadOnly() != (mode == ReadOnly) || a.NumPages() != w.NumPages() || a.FirstDataPage() != w.FirstDataPage() {
			t.Fatalf("%v attach: ro %v pages %d first %d", mode, a.ReadOnly(), a.NumPages(), a.FirstDataPage())
		}
		if !bytes.HasPrefix(a.UserArea(), []byte("meta pointers")) {
			t.Fatalf("%v attach does not see the user area", mode)
		}
		p, _ := a.Pages(10, 1)
		if !bytes.HasPrefix(p, []byte("page ten")) {
			t.Fatalf("%v attach does not see page 10", mode)
		}
	}
	if _, err := w.Pages(255, 2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Pages past the end = %v, want ErrInvalid", err)
	}
	if _, err := w.Pages(^uint64(0), 2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Pages overflowing = %v, want ErrInvalid", err)
	}
	if err := Remove(name); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(name, ReadOnly); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Attach after Remove = %v, want os.ErrNotExist", err)
	}
	if err := Remove(name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("second Remove = %v, want os.ErrNotExist", err)
	}
	// The creator's mapping outlives the file.
	if !bytes.HasPrefix(w.UserArea(), []byte("meta pointers")) {
		t.Fatal("mapping lost after Remove")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Pages(10, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pages after Close = %v, want ErrClosed", err)
	}
}

func TestCreateOptions(t *testing.T) {
	for _, ps := range []int{512, 1024, 8192, 65536} {
		r := newRegion(t, "", Options{PageSize: ps, Size: 1 << 20, MaxReaders: 7})
		if r.PageSize() != ps || r.Size() != 1<<20 {
			t.Fatalf("page size %d: got page %d size %d", ps, r.PageSize(), r.Size())
		}
		meta := r.FirstDataPage() * uint64(ps)
		if meta < readerTableOff+7*ReaderSlotSize {
			t.Fatalf("page size %d: %d metadata bytes cannot hold the reader table", ps, meta)
		}
		if _, err := DecodeHeader(r.Data()); err != nil {
			t.Fatalf("page size %d: own header does not decode: %v", ps, err)
		}
	}
	r := newRegion(t, "", Options{Size: 5*4096 + 1})
	if r.NumPages() != 6 {
		t.Fatalf("size rounds up to whole pages: got %d pages, want 6", r.NumPages())
	}
	for _, tc := range []struct {
		name string
		opt  Options
		want error
	}{
		{"", Options{PageSize: 1000}, ErrBadPageSize},
		{"", Options{PageSize: 256}, ErrBadPageSize},
		{"", Options{PageSize: 1 << 17}, ErrBadPageSize},
		{"", Options{PageSize: -4096}, ErrBadPageSize},
		{"", Options{Size: 4096}, ErrInvalid},
		{"", Options{Size: -1}, ErrInvalid},
		{"", Options{MaxReaders: -1}, ErrInvalid},
		{"", Options{MaxReaders: MaxReaders + 1}, ErrInvalid},
		{"a/b", Options{}, ErrInvalid},
		{"..", Options{}, ErrInvalid},
	} {
		if _, err := Create(tc.name, tc.opt); !errors.Is(err, tc.want) {
			t.Errorf("Create(%q, %+v) = %v, want %v", tc.name, tc.opt, err, tc.want)
		}
	}
	name := uniqueName(t)
	newRegion(t, name, Options{Size: 1 << 16, Mode: 0o640})
	if fi, err := os.Stat("/dev/shm/" + name); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode 0640 asked, got %v (%v)", fi.Mode(), err)
	}
}

func TestPrivateRegion(t *testing.T) {
	r := newRegion(t, "", Options{Size: 256 << 10})
	if r.Path() != "" || !r.Private() || r.ReadOnly() {
		t.Fatalf("private: path %q private %v ro %v", r.Path(), r.Private(), r.ReadOnly())
	}
	if _, err := Attach("", ReadOnly); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Attach(\"\") = %v, want ErrInvalid", err)
	}
	if err := r.LockWriter(); err != nil {
		t.Fatal(err)
	}
	s, err := r.AcquireReader()
	if err != nil {
		t.Fatal(err)
	}
	s.Set(42)
	if tx, ok := r.OldestReader(); !ok || tx != 42 {
		t.Fatalf("OldestReader = %d %v, want 42", tx, ok)
	}
	pg, err := r.Allocator().Alloc(3)
	if err != nil || pg != r.FirstDataPage() {
		t.Fatalf("Alloc(3) = %d, %v; want first data page %d", pg, err, r.FirstDataPage())
	}
	b, _ := r.Pages(pg, 3)
	for i := range b {
		b[i] = 0xAB
	}
	if err := Remove(""); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.HighWater != pg+3 || h.WriterPID != uint32(os.Getpid()) {
		t.Fatalf("header high water %d writer %d", h.HighWater, h.WriterPID)
	}
}

// rewriteCRC recomputes the header checksum after a deliberate edit.
func rewriteCRC(b []byte) {
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:staticLen], castagnoli))
}

func TestAttachCorrupt(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(path string, b []byte) []byte // returns the new file contents
		want   error
	}{
		{"empty file", func(_ string, b []byte) []byte { return nil }, ErrTruncated},
		{"shorter than a header", func(_ string, b []byte) []byte { return b[:100] }, ErrTruncated},
		{"shorter than the region", func(_ string, b []byte) []byte { return b[:len(b)/2] }, ErrTruncated},
		{"shorter than one page", func(_ string, b []byte) []byte { return b[:HeaderSize+10] }, ErrTruncated},
		{"bad magic", func(_ string, b []byte) []byte { b[0] ^= 0xff; return b }, ErrBadMagic},
		{"zeroed", func(_ string, b []byte) []byte { clear(b); return b }, ErrBadMagic},
		{"bad version", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offVersion:], 99)
			rewriteCRC(b)
			return b
		}, ErrBadVersion},
		{"flipped bit", func(_ string, b []byte) []byte { b[offNumPages] ^= 1; return b }, ErrChecksum},
		{"absurd page size", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offPageSize:], 3000)
			rewriteCRC(b)
			return b
		}, ErrBadPageSize},
		{"huge page size", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offPageSize:], 1<<30)
			rewriteCRC(b)
			return b
		}, ErrBadPageSize},
		{"region size mismatch", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint64(b[offRegionSize:], 12345)
			rewriteCRC(b)
			return b
		}, ErrBadGeometry},
		{"no data pages", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint64(b[offNumPages:], 3)
			binary.LittleEndian.PutUint64(b[offRegionSize:], 3*4096)
			rewriteCRC(b)
			return b
		}, ErrBadGeometry},
		{"reader table overflows metadata", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offReaderSlots:], 1000)
			rewriteCRC(b)
			return b
		}, ErrBadGeometry},
		{"high water beyond the end", func(_ string, b []byte) []byte {
			binary.LittleEndian.PutUint64(b[offHighWater:], 1<<40)
			return b
		}, ErrBadGeometry},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			name := uniqueName(t)
			r := newRegion(t, name, Options{Size: 64 << 10})
			path := r.Path()
			orig := append([]byte(nil), r.Data()...)
			r.Close()
			if err := os.WriteFile(path, tc.mutate(path, orig), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, mode := range []AttachMode{ReadOnly, ReadWrite} {
				a, err := Attach(name, mode)
				if err == nil {
					a.Close()
					t.Fatalf("%v: Attach succeeded on a corrupt region", mode)
				}
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, tc.want) {
					t.Fatalf("%v: Attach = %v, want ErrCorrupt and %v", mode, err, tc.want)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
			}
		})
	}
}

func TestAttachNotRegion(t *testing.T) {
	if _, err := Attach("/dev/shm", ReadOnly); err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Attach(directory) = %v, want ErrInvalid", err)
	}
	if _, err := Attach("boardha-shmtest-missing-"+strconv.Itoa(os.Getpid()), ReadWrite); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Attach(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestReadOnlyAttach(t *testing.T) {
	name := uniqueName(t)
	w := newRegion(t, name, Options{Size: 1 << 20})
	ro := attach(t, name, ReadOnly)
	// The kernel's view: the region read-only and shared, only the reader table writable.
	if p := mappingPerms(t, ro.Data()); p != "r--s" {
		t.Fatalf("read-only attachment mapped %s, want r--s", p)
	}
	if p := mappingPerms(t, ro.tableMap); p != "rw-s" {
		t.Fatalf("reader table of a read-only attachment mapped %s, want rw-s", p)
	}
	if p := mappingPerms(t, w.Data()); p != "rw-s" {
		t.Fatalf("creator mapped %s, want rw-s", p)
	}
	if err := ro.LockWriter(); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("LockWriter on read-only = %v, want ErrReadOnly", err)
	}
	if _, err := ro.Allocator().Alloc(1); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Alloc on read-only = %v, want ErrReadOnly", err)
	}
	// The reader table is writable even though the region is not.
	s, err := ro.AcquireReader()
	if err != nil {
		t.Fatal(err)
	}
	s.Set(7)
	if tx, ok := w.OldestReader(); !ok || tx != 7 {
		t.Fatalf("writer sees OldestReader %d %v, want 7", tx, ok)
	}
	if got := w.Readers(); len(got) != 1 || got[0].PID != os.Getpid() || got[0].Txid != 7 {
		t.Fatalf("Readers() = %+v", got)
	}
	s.Clear()
	if _, ok := w.OldestReader(); ok {
		t.Fatal("cleared slot still counted")
	}
	s.Set(9)
	ro.Close() // releases the slot
	if _, ok := w.OldestReader(); ok || len(w.Readers()) != 0 {
		t.Fatalf("slot survives Close: %+v", w.Readers())
	}
	s.Set(10) // no-op after release, must not fault
}

func TestReaderTable(t *testing.T) {
	r := newRegion(t, "", Options{Size: 256 << 10, MaxReaders: 3})
	var slots []*ReaderSlot
	for i := 0; i < 3; i++ {
		s, err := r.AcquireReader()
		if err != nil {
			t.Fatal(err)
		}
		s.Set(uint64(100 - i))
		slots = append(slots, s)
	}
	_, err := r.AcquireReader()
	if !errors.Is(err, ErrReaderTableFull) || !strings.Contains(err.Error(), "3 slots") {
		t.Fatalf("4th AcquireReader = %v, want ErrReaderTableFull naming 3 slots", err)
	}
	if tx, _ := r.OldestReader(); tx != 98 {
		t.Fatalf("OldestReader = %d, want 98", tx)
	}
	slots[2].Release()
	slots[2].Release()
	if tx, _ := r.OldestReader(); tx != 99 {
		t.Fatalf("after release OldestReader = %d, want 99", tx)
	}
	s, err := r.AcquireReader()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.OldestReader(); !ok {
		t.Fatal("lost readers")
	}
	if tx, _ := r.OldestReader(); tx != 99 {
		t.Fatalf("fresh slot must not inherit a snapshot: OldestReader = %d", tx)
	}
	s.Set(5)
	// A slot whose owner word names this pid with another start time belongs to an
	// earlier process that had our pid: dead. It is reclaimed both by the scan and when
	// the table is full.
	stale := r.self
	stale.start++
	*r.slotWord(s.Index(), slotOwner) = stale.word()
	if tx, _ := r.OldestReader(); tx != 99 {
		t.Fatalf("dead slot counted: OldestReader = %d, want 99", tx)
	}
	if len(r.Readers()) != 2 {
		t.Fatalf("dead slot not reclaimed: %+v", r.Readers())
	}
	*r.slotWord(slots[0].Index(), slotOwner) = stale.word()
	*r.slotWord(s.Index(), slotOwner) = stale.word()
	if _, err := r.AcquireReader(); err != nil {
		t.Fatalf("AcquireReader with a full table of which one slot is dead: %v", err)
	}
}

func TestWriterLockInProcess(t *testing.T) {
	name := uniqueName(t)
	a := newRegion(t, name, Options{Size: 1 << 20})
	b := attach(t, name, ReadWrite)
	if err := a.LockWriter(); err != nil {
		t.Fatal(err)
	}
	if err := a.LockWriter(); err != nil {
		t.Fatalf("relock by holder: %v", err)
	}
	err := b.LockWriter()
	if !errors.Is(err, ErrWriterActive) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second handle LockWriter = %v, want ErrWriterActive naming pid %d", err, os.Getpid())
	}
	if err := b.UnlockWriter(); !errors.Is(err, ErrWriterNotHeld) {
		t.Fatalf("UnlockWriter by non-holder = %v", err)
	}
	if err := a.UnlockWriter(); err != nil {
		t.Fatal(err)
	}
	if err := b.LockWriter(); err != nil {
		t.Fatal(err)
	}
	if b.TookOver() != 0 || !b.HoldsWriter() || a.HoldsWriter() {
		t.Fatalf("TookOver %d holds b %v a %v", b.TookOver(), b.HoldsWriter(), a.HoldsWriter())
	}
	b.Close() // Close releases the lock
	if err := a.LockWriter(); err != nil {
		t.Fatalf("lock after holder closed: %v", err)
	}
	// A lock word left by an earlier process with our pid (another start time) is dead.
	a.UnlockWriter()
	stale := a.self
	stale.start++
	*a.word(offWriterLock) = stale.word()
	if err := a.LockWriter(); err != nil {
		t.Fatalf("takeover of a stale lock word: %v", err)
	}
	if a.TookOver() != os.Getpid() || a.Header().Takeovers != 1 {
		t.Fatalf("TookOver %d takeovers %d", a.TookOver(), a.Header().Takeovers)
	}
}

func TestCrossProcessReaderReclaim(t *testing.T) {
	w, c := tableWithChildReader(t, Options{Size: 1 << 20}, "BOARDHA_SHM_TXID=17")
	if err := w.LockWriter(); err != nil {
		t.Fatal(err)
	}
	tx, ok := w.OldestReader()
	if !ok || tx != 17 {
		t.Fatalf("OldestReader with a live child = %d %v, want 17", tx, ok)
	}
	rs := w.Readers()
	if len(rs) != 2 {
		t.Fatalf("Readers() = %+v, want 2", rs)
	}
	var found bool
	for _, ri := range rs {
		found = found || (ri.PID == c.pid() && ri.Txid == 17)
	}
	if !found {
		t.Fatalf("child pid %d not in reader table %+v", c.pid(), rs)
	}
	c.kill(t)
	// The scan trusts a reader it checked for livenessTTL; the deadline is
	// far beyond that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tx, ok = w.OldestReader()
		if ok && tx == 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OldestReader 10 s after SIGKILL = %d %v, want 500 (own slot only)", tx, ok)
		}
		runtime.Gosched()
	}
	if rs := w.Readers(); len(rs) != 1 || rs[0].PID != os.Getpid() {
		t.Fatalf("dead child's slot not reclaimed: %+v", rs)
	}
}

// TestDeadIdleReaderSlot: a dead process's slot that holds no snapshot
// does not count for OldestReader (which no longer asks whether its
// process lives), and AcquireReader reclaims it when the table is full.
// tableWithChildReader is a region whose reader table holds a slot of this
// process at snapshot 500 and one of a child process (env as for the
// child's "reader" mode: BOARDHA_SHM_TXID=n for a snapshot, none for an
// idle slot).
func tableWithChildReader(t *testing.T, opt Options, env ...string) (*Region, *child) {
	t.Helper()
	name := uniqueName(t)
	w := newRegion(t, name, opt)
	own, err := w.AcquireReader()
	if err != nil {
		t.Fatal(err)
	}
	own.Set(500)
	c := startChild(t, "reader", name, env...)
	if c.line != "ready" {
		t.Fatalf("child said %q", c.line)
	}
	return w, c
}

func TestDeadIdleReaderSlot(t *testing.T) {
	w, c := tableWithChildReader(t, Options{Size: 1 << 20, MaxReaders: 2}) // the child: a slot, no snapshot
	if rs := w.Readers(); len(rs) != 2 {
		t.Fatalf("Readers() = %+v, want the child's slot too", rs)
	}
	c.kill(t)
	if tx, ok := w.OldestReader(); !ok || tx != 500 {
		t.Fatalf("OldestReader with the dead child's idle slot = %d %v, want 500", tx, ok)
	}
	if rs := w.Readers(); len(rs) != 2 {
		t.Fatalf("the scan reclaimed an idle slot (it should not look): %+v", rs)
	}
	s, err := w.AcquireReader()
	if err != nil {
		t.Fatalf("AcquireReader with the table full of a live and a dead process's slots: %v", err)
	}
	s.Release()
}

// TestFullTableReclaimsAtOnce: a reader that died a moment after the
// writer's scan trusted it (the liveness cache) does not keep its slot from
// AcquireReader on a full table: reclaiming asks the process table now.
func TestFullTableReclaimsAtOnce(t *testing.T) {
	w, c := tableWithChildReader(t, Options{Size: 1 << 20, MaxReaders: 2}, "BOARDHA_SHM_TXID=17")
	if tx, ok := w.OldestReader(); !ok || tx != 17 {
		t.Fatalf("OldestReader = %d %v, want the child's 17", tx, ok)
	}
	c.kill(t)
	s, err := w.AcquireReader()
	if err != nil {
		t.Fatalf("AcquireReader right after the reader the scan trusted died: %v", err)
	}
	s.Release()
}

func TestCrossProcessWriterLock(t *testing.T) {
	name := uniqueName(t)
	w := newRegion(t, name, Options{Size: 1 << 20})
	c := startChild(t, "writer", name)
	if c.line != "ready" {
		t.Fatalf("child said %q", c.line)
	}
	err := w.LockWriter()
	if !errors.Is(err, ErrWriterActive) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(c.pid())) {
		t.Fatalf("LockWriter against a live child = %v, want ErrWriterActive naming pid %d", err, c.pid())
	}
	if h := w.Header(); h.WriterPID != uint32(c.pid()) {
		t.Fatalf("header writer pid %d, want %d", h.WriterPID, c.pid())
	}
	c.kill(t)
	if err := w.LockWriter(); err != nil {
		t.Fatalf("LockWriter after the holder was killed: %v", err)
	}
	if w.TookOver() != c.pid() {
		t.Fatalf("TookOver = %d, want %d", w.TookOver(), c.pid())
	}
	// Now we hold it: a second live process is refused.
	c2 := startChild(t, "lockfail", name)
	if !strings.HasPrefix(c2.line, "refused") || !strings.Contains(c2.line, "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second writer process said %q, want a refusal naming pid %d", c2.line, os.Getpid())
	}
}

// TestCrossProcessZombies: a killed holder that its parent has not reaped yet is a
// zombie — its pid still answers kill(pid, 0) — and must still count as dead.
func TestCrossProcessZombies(t *testing.T) {
	name := uniqueName(t)
	w := newRegion(t, name, Options{Size: 1 << 20})
	c := startChild(t, "writer", name)
	c.killNoReap(t)
	if _, state, err := procStat(c.pid()); err != nil || state != 'Z' {
		t.Fatalf("child state %q (%v), want a zombie", state, err)
	}
	if err := w.LockWriter(); err != nil {
		t.Fatalf("LockWriter over a zombie holder: %v", err)
	}

	r := startChild(t, "reader", name, "BOARDHA_SHM_TXID=3")
	if tx, ok := w.OldestReader(); !ok || tx != 3 {
		t.Fatalf("OldestReader with a live reader = %d %v", tx, ok)
	}
	r.killNoReap(t)
	// The live verdict above is trusted for livenessTTL; the zombie must be reclaimed
	// once it lapses.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := w.OldestReader(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombie reader's slot still counted after 10s: %+v", w.Readers())
		}
		time.Sleep(time.Millisecond)
	}
	if len(w.Readers()) != 0 {
		t.Fatalf("zombie reader's slot not reclaimed: %+v", w.Readers())
	}
}

// mappingPerms returns the permissions of the mapping that starts at b, as the kernel
// reports them in /proc/self/maps.
func mappingPerms(t *testing.T, b []byte) string {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	start := strconv.FormatUint(uint64(uintptr(unsafe.Pointer(&b[0]))), 16)
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.TrimLeft(strings.SplitN(f[0], "-", 2)[0], "0") == start {
			return f[1]
		}
	}
	t.Fatalf("no mapping starts at %s", start)
	return ""
}

// TestCreateRace: creators racing on one name — exactly one wins, the rest get ErrExists —
// while an attacher polls: it sees no region or a complete one, never a corrupt one.
func TestCreateRace(t *testing.T) {
	name := uniqueName(t)
	const creators = 6
	var wg sync.WaitGroup
	stop := make(chan struct{})
	attachErr := make(chan error, 1)
	go func() {
		defer close(attachErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := Attach(name, ReadOnly)
			if err == nil {
				r.Close()
				continue
			}
			if !errors.Is(err, os.ErrNotExist) {
				attachErr <- err
				return
			}
		}
	}()
	results := make(chan error, creators)
	for i := 0; i < creators; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Create(name, Options{Size: 1 << 20})
			if err == nil {
				t.Cleanup(func() { r.Close() })
			}
			results <- err
		}()
	}
	wg.Wait()
	close(stop)
	close(results)
	won := 0
	for err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Errorf("losing Create = %v, want ErrExists", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creators won, want 1", won)
	}
	if err := <-attachErr; err != nil {
		t.Fatalf("concurrent Attach saw a half-made region: %v", err)
	}
	if m, _ := filepath.Glob("/dev/shm/" + name + ".creating-*"); len(m) != 0 {
		t.Fatalf("temporary files left behind: %v", m)
	}
}

// TestLazyRegionPopulate: a lazy region maps no page at creation; Populate
// maps exactly the pages asked for, keeps their contents, and refuses ranges
// outside the region and closed regions. mincore on the private (anonymous)
// mapping tells which pages are mapped.
func TestLazyRegionPopulate(t *testing.T) {
	r := newRegion(t, "", Options{Size: 4 << 20, Lazy: true})
	ps := uint64(r.PageSize())
	first := r.FirstDataPage()
	resident := func(pgno, n uint64) int {
		vec := make([]byte, n)
		if err := mincore(r.Data()[pgno*ps:(pgno+n)*ps], vec); err != nil {
			t.Fatal(err)
		}
		c := 0
		for _, v := range vec {
			c += int(v & 1)
		}
		return c
	}
	if got := resident(first, 64); got != 0 {
		t.Fatalf("%d of 64 pages of a lazy region mapped at creation", got)
	}
	b, _ := r.Pages(first+10, 1)
	b[0] = 0x5A // one page written before populating: its contents stay
	if err := r.Populate(first, 32); err != nil {
		t.Fatal(err)
	}
	if got := resident(first, 64); got != 32 {
		t.Fatalf("%d of 64 pages mapped after populating 32", got)
	}
	if b[0] != 0x5A {
		t.Fatalf("populate changed a written page: %#x", b[0])
	}
	if err := r.Populate(r.NumPages()-1, 2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("populate past the end: %v, want ErrInvalid", err)
	}
	if err := r.Populate(first, 0); err != nil {
		t.Fatalf("populate of no pages: %v", err)
	}
	eager := newRegion(t, "", Options{Size: 1 << 20})
	vec := make([]byte, 8)
	if err := mincore(eager.Data()[eager.FirstDataPage()*ps:(eager.FirstDataPage()+8)*ps], vec); err != nil {
		t.Fatal(err)
	}
	for i, v := range vec {
		if v&1 == 0 {
			t.Fatalf("page %d of an eager region not mapped at creation", i)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Populate(first, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("populate after close: %v, want ErrClosed", err)
	}
}

// TestPopulateReadOnly: a reader's mapping cannot be populated for writing.
func TestPopulateReadOnly(t *testing.T) {
	name := uniqueName(t)
	newRegion(t, name, Options{Size: 1 << 20, Lazy: true})
	ro, err := Attach(name, ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Populate(ro.FirstDataPage(), 1); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("populate read-only: %v, want ErrReadOnly", err)
	}
}

// mincore reports in vec which pages of b are mapped (x/sys/unix has no
// wrapper).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
