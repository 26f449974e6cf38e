package inmem

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The cross-process tests re-execute the test binary as a reader process.
const childEnv = "BOARDHA_INMEM_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode, os.Args[len(os.Args)-1]))
	}
	code := m.Run()
	big.cleanup()
	os.Exit(code)
}

const (
	invAccounts = 64
	invTotal    = invAccounts * 1000
)

// checkInvariant verifies a snapshot of the invariant database: account balances
// sum to invTotal, and marker key m%d exists iff d < counter.
func checkInvariant(tx *Tx) (counter uint64, err error) {
	db := tx.DB("inv")
	if db == nil {
		return 0, fmt.Errorf("database inv missing")
	}
	var sum uint64
	for i := range invAccounts {
		v := db.Get(fmt.Appendf(nil, "acct%03d", i))
		if len(v) != 8 {
			return 0, fmt.Errorf("account %d: %d-byte value", i, len(v))
		}
		sum += binary.LittleEndian.Uint64(v)
	}
	if sum != invTotal {
		return 0, fmt.Errorf("balances sum to %d, want %d (partial commit visible)", sum, invTotal)
	}
	cv := db.Get([]byte("counter"))
	if len(cv) != 8 {
		return 0, fmt.Errorf("counter missing")
	}
	counter = binary.LittleEndian.Uint64(cv)
	n := uint64(0)
	c := db.Cursor()
	for k, _ := c.Seek([]byte("m")); k != nil && k[0] == 'm'; k, _ = c.Next() {
		n++
	}
	if n != counter {
		return 0, fmt.Errorf("%d markers, counter %d", n, counter)
	}
	return counter, tx.Err()
}

// childMain runs in the reader process. Modes: "check" verifies snapshots until
// stdin closes; "pin" holds one snapshot until told to verify it, then waits.
func childMain(mode, name string) int {
	r, err := AttachReadOnly(name)
	if err != nil {
		fmt.Println("ERR attach:", err)
		return 2
	}
	defer r.Close()
	in := bufio.NewScanner(os.Stdin)
	switch mode {
	case "check":
		stop := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
		views, last := 0, uint64(0)
		for {
			select {
			case <-stop:
				fmt.Printf("DONE %d\n", views)
				return 0
			default:
			}
			err := r.View(func(tx *Tx) error {
				c, err := checkInvariant(tx)
				if err == nil && c < last {
					err = fmt.Errorf("counter went back from %d to %d", last, c)
				}
				last = c
				return err
			})
			if err != nil {
				fmt.Println("ERR", err)
				return 1
			}
			views++
			if views%100 == 0 {
				fmt.Printf("VIEWS %d %d\n", views, last)
			}
		}
	case "pin":
		return boolToExit(r.View(func(tx *Tx) error {
			h, err := tx.ContentHash()
			if err != nil {
				return err
			}
			fmt.Printf("PINNED %d\n", tx.ID())
			for in.Scan() {
				h2, err := tx.ContentHash()
				if err != nil || h2 != h {
					fmt.Printf("ERR snapshot changed under a pinned reader: %#x -> %#x %v\n", h, h2, err)
					return fmt.Errorf("changed")
				}
				fmt.Println("SAME")
			}
			return nil
		}))
	case "idle":
		// Attached (a reader slot held) but not reading, as a firmware
		// process between lookups: wait for stdin to close.
		fmt.Println("ATTACHED")
		for in.Scan() {
		}
		return 0
	case "writer":
		// Take the writer role, commit, report, then wait to be killed.
		e, err := Open(name)
		if err != nil {
			fmt.Println("ERR open:", err)
			return 1
		}
		_, err = e.Update(func(tx *Tx) error {
			db, err := tx.CreateDBIfNotExists("child")
			if err != nil {
				return err
			}
			return db.Put([]byte("written-by"), []byte("child"))
		})
		if err != nil {
			fmt.Println("ERR update:", err)
			return 1
		}
		fmt.Println("COMMITTED")
		for in.Scan() {
		}
		return 0
	case "get":
		// Benchmark helper: random Gets on a snapshot, reports the rate.
		n, _ := strconv.Atoi(os.Getenv("BOARDHA_INMEM_GETS"))
		keys, _ := strconv.Atoi(os.Getenv("BOARDHA_INMEM_KEYS"))
		var rate float64
		err := r.View(func(tx *Tx) error {
			db := tx.DB("bench")
			var k [16]byte
			x := uint64(88172645463325252)
			start := time.Now()
			for range n {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				benchKey(k[:], x%uint64(keys))
				if db.Get(k[:]) == nil {
					return fmt.Errorf("key %x missing", k)
				}
			}
			rate = float64(n) / time.Since(start).Seconds()
			return tx.Err()
		})
		if err != nil {
			fmt.Println("ERR", err)
			return 1
		}
		fmt.Printf("RATE %.0f\n", rate)
		return 0
	}
	return 3
}

func boolToExit(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

// benchKey writes the 16-byte benchmark key of i.
func benchKey(k []byte, i uint64) {
	binary.BigEndian.PutUint64(k, i*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(k[8:], i)
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t testing.TB, mode, name string, extraEnv ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", name)
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), extraEnv...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	mustNoErr(t, err, "stdin pipe")
	out, err := cmd.StdoutPipe()
	mustNoErr(t, err, "stdout pipe")
	mustNoErr(t, cmd.Start(), "start child")
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return c
}

// next returns the child's next output line, failing the test after a deadline.
func (c *child) next(t testing.TB) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child exited early")
		}
		if strings.HasPrefix(l, "ERR") {
			t.Fatalf("child: %s", l)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("child silent for 30s")
	}
	return ""
}

func namedEnv(t testing.TB, opt Options) *Env {
	t.Helper()
	opt.Name = fmt.Sprintf("boardha-inmem-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	return newTestEnv(t, opt)
}

func initInvariant(t testing.TB, e *Env) {
	_, err := e.Update(func(tx *Tx) error {
		db, err := tx.CreateDB("inv")
		if err != nil {
			return err
		}
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], invTotal/invAccounts)
		for i := range invAccounts {
			if err := db.Put(fmt.Appendf(nil, "acct%03d", i), v[:]); err != nil {
				return err
			}
		}
		binary.LittleEndian.PutUint64(v[:], 0)
		return db.Put([]byte("counter"), v[:])
	})
	mustNoErr(t, err, "init invariant")
}

// invariantStep moves money between accounts and adds one marker, in one commit.
func invariantStep(t testing.TB, e *Env, step uint64) {
	_, err := e.Update(func(tx *Tx) error {
		db := tx.DB("inv")
		for j := range 8 {
			a := fmt.Appendf(nil, "acct%03d", (step*7+uint64(j)*13)%invAccounts)
			b := fmt.Appendf(nil, "acct%03d", (step*11+uint64(j)*5+1)%invAccounts)
			va, vb := binary.LittleEndian.Uint64(db.Get(a)), binary.LittleEndian.Uint64(db.Get(b))
			amt := min(va, step%97)
			var x [8]byte
			binary.LittleEndian.PutUint64(x[:], va-amt)
			if err := db.Put(a, x[:]); err != nil {
				return err
			}
			vb = binary.LittleEndian.Uint64(db.Get(b)) // a == b is possible
			binary.LittleEndian.PutUint64(x[:], vb+amt)
			if err := db.Put(b, x[:]); err != nil {
				return err
			}
		}
		// Large churn: rewrite a big value so pages are freed and reused.
		if err := db.Put([]byte("blob"), make([]byte, 3000+int(step%5000))); err != nil {
			return err
		}
		var c [8]byte
		binary.LittleEndian.PutUint64(c[:], step+1)
		if err := db.Put(fmt.Appendf(nil, "m%08d", step), nil); err != nil {
			return err
		}
		return db.Put([]byte("counter"), c[:])
	})
	mustNoErr(t, err, "invariant step")
}

func TestCrossProcessReaderSeesWholeCommits(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 64 << 20, LogSize: 32 << 20})
	initInvariant(t, e)
	ch := startChild(t, "check", e.Name())
	step, views := uint64(0), 0
	for views < 2000 || step < 3000 {
		invariantStep(t, e, step)
		step++
		if step%500 == 0 {
			// Keep the log from filling: nobody checkpoints in this test.
			e.RetainLog(e.Log().End())
		}
		// A descheduled reader pins its snapshot: when too many pages wait for it,
		// wait for its next progress report instead of filling the pool.
		wait := step%64 == 0 && e.Stats().PendingPages > 4000
		if wait {
			_, _ = fmt.Sscanf(ch.next(t), "VIEWS %d", &views)
		}
		select {
		case l := <-ch.lines:
			if strings.HasPrefix(l, "ERR") {
				t.Fatalf("child: %s", l)
			}
			_, _ = fmt.Sscanf(l, "VIEWS %d", &views)
		default:
		}
		if step > 200000 {
			t.Fatalf("child made only %d views in %d commits", views, step)
		}
	}
	_ = ch.stdin.Close()
	for {
		l := ch.next(t)
		if strings.HasPrefix(l, "DONE") {
			break
		}
	}
	mustNoErr(t, ch.cmd.Wait(), "child exit")
	t.Logf("%d commits while the reader process checked %d+ snapshots", step, views)
}

func TestKilledReaderSlotReclaimed(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 16 << 20, LogSize: 32 << 20})
	initInvariant(t, e)
	ch := startChild(t, "pin", e.Name())
	var pinned uint64
	if _, err := fmt.Sscanf(ch.next(t), "PINNED %d", &pinned); err != nil {
		t.Fatal(err)
	}
	for s := uint64(0); s < 300; s++ {
		invariantStep(t, e, s)
	}
	st := e.Stats()
	if st.OldestTxid != pinned || st.PendingPages < 100 {
		t.Fatalf("with a reader pinned at %d: oldest %d, pending pages %d", pinned, st.OldestTxid, st.PendingPages)
	}
	// The reader's snapshot is intact after all that churn.
	_, _ = fmt.Fprintln(ch.stdin, "check")
	if l := ch.next(t); l != "SAME" {
		t.Fatalf("child: %q", l)
	}
	mustNoErr(t, ch.cmd.Process.Signal(syscall.SIGKILL), "kill child")
	_ = ch.cmd.Wait()
	// The writer trusts a reader's liveness for shm's livenessTTL (20 ms)
	// after checking it, so the commits go on until a scan notices; the
	// deadline is far beyond that.
	deadline := time.Now().Add(10 * time.Second)
	for s := uint64(300); ; s++ {
		invariantStep(t, e, s)
		st = e.Stats()
		if st.OldestTxid != pinned && st.PendingPages <= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the reader died: oldest %d (was pinned at %d), pending pages %d", st.OldestTxid, pinned, st.PendingPages)
		}
	}
}

// childOwnedRegion is a named region with the invariant database whose
// writer is now a child process, which committed once and waits.
func childOwnedRegion(t *testing.T) (name string, ch *child) {
	t.Helper()
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 1 << 20})
	initInvariant(t, e)
	name = e.Name()
	mustNoErr(t, e.Close(), "close")
	ch = startChild(t, "writer", name)
	if l := ch.next(t); l != "COMMITTED" {
		t.Fatalf("child: %q", l)
	}
	return name, ch
}

func TestDeadWriterTakeover(t *testing.T) {
	name, ch := childOwnedRegion(t)
	if _, err := Open(name); !isErr(err, ErrWriterActive) {
		t.Fatalf("open while the child writes: %v", err)
	}
	mustNoErr(t, ch.cmd.Process.Signal(syscall.SIGKILL), "kill writer")
	_ = ch.cmd.Wait()
	e2, err := Open(name)
	mustNoErr(t, err, "take over from the dead writer")
	defer e2.Close()
	err = e2.View(func(tx *Tx) error {
		if _, err := checkInvariant(tx); err != nil {
			return err
		}
		if db := tx.DB("child"); db == nil || string(db.Get([]byte("written-by"))) != "child" {
			return fmt.Errorf("the dead writer's commit is missing")
		}
		return tx.Check()
	})
	mustNoErr(t, err, "view after takeover")
	invariantStep(t, e2, 1)
}

// BenchmarkCommitWithReaders: the commit of one small put while other
// processes hold reader slots between reads, as a switch's forwarding
// agents attached to the tables do. Each commit scans the reader table for
// the oldest snapshot (Region.OldestReader). (A reader holding one snapshot
// throughout keeps every page freed after it from reuse and fills the pool,
// by design, so it is not a steady state to time.)
//
//	go test ./inmem -run '^$' -bench CommitWithReaders
func BenchmarkCommitWithReaders(b *testing.B) {
	for _, idle := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("readers=%d", idle), func(b *testing.B) {
			e := namedEnv(b, Options{PoolSize: 64 << 20, LogSize: 4 << 20})
			if _, err := e.Update(func(tx *Tx) error { _, err := tx.CreateDB("bench"); return err }); err != nil {
				b.Fatal(err)
			}
			for range idle {
				if l := startChild(b, "idle", e.Name()).next(b); l != "ATTACHED" {
					b.Fatalf("idle reader: %q", l)
				}
			}
			var k [16]byte
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				benchKey(k[:], uint64(i%4096))
				retain(e, i)
				if _, err := e.Update(func(tx *Tx) error { return tx.DB("bench").Put(k[:], benchVal) }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// attachedInvariant is an environment with the invariant database and an
// attachment to it in this process (closed before the environment).
func attachedInvariant(tb testing.TB) (*Env, *ReadEnv) {
	tb.Helper()
	e := namedEnv(tb, Options{PoolSize: 16 << 20, LogSize: 4 << 20})
	initInvariant(tb, e)
	r, err := AttachReadOnly(e.Name())
	mustNoErr(tb, err, "attach")
	tb.Cleanup(func() { _ = r.Close() })
	return e, r
}

// lookupAcct is one lookup of the invariant database, as a view's work.
func lookupAcct(tx *Tx) error {
	if tx.DB("inv").Get([]byte("acct001")) == nil {
		return fmt.Errorf("acct001 missing")
	}
	return nil
}

// TestViewAllocs: a view allocates nothing, in this process or through an
// attachment. A forwarding agent views at every lookup; reading the meta
// pages used to allocate six times a view (their copies and the pair
// escaped to the heap), the error kept ready for a busy writer seven more,
// and the view's Tx one.
func TestViewAllocs(t *testing.T) {
	e, r := attachedInvariant(t)
	for _, v := range []struct {
		name string
		view func(func(*Tx) error) error
	}{{"env", e.View}, {"attached", r.View}} {
		what := v.name + " view"
		run := func() { mustNoErr(t, v.view(lookupAcct), what) }
		if a := testing.AllocsPerRun(200, run); a != 0 {
			t.Errorf("%.1f allocations per %s view, want 0", a, v.name)
		}
	}
}

// TestViewTxReuse: views reuse finished views' transactions, and that
// never mixes two views up. A view inside another gets a transaction of
// its own on its own snapshot and leaves the outer one intact; a view whose
// fn ended its Tx early or panicked releases its snapshot exactly once.
func TestViewTxReuse(t *testing.T) {
	e, r := attachedInvariant(t)
	put := func(k, v string) {
		_, err := e.Update(func(tx *Tx) error { return tx.DB("inv").Put([]byte(k), []byte(v)) })
		mustNoErr(t, err, "update")
	}
	put("k", "old")
	for _, v := range []struct {
		name string
		view func(func(*Tx) error) error
	}{{"env", e.View}, {"attached", r.View}} {
		err := v.view(func(outer *Tx) error {
			put("k", "new")
			if err := v.view(func(inner *Tx) error {
				if inner == outer {
					return fmt.Errorf("the inner view got the outer view's Tx")
				}
				if got := string(inner.DB("inv").Get([]byte("k"))); got != "new" {
					return fmt.Errorf("inner view reads %q, want new", got)
				}
				return nil
			}); err != nil {
				return err
			}
			if got := string(outer.DB("inv").Get([]byte("k"))); got != "old" {
				return fmt.Errorf("outer view reads %q after the inner one, want old", got)
			}
			return nil
		})
		mustNoErr(t, err, v.name+" nested views")
		put("k", "old")

		mustNoErr(t, v.view(func(tx *Tx) error { tx.Abort(); return nil }), v.name+" view ended early")
		func() {
			defer func() { _ = recover() }()
			_ = v.view(func(*Tx) error { panic("fn failed") })
		}()
	}
	e.readMu.Lock()
	pinned := len(e.readers)
	e.readMu.Unlock()
	r.mu.Lock()
	active := r.active
	r.mu.Unlock()
	if pinned != 0 || active != 0 {
		t.Fatalf("after the views: %d snapshots pinned in this process, %d attached views active; want none", pinned, active)
	}
	if txid, ok := r.reg.OldestReader(); ok {
		t.Fatalf("a reader slot still holds txid %d after the attachment's views ended", txid)
	}
}

// BenchmarkViewGet: one lookup per view, as a forwarding agent reads a
// table: in this process (Env.View) and through an attachment
// (ReadEnv.View, here in the same process: the same mapping and handshake
// as another process's).
func BenchmarkViewGet(b *testing.B) {
	e, r := attachedInvariant(b)
	for _, v := range []struct {
		name string
		view func(func(*Tx) error) error
	}{{"env", e.View}, {"attached", r.View}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := v.view(lookupAcct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPoolFullNamesTheReader: when a reader in another process holds an old
// snapshot until the pool fills, the writer's ErrPoolFull names its pid.
func TestPoolFullNamesTheReader(t *testing.T) {
	e := namedEnv(t, Options{PoolSize: 1 << 20, LogSize: 4 << 20})
	initInvariant(t, e)
	ch := startChild(t, "pin", e.Name())
	if l := ch.next(t); !strings.HasPrefix(l, "PINNED") {
		t.Fatalf("child: %q", l)
	}
	var err error
	for s := uint64(0); err == nil && s < 100000; s++ {
		retain(e, int(s))
		_, err = e.Update(func(tx *Tx) error {
			return tx.DB("inv").Put(fmt.Appendf(nil, "m%06d", s), make([]byte, 200))
		})
	}
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("writes under a pinned reader ended with %v, want ErrPoolFull", err)
	}
	if want := fmt.Sprintf("by attached process %d", ch.cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Fatalf("pool full error %q does not say %q", err, want)
	}
}

// TestAttachedViewAfterOwnerGone: an attachment stops reading, with
// ErrOwnerGone, once its region's owner closed it (as a board does when an
// internal init replaced its region) or died (SIGKILL).
func TestAttachedViewAfterOwnerGone(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		e, r := attachedInvariant(t)
		mustNoErr(t, r.View(lookupAcct), "view while the owner runs")
		mustNoErr(t, e.Close(), "owner close")
		if err := r.View(lookupAcct); !errors.Is(err, ErrOwnerGone) {
			t.Fatalf("view after the owner closed: %v, want ErrOwnerGone", err)
		}
	})
	t.Run("killed", func(t *testing.T) {
		name, ch := childOwnedRegion(t)
		r, err := AttachReadOnly(name)
		mustNoErr(t, err, "attach")
		defer r.Close()
		mustNoErr(t, r.View(func(tx *Tx) error {
			if string(tx.DB("child").Get([]byte("written-by"))) != "child" {
				return fmt.Errorf("the child's commit is not visible")
			}
			return nil
		}), "view while the child owns the region")
		mustNoErr(t, ch.cmd.Process.Signal(syscall.SIGKILL), "kill the owner")
		_ = ch.cmd.Wait()
		// The owner's liveness is trusted for shm's livenessTTL (20 ms)
		// after a check; the deadline is far beyond that.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := r.View(func(*Tx) error { return nil })
			if errors.Is(err, ErrOwnerGone) {
				break
			}
			mustNoErr(t, err, "view")
			if time.Now().After(deadline) {
				t.Fatal("views still succeed 10 s after the owner was killed")
			}
			runtime.Gosched()
		}
	})
}

// TestReadEnvCloseDuringView: an attachment closed while a view runs in
// another goroutine (an agent closing it on ErrOwnerGone while others
// read) keeps its mapping until that view returns: the view reads on, new
// views fail with ErrClosed, and the view's return releases the mapping
// and the reader slot.
func TestReadEnvCloseDuringView(t *testing.T) {
	e, r := attachedInvariant(t)
	inView, closed := make(chan struct{}), make(chan struct{})
	viewErr := make(chan error, 1)
	go func() {
		viewErr <- r.View(func(tx *Tx) error {
			close(inView)
			<-closed
			return lookupAcct(tx) // reads the pages after Close
		})
	}()
	<-inView
	mustNoErr(t, r.Close(), "close during a view")
	if err := r.View(lookupAcct); !isErr(err, ErrClosed) {
		t.Fatalf("a view after Close: %v, want ErrClosed", err)
	}
	if n := len(e.Region().Readers()); n != 1 {
		t.Fatalf("%d attached readers while the view runs, want 1", n)
	}
	close(closed)
	mustNoErr(t, <-viewErr, "the view Close came during")
	if n := len(e.Region().Readers()); n != 0 {
		t.Fatalf("%d attached readers after the last view returned, want 0 (slot released)", n)
	}
	mustNoErr(t, r.Close(), "close again")
}
