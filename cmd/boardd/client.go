package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// parseArgs parses flags that may appear before, between or after the
// positional arguments, and returns the positionals.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &errQuiet{exitOK}
			}
			return nil, &errQuiet{exitUsage}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type sockFlags struct {
	sock  *string
	group *string
	site  *uint
}

func addSockFlags(fs *flag.FlagSet) sockFlags {
	return sockFlags{
		sock:  fs.String("sock", "", "board socket (default $BOARDHA_SOCK, or from -group/-site, or the only one in the default directory)"),
		group: fs.String("group", "", "group of the board whose socket to use"),
		site:  fs.Uint("site", 0, "site of the board whose socket to use"),
	}
}

// path resolves the socket: -sock, $BOARDHA_SOCK, -group/-site, or the only
// socket in the default directory.
func (f sockFlags) path() (string, error) {
	if *f.sock != "" {
		return *f.sock, nil
	}
	if s := os.Getenv("BOARDHA_SOCK"); s != "" {
		return s, nil
	}
	if *f.group != "" && *f.site != 0 {
		return defaultSock(*f.group, uint16(*f.site)), nil
	}
	dir := filepath.Dir(defaultSock("x", 1))
	found, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", &remoteError{codeUnavail, fmt.Sprintf("boardd: no board socket in %s; is `boardd run` running? give -sock or $BOARDHA_SOCK", dir)}
	}
	return "", usagef("boardd: %d boards on this machine (%s); pick one with -sock or -group/-site", len(found), strings.Join(found, ", "))
}

func cmdClient(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("boardd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSockFlags(fs)
	jsonOut := fs.Bool("json", false, "print JSON (one object per line for events)")
	hexIO := fs.Bool("hex", false, "keys and values are hex on the command line and in the output")
	db := fs.String("db", "kv", "database name")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	var leased *bool
	if cmd == "get" {
		leased = fs.Bool("leased", false, "authoritative read on the master (needs leases); fails on a replica")
	}
	var prefix, start, end *string
	var limit *int
	if cmd == "scan" {
		prefix = fs.String("prefix", "", "only keys with this prefix")
		start = fs.String("start", "", "first key (inclusive)")
		end = fs.String("end", "", "stop before this key")
		limit = fs.Int("limit", 1000, "at most this many keys")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"get": 1, "put": 2, "del": 1, "scan": 0, "stat": 0, "elect": 0, "stepdown": 0, "events": 0}[cmd]
	if len(pos) != want {
		return usagef("boardd %s: want %d argument(s), got %d; see boardd %s -h", cmd, want, len(pos), cmd)
	}
	decode := func(s string) ([]byte, error) {
		if !*hexIO {
			return []byte(s), nil
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, usagef("boardd %s: %q is not hex: %v", cmd, s, err)
		}
		return b, nil
	}
	encode := func(b []byte) string {
		if *hexIO {
			return hex.EncodeToString(b)
		}
		return string(b)
	}
	req := request{Op: cmd, DB: *db}
	if leased != nil {
		req.Leased = *leased
	}
	if len(pos) > 0 {
		if req.Key, err = decode(pos[0]); err != nil {
			return err
		}
	}
	if len(pos) > 1 {
		if req.Value, err = decode(pos[1]); err != nil {
			return err
		}
	}
	if cmd == "scan" {
		if req.Prefix, err = decode(*prefix); err != nil {
			return err
		}
		if req.Start, err = decode(*start); err != nil {
			return err
		}
		if req.End, err = decode(*end); err != nil {
			return err
		}
		req.Limit = *limit
	}
	path, err := sf.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if cmd != "events" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	if cmd == "events" {
		return streamEvents(ctx, c, stdout, *jsonOut)
	}
	resp, err := c.call(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return &remoteError{codeUnavail, fmt.Sprintf("boardd %s: no answer within %v: %v", cmd, *timeout, err)}
		}
		return err
	}
	if *jsonOut {
		return printJSON(stdout, cmd, req, resp, encode)
	}
	switch cmd {
	case "get":
		fmt.Fprintln(stdout, encode(resp.Value))
	case "put", "del":
		if resp.Commit != nil {
			fmt.Fprintf(stdout, "lsn=%d perm=%v\n", resp.Commit.LSN, resp.Commit.Perm)
		}
	case "scan":
		for _, it := range resp.Items {
			fmt.Fprintf(stdout, "%s\t%s\n", encode(it.Key), encode(it.Value))
		}
		if resp.More {
			fmt.Fprintf(stderr, "(stopped at -limit %d)\n", req.Limit)
		}
	case "stat":
		if resp.Stat != nil {
			printStat(stdout, *resp.Stat)
		}
	case "elect":
		fmt.Fprintf(stdout, "master=%d\n", resp.Master)
	case "stepdown":
		fmt.Fprintln(stdout, "stepped down")
	}
	return nil
}

// printJSON writes one JSON object; keys and values are strings (or hex with
// -hex) so scripts need not decode base64.
func printJSON(w io.Writer, cmd string, req request, resp response, encode func([]byte) string) error {
	var out any
	switch cmd {
	case "get":
		out = map[string]string{"db": req.DB, "key": encode(req.Key), "value": encode(resp.Value)}
	case "put", "del":
		out = resp.Commit
	case "scan":
		items := make([]map[string]string, 0, len(resp.Items))
		for _, it := range resp.Items {
			items = append(items, map[string]string{"key": encode(it.Key), "value": encode(it.Value)})
		}
		out = map[string]any{"db": req.DB, "items": items, "more": resp.More}
	case "stat":
		out = resp.Stat
	case "elect":
		out = map[string]uint16{"master": resp.Master}
	case "stepdown":
		out = map[string]bool{"stepped_down": true}
	}
	enc := json.NewEncoder(w)
	return enc.Encode(out)
}

func streamEvents(ctx context.Context, c *client, w io.Writer, jsonOut bool) error {
	if err := c.send(request{Op: "events"}); err != nil {
		return err
	}
	if _, err := c.recv(); err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	enc := json.NewEncoder(w)
	for {
		resp, err := c.recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if resp.Event == nil {
			continue
		}
		if jsonOut {
			if err := enc.Encode(resp.Event); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(w, "%s %s\n", resp.Event.Time.Format("15:04:05.000000"), resp.Event)
		}
	}
}

func printStat(w io.Writer, st board.Stat) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	master := "none"
	if st.Master != 0 {
		master = fmt.Sprint(st.Master)
	}
	fmt.Fprintf(tw, "site %d\tgroup %s\trole %s\tmaster %s\tgen %d\tegen %d\n", st.Site, st.Group, st.Role, master, st.Gen, st.Egen)
	fmt.Fprintf(tw, "lsn %d\tperm %d\tckpt %d\tlockout %v\tuptime %v\tcontent hash %016x\n", st.LSN, st.PermLSN, st.CheckpointLSN, st.LockedOut, st.Uptime.Round(time.Millisecond), st.ContentHash)
	lease := "off"
	if st.Lease.Enabled {
		lease = map[bool]string{true: "valid", false: "not held"}[st.Lease.Valid]
	}
	el := "idle"
	if st.Election.InProgress {
		el = "in progress " + st.Election.Phase
	}
	if st.Election.Recovering {
		el += fmt.Sprintf(", recovering (empty: heard %d of the %d boards that remember it waits for)",
			st.Election.Witnesses, st.Election.WitnessesNeeded)
	}
	if st.Election.VoteFloorLSN != 0 {
		el += fmt.Sprintf(", vote floor gen %d lsn %d", st.Election.VoteFloorGen, st.Election.VoteFloorLSN)
	}
	fmt.Fprintf(tw, "lease %s\telection %s\telections %d\tlast failover %v\n", lease, el, st.Election.Elections, st.Election.LastFailover.Round(time.Microsecond))
	initS := "idle"
	if st.Init.Active {
		initS = fmt.Sprintf("%.1f%% (%d/%d pages, %.0f pages/s)", st.Init.Percent, st.Init.PagesDone, st.Init.PagesTotal, st.Init.PagesPerSec)
	} else if st.Init.Count > 0 {
		initS = fmt.Sprintf("done x%d, last %v at %.0f pages/s", st.Init.Count, st.Init.LastDuration.Round(time.Millisecond), st.Init.PagesPerSec)
		if whole := st.Init.LastTotalDuration.Round(time.Millisecond); whole > st.Init.LastDuration.Round(time.Millisecond) {
			initS += fmt.Sprintf(" (%v from its first copy)", whole)
		}
	}
	if st.Init.Active || st.Init.Count > 0 {
		initS += map[bool]string{true: ", into its own pool", false: ", into a second region"}[st.Init.InPlace]
	}
	if st.Init.Restarts > 0 {
		initS += fmt.Sprintf(", %d restarted (%d resumed, %d pages kept)", st.Init.Restarts, st.Init.Resumes, st.Init.PagesKept)
	}
	if st.Init.Failures > 0 {
		initS += fmt.Sprintf(", %d failed", st.Init.Failures)
		if st.Init.LastError != "" {
			initS += " (last: " + st.Init.LastError + ")"
		}
	}
	fmt.Fprintf(tw, "init %s\n", initS)
	poolPct := 0.0
	if st.Pool.TotalPages > 0 {
		poolPct = 100 * float64(st.Pool.UsedPages) / float64(st.Pool.TotalPages)
	}
	logPct := 0.0
	if st.Log.Size > 0 {
		logPct = 100 * float64(st.Log.End-st.Log.Begin) / float64(st.Log.Size)
	}
	fmt.Fprintf(tw, "pool %d/%d pages (%.1f%%)\tlog %d/%d bytes (%.1f%%)\n", st.Pool.UsedPages, st.Pool.TotalPages, poolPct, st.Log.End-st.Log.Begin, st.Log.Size, logPct)
	fmt.Fprintf(tw, "held for snapshots %d pages\toldest snapshot %d txns behind\tsnapshots here %d\treaders attached %s\treaders held long %d\n",
		st.Pool.HeldPages, st.Pool.OldestBehind, st.Pool.Snapshots, readersText(st.Pool.Readers), st.Counters.ReaderHoldWarnings)
	k := st.Counters
	fmt.Fprintf(tw, "msgs sent %d\trecv %d\tdropped %d\tsend errors %d\tframes dropped %d\tevents dropped %d\trerequests %d\n", k.MsgsSent, k.MsgsRecv, k.MsgsDropped, k.SendErrors, k.FramesDropped, k.EventsDropped, k.ReRequests)
	if reasons := nonZeroDrops(k.Drops); reasons != "" {
		fmt.Fprintf(tw, "frame drops by reason\t%s\n", reasons)
	}
	batch := 0.0
	if k.Batches > 0 {
		batch = float64(k.Commits) / float64(k.Batches)
	}
	fmt.Fprintf(tw, "commits %d\tbatches %d (%.1f/batch)\tperm failed %d\tforwarded %d\tserved %d\n", k.Commits, k.Batches, batch, k.PermFailed, k.AppForwarded, k.AppServed)
	fmt.Fprintf(tw, "stalls %d\tlongest %v\t(runtime not scheduled for longer than the heartbeat monitor)\n", k.Stalls, k.LongestStall.Round(10*time.Microsecond))
	tw.Flush()
	if len(st.Sites) > 0 {
		sites := append([]board.SiteStat(nil), st.Sites...)
		sort.Slice(sites, func(i, j int) bool { return sites[i].Site < sites[j].Site })
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SITE\tACKED LSN\tLAG BYTES\tLAST HEARD\tELECTABLE")
		for _, s := range sites {
			heard := "never"
			if s.LastHeard >= 0 {
				heard = s.LastHeard.Round(time.Microsecond).String() + " ago"
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%v\n", s.Site, s.AckedLSN, s.LagBytes, heard, s.Electable)
		}
		tw.Flush()
	}
}

// nonZeroDrops lists the transport's non-zero drop counters, by name.
func nonZeroDrops(drops map[string]uint64) string {
	names := make([]string, 0, len(drops))
	for name, n := range drops {
		if n > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var sb strings.Builder
	for i, name := range names {
		if i > 0 {
			sb.WriteString(" ")
		}
		fmt.Fprintf(&sb, "%s=%d", name, drops[name])
	}
	return sb.String()
}

// readersText lists the processes attached to the region: a reader stuck in
// a view is what keeps pages held until the pool fills.
func readersText(rs []board.ReaderStat) string {
	if len(rs) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range rs {
		if r.Reading {
			parts = append(parts, fmt.Sprintf("pid %d (reading, %d txns behind)", r.PID, r.Behind))
		} else {
			parts = append(parts, fmt.Sprintf("pid %d", r.PID))
		}
	}
	return strings.Join(parts, ", ")
}
