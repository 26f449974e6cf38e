package inmem

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/seed61e250c8/boardha/logbuf"
)

// model is the reference: database name -> key -> value.
type model map[string]map[string]string

func (m model) clone() model {
	c := make(model, len(m))
	for n, db := range m {
		d := make(map[string]string, len(db))
		for k, v := range db {
			d[k] = v
		}
		c[n] = d
	}
	return c
}

// hash mirrors Tx.ContentHash.
func (m model) hash() uint64 {
	var sum uint64
	for name, db := range m {
		nh := fnv(fnvOffset, []byte(name))
		sum += mix(nh)
		for k, v := range db {
			var l [4]byte
			binary.LittleEndian.PutUint32(l[:], uint32(len(k)))
			h := fnv(fnv(nh, l[:]), []byte(k))
			sum += mix(fnv(h, []byte(v)))
		}
	}
	return sum
}

func sortedKeys(db map[string]string) []string {
	ks := make([]string, 0, len(db))
	for k := range db {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

type modelRun struct {
	t       *testing.T
	r       *rand.Rand
	master  *Env
	replica *Env
	m       model
	maxKey  int
	keys    int // key space size
	// checkpoint state
	mSnap     *Snapshot
	rSnaps    map[uint64]*Snapshot // replica snapshots by LSN (from the hook)
	ckptLSN   uint64
	bounds    []uint64 // rollback points >= ckptLSN (transaction ends), with models
	boundsM   []model
	commits   int
	rollbacks int
	aborts    int
}

func (mr *modelRun) key() []byte {
	i := mr.r.IntN(mr.keys)
	if mr.r.IntN(50) == 0 {
		// Long keys exercise the key limit and deep branch entries.
		n := 1 + mr.r.IntN(mr.maxKey)
		b := bytes.Repeat([]byte{byte('a' + i%26)}, n)
		if n >= 4 {
			binary.BigEndian.PutUint32(b[n-4:], uint32(i))
		}
		return b
	}
	return fmt.Appendf(nil, "k%05d", i)
}

func (mr *modelRun) value() []byte {
	var n int
	switch x := mr.r.IntN(100); {
	case x < 80:
		n = mr.r.IntN(120)
	case x < 97:
		n = 200 + mr.r.IntN(3000)
	default:
		n = 10000 + mr.r.IntN(60000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(mr.r.Uint32())
	}
	return b
}

var dbNames = []string{"alpha", "beta", "gamma", "delta"}

// writeTxn runs one random write transaction against the master and the model.
func (mr *modelRun) writeTxn() {
	t := mr.t
	tx, err := mr.master.Begin(true)
	mustNoErr(t, err, "begin")
	tm := mr.m.clone()
	nops := 1 + mr.r.IntN(40)
	for range nops {
		name := dbNames[mr.r.IntN(len(dbNames))]
		switch x := mr.r.IntN(100); {
		case x < 3:
			if _, ok := tm[name]; ok {
				mustNoErr(t, tx.DropDB(name), "drop "+name)
				delete(tm, name)
			} else if err := tx.DropDB(name); !isErr(err, ErrDBNotFound) {
				t.Fatalf("drop of absent %s: %v", name, err)
			}
		case x < 8:
			_, err := tx.CreateDB(name)
			if _, ok := tm[name]; ok {
				if !isErr(err, ErrDBExists) {
					t.Fatalf("create of existing %s: %v", name, err)
				}
			} else {
				mustNoErr(t, err, "create "+name)
				tm[name] = map[string]string{}
			}
		case x < 70:
			db, err := tx.CreateDBIfNotExists(name)
			mustNoErr(t, err, "create-if "+name)
			if tm[name] == nil {
				tm[name] = map[string]string{}
			}
			k, v := mr.key(), mr.value()
			mustNoErr(t, db.Put(k, v), "put")
			tm[name][string(k)] = string(v)
		case x < 90:
			db := tx.DB(name)
			if db == nil {
				continue
			}
			k := mr.key()
			if len(tm[name]) > 0 && mr.r.IntN(2) == 0 {
				ks := sortedKeys(tm[name])
				k = []byte(ks[mr.r.IntN(len(ks))])
			}
			mustNoErr(t, db.Delete(k), "delete")
			delete(tm[name], string(k))
		case x < 97:
			db := tx.DB(name)
			if db == nil {
				continue
			}
			k := mr.key()
			got, want := db.Get(k), tm[name][string(k)]
			_, present := tm[name][string(k)]
			if (got != nil) != present || string(got) != want {
				t.Fatalf("in-txn get %q from %s: got %d bytes (present %v), want %d", k, name, len(got), got != nil, len(want))
			}
		default:
			if db := tx.DB(name); db != nil {
				mr.checkCursor(db, tm[name])
			}
		}
	}
	if tx.Err() != nil {
		t.Fatalf("txn error: %v", tx.Err())
	}
	if mr.r.IntN(10) == 0 {
		tx.Abort()
		mr.aborts++
		return
	}
	txid := tx.ID()
	info, err := tx.Commit()
	mustNoErr(t, err, "commit")
	mr.m = tm
	mr.commits++
	if info.Txn != txid {
		return // nothing changed: nothing logged, LastCommit returned
	}
	if info.End != mr.master.Log().End() {
		t.Fatalf("commit end %d, log end %d", info.End, mr.master.Log().End())
	}
	if ci, err := mr.master.CommitAt(info.LSN); err != nil || ci != info {
		t.Fatalf("CommitAt(%d) = %+v, %v; want %+v", info.LSN, ci, err, info)
	}
	mr.bounds = append(mr.bounds, mr.master.Log().End())
	mr.boundsM = append(mr.boundsM, mr.m.clone())
}

// checkCursor compares forward, backward and seek walks with the model.
func (mr *modelRun) checkCursor(db *DB, want map[string]string) {
	t := mr.t
	ks := sortedKeys(want)
	c := db.Cursor()
	i := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if i >= len(ks) || string(k) != ks[i] || string(v) != want[ks[i]] {
			t.Fatalf("%s forward walk at %d: got %q, want %q of %d", db.Name(), i, k, ks[min(i, len(ks)-1)], len(ks))
		}
		i++
	}
	if i != len(ks) {
		t.Fatalf("%s forward walk: %d keys, want %d", db.Name(), i, len(ks))
	}
	i = len(ks) - 1
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		if i < 0 || string(k) != ks[i] {
			t.Fatalf("%s backward walk at %d: got %q", db.Name(), i, k)
		}
		i--
	}
	if i != -1 {
		t.Fatalf("%s backward walk stopped at %d", db.Name(), i)
	}
	for range 5 {
		sk := mr.key()
		j, _ := slices.BinarySearch(ks, string(sk))
		k, _ := c.Seek(sk)
		if j == len(ks) {
			if k != nil {
				t.Fatalf("%s seek %q past the end: got %q", db.Name(), sk, k)
			}
			continue
		}
		if string(k) != ks[j] {
			t.Fatalf("%s seek %q: got %q want %q", db.Name(), sk, k, ks[j])
		}
		if mr.r.IntN(2) == 0 {
			pk, _ := c.Prev()
			if (j == 0) != (pk == nil) || (j > 0 && string(pk) != ks[j-1]) {
				t.Fatalf("%s prev after seek %q: got %q", db.Name(), sk, pk)
			}
		} else {
			nk, _ := c.Next()
			if (j+1 == len(ks)) != (nk == nil) || (j+1 < len(ks) && string(nk) != ks[j+1]) {
				t.Fatalf("%s next after seek %q: got %q", db.Name(), sk, nk)
			}
		}
	}
}

func (mr *modelRun) checkRead(e *Env, what string) {
	t := mr.t
	err := e.View(func(tx *Tx) error {
		names := tx.DBNames()
		want := make([]string, 0, len(mr.m))
		for n := range mr.m {
			want = append(want, n)
		}
		slices.Sort(want)
		if !slices.Equal(names, want) {
			return fmt.Errorf("databases %v, want %v", names, want)
		}
		for _, n := range names {
			mr.checkCursor(tx.DB(n), mr.m[n])
		}
		return tx.Check()
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (mr *modelRun) checkpoint() {
	t := mr.t
	s, lsn, err := mr.master.Checkpoint()
	mustNoErr(t, err, "checkpoint")
	if mr.mSnap != nil {
		mr.mSnap.Release()
	}
	mr.mSnap, mr.ckptLSN = s, lsn
	mr.master.Log().Retain(lsn)
	mr.bounds = append(mr.bounds[:0], lsn, mr.master.Log().End())
	mr.boundsM = append(mr.boundsM[:0], mr.m.clone(), mr.m.clone())
}

func (mr *modelRun) rollback() {
	t := mr.t
	if mr.mSnap == nil || len(mr.bounds) == 0 {
		return
	}
	i := mr.r.IntN(len(mr.bounds))
	lsn := mr.bounds[i]
	mustNoErr(t, mr.master.Rollback(mr.mSnap, lsn), fmt.Sprintf("master rollback to %d", lsn))
	rs := mr.rSnaps[mr.ckptLSN]
	if rs == nil {
		t.Fatalf("replica has no checkpoint snapshot at %d", mr.ckptLSN)
	}
	mustNoErr(t, mr.replica.Rollback(rs, lsn), fmt.Sprintf("replica rollback to %d", lsn))
	if mr.master.Log().End() != lsn || mr.replica.Log().End() != lsn {
		t.Fatalf("after rollback to %d: master log end %d, replica %d", lsn, mr.master.Log().End(), mr.replica.Log().End())
	}
	mr.m = mr.boundsM[i].clone()
	mr.bounds, mr.boundsM = mr.bounds[:i+1], mr.boundsM[:i+1]
	mr.rollbacks++
}

func (mr *modelRun) converge(step int) {
	t := mr.t
	shipLog(t, mr.master, mr.replica)
	want := mr.m.hash()
	if h := mr.master.ContentHash(); h != want {
		t.Fatalf("step %d: master hash %#x, model %#x", step, h, want)
	}
	if h := mr.replica.ContentHash(); h != want {
		t.Fatalf("step %d: replica hash %#x, model %#x", step, h, want)
	}
	if a, b := mr.master.LastCommit(), mr.replica.LastCommit(); a.LSN != b.LSN || a.Chain != b.Chain || a.Gen != b.Gen {
		t.Fatalf("step %d: last commit master %+v, replica %+v", step, a, b)
	}
}

func runModel(t *testing.T, seed uint64, steps int, ps int) {
	mr := &modelRun{t: t, r: newRand(seed), m: model{}, rSnaps: map[uint64]*Snapshot{}}
	opt := Options{PoolSize: 48 << 20, LogSize: 16 << 20, PageSize: ps}
	mr.master = newTestEnv(t, opt)
	mr.replica = newTestEnv(t, opt)
	mr.maxKey = maxKey(ps)
	mr.keys = 50 + mr.r.IntN(2000)
	mr.replica.SetCheckpointHook(func(s *Snapshot, rec logbuf.Record) {
		for l, old := range mr.rSnaps {
			if l != rec.LSN {
				old.Release()
				delete(mr.rSnaps, l)
			}
		}
		mr.rSnaps[rec.LSN] = s
		mr.replica.Log().Retain(rec.LSN)
	})
	mr.master.SetGen(1)
	t.Cleanup(func() {
		mr.mSnap.Release()
		for _, s := range mr.rSnaps {
			s.Release()
		}
	})
	for step := 0; step < steps; step++ {
		switch x := mr.r.IntN(100); {
		case x < 80:
			mr.writeTxn()
		case x < 87:
			mr.checkpoint()
		case x < 92:
			mr.rollback()
		case x < 94:
			mr.master.SetGen(mr.master.Gen() + 1)
			_, err := mr.master.AppendNewGen(mr.master.Gen())
			mustNoErr(t, err, "new gen")
			mr.bounds = append(mr.bounds, mr.master.Log().End())
			mr.boundsM = append(mr.boundsM, mr.m.clone())
		default:
			mr.checkRead(mr.master, "master read check")
		}
		mr.converge(step)
	}
	mr.checkRead(mr.master, "final master")
	mr.checkRead(mr.replica, "final replica")
	mr.exportImport()
	mr.leakCheck(mr.master)
	t.Logf("seed %d: %d commits, %d aborts, %d rollbacks, %d keys in model", seed, mr.commits, mr.aborts, mr.rollbacks, len(mr.m))
}

// exportImport copies the master's checkpoint snapshot into a new environment and
// replays the log after it: the result must equal the master.
func (mr *modelRun) exportImport() {
	t := mr.t
	s := mr.mSnap
	if s == nil {
		mr.checkpoint()
		s = mr.mSnap
	}
	im, err := NewImport(mr.master.opt, s.Meta())
	mustNoErr(t, err, "NewImport")
	var buf []byte
	for _, pg := range s.PageList() {
		buf, err = s.ReadPage(pg, buf)
		mustNoErr(t, err, "ReadPage")
		mustNoErr(t, im.PutPage(pg, buf), "PutPage")
	}
	e, err := im.Finish()
	if err != nil {
		im.Abort()
		t.Fatalf("Finish: %v", err)
	}
	defer func() { mustNoErr(t, e.Remove(), "remove import") }()
	shipLog(t, mr.master, e)
	if a, b := e.ContentHash(), mr.master.ContentHash(); a != b {
		t.Fatalf("imported+replayed hash %#x, master %#x", a, b)
	}
	mustNoErr(t, e.Check(), "imported check")
}

// leakCheck: with no snapshot pinned, every used page is reachable or reserved.
func (mr *modelRun) leakCheck(e *Env) {
	t := mr.t
	mr.mSnap.Release()
	mr.mSnap = nil
	for l, s := range mr.rSnaps {
		s.Release()
		delete(mr.rSnaps, l)
	}
	tx, err := e.Begin(true) // releases every pending run
	mustNoErr(t, err, "begin")
	defer tx.Abort()
	reach := uint64(0)
	err = tx.walk(e.cur, true, func(_ uint64, n int) error { reach += uint64(n); return nil })
	mustNoErr(t, err, "walk")
	st := e.alloc.Stats()
	reserved := 2 + e.lay.logPages
	if st.UsedPages != reach+reserved || st.PendingPages != 0 || st.BadFrees != 0 {
		t.Fatalf("page accounting: used %d, reachable %d + reserved %d; pending %d, bad frees %d",
			st.UsedPages, reach, reserved, st.PendingPages, st.BadFrees)
	}
}

func TestModel(t *testing.T) {
	base := testSeed(t, 1)
	seeds, steps := 12, 300
	if testing.Short() {
		seeds, steps = 3, 120
	}
	// BOARDHA_SOAK=n runs n times as many seeds (long soaks outside CI).
	if n, err := strconv.Atoi(os.Getenv("BOARDHA_SOAK")); err == nil && n > 1 {
		seeds *= n
	}
	for i := range seeds {
		seed := base + uint64(i)
		ps := 4096
		if i%2 == 1 {
			ps = 1024
		}
		t.Run(fmt.Sprintf("seed%d_ps%d", seed, ps), func(t *testing.T) { runModel(t, seed, steps, ps) })
	}
}
