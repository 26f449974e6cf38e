package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// The stability section reads the boards' own logs to say what each
// election coincided with. A board logs "election started" (with the
// master it lost and whether frames were waiting in its socket) and, once
// its timers run again, "board runtime stalled" (how long, whether the
// loop meanwhile found the runtime held, its role). Every board runs on
// this machine's clock, so the lines of different boards compare.

// logEvent is one line of a board's log that the classification uses.
type logEvent struct {
	at   time.Time
	site uint16
	// election
	election      bool
	lostMaster    uint16
	framesWaiting bool
	// stall
	stall bool
	gap   time.Duration
	held  int
}

// logSlack absorbs the logs' millisecond timestamps.
const logSlack = 2 * time.Millisecond

// parseLogLine splits a slog text line into its keys and values (values
// quoted by slog are unquoted). ok is false for a line that is not
// key=value pairs.
func parseLogLine(line string) (kv map[string]string, ok bool) {
	kv = make(map[string]string)
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsRune(s[:eq], ' ') {
			return nil, false
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, false
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil, false
			}
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		kv[key] = val
	}
	return kv, len(kv) > 0
}

// eventFromLine returns the election or stall a log line reports.
func eventFromLine(line string, site uint16) (logEvent, bool) {
	if !strings.Contains(line, "election started") && !strings.Contains(line, "runtime stalled") {
		return logEvent{}, false
	}
	kv, ok := parseLogLine(line)
	if !ok {
		return logEvent{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, kv["time"])
	if err != nil {
		return logEvent{}, false
	}
	ev := logEvent{at: at, site: site}
	switch msg := kv["msg"]; {
	case msg == "election started":
		m, err := strconv.ParseUint(kv["last_master"], 10, 16)
		if err != nil {
			return logEvent{}, false
		}
		ev.election, ev.lostMaster, ev.framesWaiting = true, uint16(m), kv["frames_waiting"] == "true"
	case strings.HasPrefix(msg, "board runtime stalled"):
		gap, err := time.ParseDuration(kv["for"])
		if err != nil {
			return logEvent{}, false
		}
		held, err := strconv.Atoi(kv["held_ticks"])
		if err != nil {
			return logEvent{}, false
		}
		ev.stall, ev.gap, ev.held = true, gap, held
	default:
		return logEvent{}, false
	}
	return ev, true
}

// readBoardEvents returns the elections and stalls a board logged between
// from and to.
func readBoardEvents(path string, site uint16, from, to time.Time) ([]logEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []logEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ev, ok := eventFromLine(sc.Text(), site)
		if ok && !ev.at.Before(from) && !ev.at.After(to) {
			evs = append(evs, ev)
		}
	}
	return evs, sc.Err()
}

// electionCauses counts elections by what the logs show when they started.
type electionCauses struct {
	// masterStarved: the lost master logged a stall covering the start
	// during which its loop ran less than once per heartbeat period
	// (held_ticks counts the loop's runs that found the runtime held; 0:
	// the process did not run at all): its process hardly ran, and the
	// loop could not speak for it often enough.
	masterStarved int
	// masterHeld: such a stall during which the loop ran at least once per
	// heartbeat period: the runtime was held while the process ran, and
	// the loop's keepalives should have covered it.
	masterHeld int
	// ownLate: no stall of the master, but the electing board itself was
	// stalled then or had frames waiting unread.
	ownLate int
	// unexplained: none of these (a master really silent, a lost frame, or
	// a retry of an election in progress).
	unexplained int
}

func (c electionCauses) total() int {
	return c.masterStarved + c.masterHeld + c.ownLate + c.unexplained
}

// covers reports whether stall s (logged when the board ran again, so
// covering the gap before it) spans t.
func (s logEvent) covers(t time.Time) bool {
	return !t.Before(s.at.Add(-s.gap-logSlack)) && !t.After(s.at.Add(logSlack))
}

// classifyElections sorts every election in evs by its cause; heartbeat
// is the masters' heartbeat period, against which a stall's held_ticks
// says whether the loop ran often enough to speak for the master.
func classifyElections(evs []logEvent, heartbeat time.Duration) electionCauses {
	var c electionCauses
	for _, e := range evs {
		if !e.election {
			continue
		}
		cause := &c.unexplained
		for _, s := range evs {
			if !s.stall || !s.covers(e.at) {
				continue
			}
			switch {
			// The lost master's stall, whatever role it logged: it may
			// have learned of its successor before its first tick.
			case s.site == e.lostMaster && time.Duration(s.held)*heartbeat < s.gap:
				cause = &c.masterStarved
			case s.site == e.lostMaster && cause != &c.masterStarved:
				cause = &c.masterHeld
			case s.site == e.site && cause == &c.unexplained:
				cause = &c.ownLate
			}
		}
		if cause == &c.unexplained && e.framesWaiting {
			cause = &c.ownLate
		}
		*cause++
	}
	return c
}

// electionCauses classifies the elections the cluster's boards logged
// between from and to.
func (c *cluster) electionCauses(from, to time.Time, heartbeat time.Duration) (electionCauses, error) {
	var evs []logEvent
	for _, p := range c.procs {
		e, err := readBoardEvents(p.logf, p.site, from, to)
		if err != nil {
			return electionCauses{}, err
		}
		evs = append(evs, e...)
	}
	return classifyElections(evs, heartbeat), nil
}
