package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/board"
)

// readBatch is how many gets one View covers in the batched rows.
const readBatch = 1000

// readRates is what a reader measured: gets per second with one View per
// get (snapshot cost included) and with readBatch gets per View.
type readRates struct {
	Single float64 `json:"single_per_s"`
	Batch  float64 `json:"batch_per_s"`
	Err    string  `json:"error,omitempty"`
}

func xkey(dst []byte, i int) []byte {
	dst = append(dst[:0], 'k')
	return binary.BigEndian.AppendUint64(dst, uint64(i))
}

// measureReads reads random keys among keys through view for d twice: one
// get per view, then readBatch gets per view. A missing key is an error:
// the reader must see what the writer committed.
func measureReads(view func(func(*board.Tx) error) error, keys int, d time.Duration) (readRates, error) {
	var r readRates
	rng := uint64(0x9e3779b97f4a7c15)
	next := func() int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(keys))
	}
	key := make([]byte, 0, 9)
	for pass, per := range []int{1, readBatch} {
		gets := 0
		start := time.Now()
		for time.Since(start) < d {
			err := view(func(tx *board.Tx) error {
				bk := tx.Bucket("x")
				for range per {
					key = xkey(key, next())
					if bk.Get(key) == nil {
						return fmt.Errorf("key %x missing from the snapshot", key)
					}
				}
				return nil
			})
			if err != nil {
				return r, err
			}
			gets += per
		}
		rate := float64(gets) / time.Since(start).Seconds()
		if pass == 0 {
			r.Single = rate
		} else {
			r.Batch = rate
		}
	}
	return r, nil
}

// childMain is the cross-process reader: bench re-executed with childEnv
// set. Arguments: region name, number of keys, duration in nanoseconds.
// It prints its readRates as JSON.
func childMain(args []string, stdout, stderr io.Writer) int {
	if os.Getenv(childEnv) != "xproc" || len(args) != 3 {
		fmt.Fprintf(stderr, "bench child: unknown mode %q or arguments %q\n", os.Getenv(childEnv), args)
		return 2
	}
	keys, err1 := strconv.Atoi(args[1])
	d, err2 := strconv.ParseInt(args[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil || keys <= 0 {
		fmt.Fprintf(stderr, "bench child: bad arguments %q: %v\n", args, err)
		return 2
	}
	out := json.NewEncoder(stdout)
	r, err := board.Attach(args[0])
	if err != nil {
		_ = out.Encode(readRates{Err: err.Error()})
		return 1
	}
	defer r.Close()
	rates, err := measureReads(r.View, keys, time.Duration(d))
	if err != nil {
		rates.Err = err.Error()
	}
	_ = out.Encode(rates)
	if err != nil {
		return 1
	}
	return 0
}

func (s *suite) runXproc(ctx context.Context) Section {
	sec := emptySection(secXproc)
	sec.Setup = fmt.Sprintf("One board (single site, mem transport, AckPolicy NONE) with its environment in a named shared-memory region holds %d keys "+
		"(9-byte keys, 100-byte values). Readers get random keys for %v: one get per View (snapshot setup included), then %d gets per View. "+
		"In-process: Board.View. Attach: board.Attach (inmem.AttachReadOnly, zero copy) in this process and in a child process (bench re-executed).",
		s.cfg.XprocKeys, s.cfg.XprocTime, readBatch)
	sec.Columns = []string{"reader", "gets/s (1 per View)", "gets/s (1000 per View)", "vs in-process (1000 per View)"}
	shm := fmt.Sprintf("boardha-bench%d-x", os.Getpid())
	b, err := board.Open(board.Config{Site: 1, Group: "bench-x", Peers: map[uint16]string{1: ""}, Priority: 100,
		Transport: board.MemTransport(backplane.NewMemHub(backplane.MemConfig{})), AckPolicy: board.AckNone,
		ShmName: shm, PoolSize: 256 << 20, LogSize: 32 << 20})
	if err != nil {
		sec.NotMeasured = fmt.Sprintf("opening the board: %v", err)
		return sec
	}
	defer b.Close() // removes the region
	if err := b.Start(ctx, board.StartMaster); err != nil {
		sec.NotMeasured = fmt.Sprintf("starting the board: %v", err)
		return sec
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.WaitMaster(wctx); err != nil {
		sec.NotMeasured = fmt.Sprintf("board never became master: %v", err)
		return sec
	}
	val := bytes.Repeat([]byte{'x'}, 100)
	for i := 0; i < s.cfg.XprocKeys; i += 1000 {
		_, err := b.Update(ctx, func(tx *board.Tx) error {
			bk := tx.Bucket("x")
			key := make([]byte, 0, 9)
			for j := i; j < min(i+1000, s.cfg.XprocKeys); j++ {
				if err := bk.Put(xkey(key, j), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			sec.NotMeasured = fmt.Sprintf("filling %d keys: %v", s.cfg.XprocKeys, err)
			return sec
		}
	}

	var base float64
	row := func(label string, r readRates, err error) {
		if err != nil {
			sec.missing(label, err.Error())
			return
		}
		if base == 0 {
			base = r.Batch
		}
		sec.add(label, map[string]float64{"gets_per_s_single": r.Single, "gets_per_s_batch": r.Batch, "vs_in_process": r.Batch / base},
			fmt.Sprintf("%.0f", r.Single), fmt.Sprintf("%.0f", r.Batch), fmt.Sprintf("%.2fx", r.Batch/base))
	}
	r, err := measureReads(b.View, s.cfg.XprocKeys, s.cfg.XprocTime)
	row("in-process Board.View", r, err)

	if rd, err := board.Attach(shm); err != nil {
		sec.missing("board.Attach, same process", err.Error())
	} else {
		r, err := measureReads(rd.View, s.cfg.XprocKeys, s.cfg.XprocTime)
		rd.Close()
		row("board.Attach, same process", r, err)
	}
	r, err = s.childReads(ctx, shm)
	row("board.Attach, child process", r, err)
	return sec
}

// childReads runs the reader in a child process and returns its figures.
func (s *suite) childReads(ctx context.Context, shm string) (readRates, error) {
	self, err := os.Executable()
	if err != nil {
		return readRates{}, fmt.Errorf("finding this executable to re-run it as the reader: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*s.cfg.XprocTime+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, self, shm, strconv.Itoa(s.cfg.XprocKeys), strconv.FormatInt(int64(s.cfg.XprocTime), 10))
	cmd.Env = append(os.Environ(), childEnv+"=xproc")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var r readRates
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, fmt.Errorf("child reader: %v (output %q, stderr %q, exit %v)", err, stdout.String(), stderr.String(), runErr)
	}
	if r.Err != "" {
		return r, fmt.Errorf("child reader: %s", r.Err)
	}
	if runErr != nil {
		return r, fmt.Errorf("child reader: %w (stderr %q)", runErr, stderr.String())
	}
	return r, nil
}
