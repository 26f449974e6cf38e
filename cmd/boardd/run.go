package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/seed61e250c8/boardha/board"
)

// fileConfig is `boardd run`'s configuration, as a JSON file and as flags
// (flags override the file). Durations are Go duration strings, sizes take
// K/M/G suffixes (powers of 1024).
type fileConfig struct {
	Site      uint16            `json:"site"`
	Group     string            `json:"group"`
	Peers     map[string]string `json:"peers"` // site -> host:port (udp) or "" (raw)
	Priority  uint32            `json:"priority"`
	Transport string            `json:"transport"` // udp | raw
	Iface     string            `json:"iface"`     // raw
	RxThread  bool              `json:"rx_thread"` // raw: receive on a thread of its own (default true)
	Listen    string            `json:"listen"`    // udp; default peers[site]
	Master    bool              `json:"master"`    // start as the designated master
	// MasterNice: the threads' nice while master (0: leave it alone).
	MasterNice int `json:"master_nice"`

	Ack              string  `json:"ack"`
	AckTimeout       string  `json:"ack_timeout"`
	Leases           bool    `json:"leases"`
	LeaseTimeout     string  `json:"lease_timeout"`
	ClockSkew        float64 `json:"clock_skew"`
	HeartbeatSend    string  `json:"heartbeat_send"`
	HeartbeatMonitor string  `json:"heartbeat_monitor"`
	ElectionTimeout  string  `json:"election_timeout"`
	Pace             string  `json:"pace"` // "off" turns pacing off
	TwoSiteStrict    bool    `json:"two_site_strict"`
	NoAutoInit       bool    `json:"no_auto_init"`

	LogSize       string `json:"log_size"`
	CheckpointKiB int    `json:"checkpoint_kib"`
	PoolSize      string `json:"pool_size"`
	PageSize      int    `json:"page_size"`
	Shm           string `json:"shm"` // region name; "private" = not shared; default boardha-<group>-<site>
	KeepShm       bool   `json:"keep_shm"`
	// ReaderHoldWarn: "off" turns the watch of attached readers off.
	ReaderHoldWarn string `json:"reader_hold_warn"`

	Sock     string `json:"sock"`
	LogLevel string `json:"log_level"`
	LogJSON  bool   `json:"log_json"`
}

func defaultFileConfig() fileConfig {
	return fileConfig{Group: "chassis", Priority: 100, Transport: "udp", Ack: "quorum", LogLevel: "info", RxThread: true}
}

func bindRunFlags(fs *flag.FlagSet, fc *fileConfig) (peers, site *string) {
	site = fs.String("site", strconv.Itoa(int(fc.Site)), "this board's site id (1..65534)")
	fs.StringVar(&fc.Group, "group", fc.Group, "replication group name")
	peers = fs.String("peers", encodePeers(fc.Peers), "group sites: 1=10.0.0.1:7000,2=10.0.0.2:7000 (udp) or 1,2,3 (raw)")
	fs.Func("priority", fmt.Sprintf("election priority, 0 = never master (default %d)", fc.Priority), func(s string) error {
		v, err := strconv.ParseUint(s, 10, 32)
		fc.Priority = uint32(v)
		return err
	})
	fs.StringVar(&fc.Transport, "transport", fc.Transport, "backplane transport: udp or raw")
	fs.StringVar(&fc.Iface, "iface", fc.Iface, "raw: backplane interface")
	fs.BoolVar(&fc.RxThread, "rx-thread", fc.RxThread, "raw: wait for frames on a thread of its own instead of the Go netpoller (better with one board per process)")
	fs.StringVar(&fc.Listen, "listen", fc.Listen, "udp: this board's host:port (default its -peers entry)")
	fs.BoolVar(&fc.Master, "master", fc.Master, "start as the designated master instead of electing")
	fs.IntVar(&fc.MasterNice, "master-nice", fc.MasterNice, "scheduling nice of this process's threads while it is master, -20..19 (0: leave it alone; needs CAP_SYS_NICE to raise)")
	fs.StringVar(&fc.Ack, "ack", fc.Ack, "ack policy: none, one, onepeer, quorum, allpeers, all")
	fs.StringVar(&fc.AckTimeout, "ack-timeout", fc.AckTimeout, "ack timeout (default 100ms)")
	fs.BoolVar(&fc.Leases, "leases", fc.Leases, "enable master leases")
	fs.StringVar(&fc.LeaseTimeout, "lease-timeout", fc.LeaseTimeout, "lease timeout (default 20ms)")
	fs.Float64Var(&fc.ClockSkew, "clock-skew", fc.ClockSkew, "clock skew factor 1.0..2.0 (default 1.05)")
	fs.StringVar(&fc.HeartbeatSend, "heartbeat-send", fc.HeartbeatSend, "master heartbeat interval (default 2ms)")
	fs.StringVar(&fc.HeartbeatMonitor, "heartbeat-monitor", fc.HeartbeatMonitor, "master silence before an election (default 10ms)")
	fs.StringVar(&fc.ElectionTimeout, "election-timeout", fc.ElectionTimeout, "election attempt timeout (default 10ms)")
	fs.StringVar(&fc.Pace, "pace", fc.Pace, `how long a replica the master does not wait for may leave the log unread, "off" for never (default 1ms)`)
	fs.BoolVar(&fc.TwoSiteStrict, "two-site-strict", fc.TwoSiteStrict, "two-site group: require both votes")
	fs.BoolVar(&fc.NoAutoInit, "no-auto-init", fc.NoAutoInit, "never internal-init automatically")
	fs.StringVar(&fc.LogSize, "log-size", fc.LogSize, "log buffer size (default 64M)")
	fs.IntVar(&fc.CheckpointKiB, "checkpoint-kib", fc.CheckpointKiB, "checkpoint every this many KiB of log (default 256)")
	fs.StringVar(&fc.PoolSize, "pool-size", fc.PoolSize, "page pool size (default 256M)")
	fs.IntVar(&fc.PageSize, "page-size", fc.PageSize, "page size (default 4096)")
	fs.StringVar(&fc.Shm, "shm", fc.Shm, `shared memory region name, "private" for none (default boardha-<group>-<site>)`)
	fs.BoolVar(&fc.KeepShm, "keep-shm", fc.KeepShm, "keep the shared memory region on exit")
	fs.StringVar(&fc.ReaderHoldWarn, "reader-hold-warn", fc.ReaderHoldWarn, `warn when an attached process holds one snapshot this long, "off" for never (default 10s)`)
	fs.StringVar(&fc.Sock, "sock", fc.Sock, "control socket (default $BOARDHA_SOCK or /run/boardha/<group>-<site>.sock)")
	fs.StringVar(&fc.LogLevel, "log-level", fc.LogLevel, "debug, info, warn or error")
	fs.BoolVar(&fc.LogJSON, "log-json", fc.LogJSON, "log as JSON")
	return peers, site
}

func encodePeers(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		if m[k] == "" {
			parts = append(parts, k)
		} else {
			parts = append(parts, k+"="+m[k])
		}
	}
	return strings.Join(parts, ",")
}

func parsePeers(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		site, addr, _ := strings.Cut(part, "=")
		if _, err := strconv.ParseUint(site, 10, 16); err != nil {
			return nil, usagef("boardd run: -peers entry %q: site must be a number 1..65534", part)
		}
		m[site] = addr
	}
	return m, nil
}

// parseSize reads "64M", "512K", "1G" or plain bytes.
func parseSize(field, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	v, err := strconv.ParseInt(strings.TrimSuffix(strings.ToUpper(s), "I"), 10, 64)
	if err != nil || v < 0 {
		return 0, usagef("boardd run: %s %q: want bytes with an optional K, M or G suffix", field, s)
	}
	return v * mult, nil
}

// parseDurOrOff parses a duration that "off" turns off: the board's
// negative setting. A negative duration is refused (say off).
func parseDurOrOff(field, s string) (time.Duration, error) {
	if s == "off" {
		return -1, nil
	}
	d, err := parseDur(field, s)
	if err == nil && d < 0 {
		err = usagef("boardd run: %s %q is negative; use off to turn it off", field, s)
	}
	return d, err
}

func parseDur(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("boardd run: %s %q: want a duration like 10ms", field, s)
	}
	return d, nil
}

// loadRunConfig reads -config (if any) and then the flags over it.
func loadRunConfig(args []string, stderr io.Writer) (fileConfig, error) {
	fc := defaultFileConfig()
	// First pass: only -config.
	var path string
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			path = v
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			path = v
		} else if (a == "-config" || a == "--config") && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fc, usagef("boardd run: reading -config: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return fc, usagef("boardd run: -config %s: %v", path, err)
		}
	}
	fs := flag.NewFlagSet("boardd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", path, "JSON configuration file (fields as the flags, with _ for -); flags override it")
	peers, site := bindRunFlags(fs, &fc)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return fc, err
	}
	if len(pos) > 0 {
		return fc, usagef("boardd run: unexpected arguments %q", pos)
	}
	s, err := strconv.ParseUint(*site, 10, 16)
	if err != nil {
		return fc, usagef("boardd run: -site %q: want 1..65534", *site)
	}
	fc.Site = uint16(s)
	if fc.Peers, err = parsePeers(*peers); err != nil {
		return fc, err
	}
	return fc, nil
}

func (fc fileConfig) boardConfig(log *slog.Logger) (board.Config, error) {
	if fc.MasterNice < -20 || fc.MasterNice > 19 {
		return board.Config{}, usagef("boardd: -master-nice %d is outside -20..19", fc.MasterNice)
	}
	c := board.Config{Site: fc.Site, Group: fc.Group, Priority: fc.Priority, Leases: fc.Leases,
		ClockSkew: fc.ClockSkew, TwoSiteStrict: fc.TwoSiteStrict, NoAutoInit: fc.NoAutoInit,
		CheckpointKiB: fc.CheckpointKiB, PageSize: fc.PageSize, KeepShm: fc.KeepShm, Logger: log}
	c.Peers = map[uint16]string{}
	for k, v := range fc.Peers {
		s, err := strconv.ParseUint(k, 10, 16)
		if err != nil {
			return c, usagef("boardd: peers key %q is not a site number", k)
		}
		c.Peers[uint16(s)] = v
	}
	switch fc.Transport {
	case "udp":
		c.Transport = board.UDPTransport(fc.Listen)
	case "raw":
		c.Transport = board.RawTransport(fc.Iface)
		if fc.RxThread {
			c.Transport = c.Transport.ReceiveInThread()
		}
	default:
		return c, usagef("boardd: -transport %q; use udp or raw", fc.Transport)
	}
	var err error
	if c.AckPolicy, err = board.ParseAckPolicy(fc.Ack); err != nil {
		return c, usagef("%v", err)
	}
	durs := []struct {
		name string
		s    string
		d    *time.Duration
	}{
		{"-ack-timeout", fc.AckTimeout, &c.AckTimeout}, {"-lease-timeout", fc.LeaseTimeout, &c.LeaseTimeout},
		{"-heartbeat-send", fc.HeartbeatSend, &c.HeartbeatSend}, {"-heartbeat-monitor", fc.HeartbeatMonitor, &c.HeartbeatMonitor},
		{"-election-timeout", fc.ElectionTimeout, &c.ElectionTimeout},
	}
	for _, d := range durs {
		if *d.d, err = parseDur(d.name, d.s); err != nil {
			return c, err
		}
	}
	if c.Pace, err = parseDurOrOff("-pace", fc.Pace); err != nil {
		return c, err
	}
	if c.ReaderHoldWarn, err = parseDurOrOff("-reader-hold-warn", fc.ReaderHoldWarn); err != nil {
		return c, err
	}
	ls, err := parseSize("-log-size", fc.LogSize)
	if err != nil {
		return c, err
	}
	c.LogSize = int(ls)
	if c.PoolSize, err = parseSize("-pool-size", fc.PoolSize); err != nil {
		return c, err
	}
	switch fc.Shm {
	case "private":
	case "":
		c.ShmName = fmt.Sprintf("boardha-%s-%d", fc.Group, fc.Site)
	default:
		c.ShmName = fc.Shm
	}
	return c, nil
}

func newLogger(fc fileConfig, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(fc.LogLevel)); err != nil {
		return nil, usagef("boardd run: -log-level %q; use debug, info, warn or error", fc.LogLevel)
	}
	opt := &slog.HandlerOptions{Level: lvl}
	if fc.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opt)), nil
	}
	return slog.New(slog.NewTextHandler(w, opt)), nil
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fc, err := loadRunConfig(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(fc, stderr)
	if err != nil {
		return err
	}
	cfg, err := fc.boardConfig(log)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return &usageError{err.Error()}
	}
	sock := fc.Sock
	if sock == "" {
		sock = defaultSock(fc.Group, fc.Site)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := board.Open(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	srv, err := listen(sock, boardBackend{b}, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	mode := board.StartClient
	if fc.Master {
		mode = board.StartMaster
	}
	if err := b.Start(ctx, mode); err != nil {
		return err
	}
	if fc.MasterNice != 0 {
		go watchMasterNice(ctx, b.IsMaster, fc.MasterNice, log)
	}
	log.Info("boardd running", "sock", sock, "shm", cfg.ShmName)
	<-ctx.Done()
	log.Info("boardd stopping")
	return nil
}

// boardBackend serves the socket from a *board.Board.
type boardBackend struct{ b *board.Board }

func (bb boardBackend) Get(db string, key []byte, leased bool) ([]byte, error) {
	var v []byte
	read := func(tx *board.Tx) error {
		if got := tx.Bucket(db).Get(key); got != nil {
			v = append([]byte{}, got...)
		}
		return nil
	}
	var err error
	if leased {
		err = bb.b.ViewLeased(read)
	} else {
		err = bb.b.View(read)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("%w: %q in database %q", errNotFound, key, db)
	}
	return v, err
}

func (bb boardBackend) Scan(db string, prefix, start, end []byte, limit int) ([]kv, bool, error) {
	var items []kv
	more := false
	err := bb.b.View(func(tx *board.Tx) error {
		c := tx.Bucket(db).Cursor()
		from := start
		if bytes.Compare(prefix, from) > 0 {
			from = prefix
		}
		var k, v []byte
		if len(from) > 0 {
			k, v = c.Seek(from)
		} else {
			k, v = c.First()
		}
		for ; k != nil; k, v = c.Next() {
			if !bytes.HasPrefix(k, prefix) || len(end) > 0 && bytes.Compare(k, end) >= 0 {
				break
			}
			if len(items) == limit {
				more = true
				break
			}
			items = append(items, kv{Key: append([]byte{}, k...), Value: append([]byte{}, v...)})
		}
		return nil
	})
	return items, more, err
}

func (bb boardBackend) Apply(ctx context.Context, ops ...board.Op) (board.Commit, error) {
	return bb.b.Apply(ctx, ops...)
}

// Stat adds the content hash, so tests and operators can compare boards.
func (bb boardBackend) Stat(withHash bool) board.Stat {
	st := bb.b.Stat()
	if !withHash {
		return st
	}
	_ = bb.b.View(func(tx *board.Tx) error {
		h, err := tx.ContentHash()
		st.ContentHash = h
		return err
	})
	return st
}
func (bb boardBackend) Elect(ctx context.Context) (uint16, error) { return bb.b.Elect(ctx) }

func (bb boardBackend) StepDown(ctx context.Context) error { return bb.b.StepDown(ctx) }
func (bb boardBackend) Events() <-chan board.Event         { return bb.b.Events() }
