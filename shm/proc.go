package shm

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// procIdentity identifies a process across pid reuse: its pid plus its start time in
// clock ticks since boot (field 22 of /proc/<pid>/stat). Start time 0 means unknown
// (no /proc); liveness then falls back to kill(pid, 0).
type procIdentity struct {
	pid   uint32
	start uint64
}

// word packs an identity into the single 64-bit word that lock and reader-slot ownership
// is CASed on. Only the low 32 bits of the start time fit; two processes would have to
// share a pid and a start time modulo 2^32 ticks (497 days at 100 Hz) to be confused.
func (p procIdentity) word() uint64 { return uint64(p.pid)<<32 | p.start&0xffffffff }

func wordPID(w uint64) uint32 { return uint32(w >> 32) }

// selfIdentity reads this process's identity.
func selfIdentity() procIdentity {
	pid := os.Getpid()
	start, _, err := procStat(pid)
	if err != nil {
		start = 0
	}
	return procIdentity{pid: uint32(pid), start: start}
}

// procStat returns the start time and state letter of pid from /proc/<pid>/stat.
// The command name (field 2) may contain spaces and parentheses, so fields are counted
// after the last ')'.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("shm: malformed /proc stat line")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, 0, errors.New("shm: short /proc stat line")
	}
	start, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, 0, err
	}
	return start, fields[0][0], nil
}

// ownerAlive reports whether the process that stored owner word w still runs. Anything
// it cannot decide (e.g. /proc hidden) counts as alive: stealing a live writer's lock or
// a live reader's slot is far worse than delaying reuse.
func (self procIdentity) ownerAlive(w uint64) bool {
	if w == self.word() {
		return true
	}
	pid := int(wordPID(w))
	if pid <= 0 {
		return false
	}
	start, state, err := procStat(pid)
	switch {
	case err == nil:
		if state == 'Z' || state == 'X' {
			return false // exited, not yet reaped
		}
		return w&0xffffffff == 0 || start&0xffffffff == w&0xffffffff
	case errors.Is(err, os.ErrNotExist):
		return false
	default:
		kerr := unix.Kill(pid, 0)
		return kerr == nil || kerr == unix.EPERM
	}
}

// livenessTTL bounds how long a check of a reader's process (kill(pid, 0), then its
// start time and state in /proc) is trusted: the writer's scans in between ask
// nothing, so a reader in a long read costs no system call per commit, and a reader
// that died (reaped, a zombie, or its pid reused) is noticed within this long.
// Counting a dead reader as alive that long only delays page reuse, never corrupts
// anything.
const livenessTTL = 20 * time.Millisecond

// livenessCache remembers when each foreign reader's process was last fully verified.
type livenessCache struct {
	mu      sync.Mutex
	checked map[uint64]time.Time
}

// alive is ownerAlive with the cache, for the reader-table scans the writer runs often.
// The writer lock always uses the full check: it is rare and must not be stolen.
func (c *livenessCache) alive(self procIdentity, w uint64) bool {
	if w == self.word() {
		return true
	}
	pid := int(wordPID(w))
	if pid <= 0 {
		return false
	}
	now := time.Now()
	c.mu.Lock()
	at, ok := c.checked[w]
	c.mu.Unlock()
	if ok && now.Sub(at) < livenessTTL {
		return true
	}
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		c.forget(w)
		return false
	}
	if !self.ownerAlive(w) {
		c.forget(w)
		return false
	}
	c.mu.Lock()
	if c.checked == nil || len(c.checked) > 4*MaxReaders {
		c.checked = map[uint64]time.Time{}
	}
	c.checked[w] = now
	c.mu.Unlock()
	return true
}

func (c *livenessCache) forget(w uint64) {
	c.mu.Lock()
	delete(c.checked, w)
	c.mu.Unlock()
}
