package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"time"
)

// loadStats is what a steady writer saw.
type loadStats struct {
	OK, Failed, NotPerm uint64
	// LongestGap is the longest time without a successful write: during
	// a failover it is the write outage seen by clients.
	LongestGap time.Duration
	LastErr    string
}

// steadyWriter puts keys "k<i mod keys>" = "<seq>" into db at rate writes/s
// through socket path until ctx ends, reconnecting (and moving to another
// socket from socks()) when the board is unreachable.
func steadyWriter(ctx context.Context, socks func() []string, db string, rate, keys int, onWrite func(ok bool)) loadStats {
	var st loadStats
	interval := time.Second / time.Duration(max(1, rate))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var c *client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	last := time.Now()
	var seq uint64
	pick := 0
	for {
		select {
		case <-ctx.Done():
			return st
		case <-tick.C:
		}
		if c == nil {
			all := socks()
			if len(all) == 0 {
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			var err error
			c, err = dial(dctx, all[pick%len(all)])
			cancel()
			pick++
			if err != nil {
				st.Failed++
				st.LastErr = err.Error()
				c = nil
				continue
			}
		}
		seq++
		key := "k" + strconv.Itoa(int(seq%uint64(max(1, keys))))
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		resp, err := c.call(rctx, request{Op: "put", DB: db, Key: []byte(key), Value: []byte(strconv.FormatUint(seq, 10))})
		cancel()
		now := time.Now()
		if err != nil && ctx.Err() != nil {
			return st // cut short by the end of the run, not a failure
		}
		if err != nil {
			st.Failed++
			st.LastErr = err.Error()
			if onWrite != nil {
				onWrite(false)
			}
			// The connection state is unknown after a timeout; start over.
			c.Close()
			c = nil
			continue
		}
		if gap := now.Sub(last); gap > st.LongestGap {
			st.LongestGap = gap
		}
		last = now
		st.OK++
		if resp.Commit != nil && !resp.Commit.Perm {
			st.NotPerm++
		}
		if onWrite != nil {
			onWrite(true)
		}
	}
}

func cmdLoad(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("boardd load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSockFlags(fs)
	db := fs.String("db", "load", "database to write")
	rate := fs.Int("rate", 200, "writes per second (1..100000)")
	keys := fs.Int("keys", 1000, "distinct keys cycled through (1..10000000)")
	dur := fs.Duration("duration", 0, "stop after this long (0 = until interrupted)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *rate < 1 || *rate > 100000 {
		return usagef("boardd load: -rate %d; allowed 1..100000", *rate)
	}
	if *keys < 1 || *keys > 10000000 {
		return usagef("boardd load: -keys %d; allowed 1..10000000", *keys)
	}
	path, err := sf.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	start := time.Now()
	st := steadyWriter(ctx, func() []string { return []string{path} }, *db, *rate, *keys, nil)
	fmt.Fprintf(stdout, "writes ok %d failed %d not-perm %d in %v; longest gap %v\n",
		st.OK, st.Failed, st.NotPerm, time.Since(start).Round(time.Millisecond), st.LongestGap.Round(time.Millisecond))
	if st.Failed > 0 {
		fmt.Fprintf(stdout, "last error: %s\n", st.LastErr)
	}
	if st.OK == 0 {
		return &remoteError{codeUnavail, "boardd load: no write succeeded; last error: " + st.LastErr}
	}
	return nil
}
