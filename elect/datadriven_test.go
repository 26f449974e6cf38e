package elect

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Data-driven interaction tests in the style of etcd-raft: each
// testdata/*.txt script drives a few Election instances step by step over an
// explicit message queue, and the output of each command is compared with
// the text after its "----" line. Run with -elect.rewrite to regenerate the
// expected output after a deliberate change (and review the diff).
//
// Commands (one per block; arguments are key=value):
//
//	site id= prio= gen= lsn= [strict=true] [timeout=1s] [seed=n]
//	start id= electable= [lease=<until>]      at the current time
//	time now=<d>                               advance the clock, tick every site
//	deliver [from=] [to=] [kind=vote1|vote2]   deliver queued messages (all matching, FIFO)
//	drop [from=] [to=] [kind=]                 discard queued messages
//	vote1 to= site= egen= gen= lsn= prio=      inject a VOTE1 (from a site not modelled)
//	vote2 to= from= egen= [prio=]              inject a VOTE2 (prio given: StepVote2Vote)
//	observe id= egen=
//	cancel id=
//	status                                     phase, egen, designee, deadline of every site
//	queue                                      messages in flight
//
// Every command prints the messages the sites emitted and any new winner.

var rewrite = flag.Bool("elect.rewrite", false, "rewrite testdata/*.txt expected output")

type ddMsg struct {
	from, to uint16
	kind     Kind
	vote     Vote
}

type ddEnv struct {
	now   time.Duration
	sites map[uint16]*Election
	ids   []uint16
	queue []ddMsg
	won   map[uint16]uint32
	logs  map[uint16]Vote // each site's (LastGen, LSN) for start
}

func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type ddBlock struct {
	line     int
	cmd      string
	expected string
}

func parseScript(t *testing.T, path string) []ddBlock {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []ddBlock
	var cur *ddBlock
	inOut := false
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil:
			if s := strings.TrimSpace(line); s == "" || strings.HasPrefix(s, "#") {
				continue
			}
			blocks = append(blocks, ddBlock{line: n, cmd: strings.TrimSpace(line)})
			cur = &blocks[len(blocks)-1]
		case !inOut:
			if line != "----" {
				t.Fatalf("%s:%d: want ---- after the command, got %q", path, n, line)
			}
			inOut = true
		case line == "":
			cur, inOut = nil, false
		default:
			cur.expected += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil && !inOut {
		t.Fatalf("%s: last command has no ---- line", path)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := parseScript(t, path)
	env := &ddEnv{sites: map[uint16]*Election{}, won: map[uint16]uint32{}, logs: map[uint16]Vote{}}
	var out strings.Builder
	failed := false
	for _, b := range blocks {
		got, err := env.exec(b.cmd)
		if err != nil {
			t.Fatalf("%s:%d: %s: %v", path, b.line, b.cmd, err)
		}
		if got == "" {
			got = "ok\n"
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n", b.cmd, got)
		if !*rewrite && got != b.expected {
			t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", path, b.line, b.cmd, got, b.expected)
			failed = true
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(headerOf(path)+out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if failed {
		t.Log("rerun with -elect.rewrite to accept the new output")
	}
}

// headerOf keeps a script's leading comment block on rewrite.
func headerOf(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var h strings.Builder
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "" {
			break
		}
		h.WriteString(l)
	}
	return h.String()
}

type ddArgs map[string]string

func (a ddArgs) num(k string, def uint64) (uint64, error) {
	s, ok := a[k]
	if !ok {
		return def, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func (a ddArgs) must(k string) (uint64, error) {
	if _, ok := a[k]; !ok {
		return 0, fmt.Errorf("missing %s=", k)
	}
	return a.num(k, 0)
}

func (a ddArgs) dur(k string, def time.Duration) (time.Duration, error) {
	s, ok := a[k]
	if !ok {
		return def, nil
	}
	return time.ParseDuration(s)
}

func (env *ddEnv) exec(line string) (string, error) {
	fields := strings.Fields(line)
	args := ddArgs{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("argument %q is not key=value", f)
		}
		args[k] = v
	}
	var errs []error
	u := func(k string) uint64 {
		v, err := args.must(k)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	opt := func(k string, def uint64) uint64 {
		v, err := args.num(k, def)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	d := func(k string, def time.Duration) time.Duration {
		v, err := args.dur(k, def)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	site := func(k string) (*Election, uint16, error) {
		id := uint16(u(k))
		e := env.sites[id]
		if e == nil {
			return nil, id, fmt.Errorf("no site %d", id)
		}
		return e, id, nil
	}
	var b strings.Builder
	switch fields[0] {
	case "site":
		id := uint16(u("id"))
		e := New(Config{Self: id, Priority: uint32(u("prio")), TwoSiteStrict: args["strict"] == "true",
			Timeout: d("timeout", time.Second), MaxBackoff: d("maxbackoff", 8*time.Second), Seed: opt("seed", uint64(id))})
		env.sites[id] = e
		env.ids = append(env.ids, id)
		sort.Slice(env.ids, func(i, j int) bool { return env.ids[i] < env.ids[j] })
		env.logs[id] = Vote{LastGen: uint32(u("gen")), LSN: u("lsn")}
	case "start":
		e, id, err := site("id")
		if err != nil {
			return "", err
		}
		l := env.logs[id]
		e.Start(env.now, l.LastGen, l.LSN, int(u("electable")), d("lease", 0))
	case "time":
		env.now = d("now", env.now)
		for _, id := range env.ids {
			env.sites[id].Tick(env.now)
		}
	case "deliver", "drop":
		from, to, kind := opt("from", 0), opt("to", 0), args["kind"]
		var keep []ddMsg
		var take []ddMsg
		for _, m := range env.queue {
			if (from == 0 || uint64(m.from) == from) && (to == 0 || uint64(m.to) == to) &&
				(kind == "" || strings.EqualFold(kind, m.kind.String())) {
				take = append(take, m)
			} else {
				keep = append(keep, m)
			}
		}
		env.queue = keep
		for _, m := range take {
			if fields[0] == "drop" {
				fmt.Fprintf(&b, "dropped %s\n", ddFmt(m))
				continue
			}
			env.deliver(m)
		}
	case "vote1":
		e, _, err := site("to")
		if err != nil {
			return "", err
		}
		e.StepVote1(env.now, Vote{Site: uint16(u("site")), Egen: uint32(u("egen")), LastGen: uint32(u("gen")),
			LSN: u("lsn"), Priority: uint32(u("prio"))})
	case "vote2":
		e, _, err := site("to")
		if err != nil {
			return "", err
		}
		if _, ok := args["prio"]; ok {
			e.StepVote2Vote(env.now, Vote{Site: uint16(u("from")), Egen: uint32(u("egen")), Priority: uint32(u("prio"))})
		} else {
			e.StepVote2(env.now, uint16(u("from")), uint32(u("egen")))
		}
	case "observe":
		e, _, err := site("id")
		if err != nil {
			return "", err
		}
		e.ObserveEgen(uint32(u("egen")))
	case "cancel":
		e, id, err := site("id")
		if err != nil {
			return "", err
		}
		e.Cancel()
		delete(env.won, id)
	case "status":
		for _, id := range env.ids {
			e := env.sites[id]
			fmt.Fprintf(&b, "%d: %v egen=%d", id, e.Phase(), e.Egen())
			if dsg, ok := e.Designee(); ok {
				fmt.Fprintf(&b, " designee=%d", dsg)
			}
			if dl, ok := e.NextDeadline(); ok {
				fmt.Fprintf(&b, " deadline=%v", dl)
			}
			if g, ok := e.Won(); ok {
				fmt.Fprintf(&b, " won=%d", g)
			}
			b.WriteString("\n")
		}
	case "queue":
		for _, m := range env.queue {
			b.WriteString(ddFmt(m) + "\n")
		}
	default:
		return "", fmt.Errorf("unknown command %q", fields[0])
	}
	if len(errs) > 0 {
		return "", errs[0]
	}
	b.WriteString(env.collect())
	return b.String(), nil
}

func (env *ddEnv) deliver(m ddMsg) {
	e := env.sites[m.to]
	if e == nil {
		return // to a site not modelled: lost
	}
	switch m.kind {
	case KindVote1:
		e.StepVote1(env.now, m.vote)
	case KindVote2:
		e.StepVote2Vote(env.now, m.vote)
	}
}

// collect drains every outbox into the queue and reports new messages and wins.
func (env *ddEnv) collect() string {
	var b strings.Builder
	for _, id := range env.ids {
		e := env.sites[id]
		for _, o := range e.Outbox() {
			if o.To == Broadcast {
				fmt.Fprintf(&b, "%d->all %v egen=%d gen=%d lsn=%d prio=%d\n", id, o.Kind, o.Vote.Egen, o.Vote.LastGen, o.Vote.LSN, o.Vote.Priority)
				for _, p := range env.ids {
					if p != id {
						env.queue = append(env.queue, ddMsg{from: id, to: p, kind: o.Kind, vote: o.Vote})
					}
				}
				continue
			}
			m := ddMsg{from: id, to: o.To, kind: o.Kind, vote: o.Vote}
			b.WriteString(ddFmt(m) + "\n")
			env.queue = append(env.queue, m)
		}
		if g, ok := e.Won(); ok && env.won[id] != g {
			env.won[id] = g
			fmt.Fprintf(&b, "%d WON egen=%d\n", id, g)
		}
	}
	return b.String()
}

func ddFmt(m ddMsg) string {
	if m.kind == KindVote2 {
		return fmt.Sprintf("%d->%d %v egen=%d", m.from, m.to, m.kind, m.vote.Egen)
	}
	return fmt.Sprintf("%d->%d %v egen=%d gen=%d lsn=%d prio=%d", m.from, m.to, m.kind, m.vote.Egen, m.vote.LastGen, m.vote.LSN, m.vote.Priority)
}
