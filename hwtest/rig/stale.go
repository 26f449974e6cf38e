package rig

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerDir holds one file per live chassis, named by its id, holding the
// creating process's pid and start time. The file is created (O_EXCL)
// before any namespace of the chassis and removed after the last one, so a
// namespace of the naming scheme without a marker, or whose marker names a
// dead process, was left by a crash.
const markerDir = "/run/boardha-rig"

// markerGrace is how long a marker that cannot be parsed is presumed to be
// still being written by a live process.
const markerGrace = time.Minute

// idHexLen is the number of hex digits after the prefix in a chassis id.
const idHexLen = 4

// maxPrefixLen keeps "<prefix><4 hex>-v<site>" within IFNAMSIZ-1 = 15 bytes
// for sites up to 3 digits.
const maxPrefixLen = 5

// marker is the content of a marker file.
type marker struct {
	pid   int
	start uint64 // process start time in clock ticks since boot, /proc/<pid>/stat field 22
}

// markerMagic starts every marker so that a foreign file is never mistaken
// for one.
const markerMagic = "boardha-rig"

func formatMarker(m marker) []byte {
	return fmt.Appendf(nil, "%s pid=%d start=%d\n", markerMagic, m.pid, m.start)
}

// parseMarker decodes a marker file. It never panics on malformed input.
func parseMarker(b []byte) (marker, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != markerMagic {
		return marker{}, fmt.Errorf("%w: %q", ErrBadMarker, truncate(b))
	}
	pidS, ok1 := strings.CutPrefix(f[1], "pid=")
	startS, ok2 := strings.CutPrefix(f[2], "start=")
	if !ok1 || !ok2 {
		return marker{}, fmt.Errorf("%w: %q", ErrBadMarker, truncate(b))
	}
	pid, err := strconv.Atoi(pidS)
	if err != nil || pid <= 0 {
		return marker{}, fmt.Errorf("%w: pid %q", ErrBadMarker, pidS)
	}
	start, err := strconv.ParseUint(startS, 10, 64)
	if err != nil {
		return marker{}, fmt.Errorf("%w: start %q", ErrBadMarker, startS)
	}
	return marker{pid: pid, start: start}, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// procStart returns the start time of process pid, which together with the
// pid identifies a process across pid reuse.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatStart(b)
}

// parseStatStart extracts field 22 (starttime) of /proc/<pid>/stat. The
// command name (field 2) may contain spaces and parentheses, so fields are
// counted after its last ')'.
func parseStatStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("rig: malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("rig: malformed /proc stat: too few fields")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether the process that wrote m still runs.
func (m marker) alive() bool {
	if err := syscall.Kill(m.pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	start, err := procStart(m.pid)
	if err != nil {
		// Kill said it exists but /proc does not show it (another pid
		// namespace): presume alive rather than destroy its chassis.
		return true
	}
	return start == m.start
}

// validPrefix checks a chassis name prefix: a lowercase letter, then
// lowercase letters or digits, at most maxPrefixLen bytes.
func validPrefix(p string) error {
	if p == "" || len(p) > maxPrefixLen {
		return fmt.Errorf("%w: prefix %q must be 1..%d bytes", ErrBadOptions, p, maxPrefixLen)
	}
	for i, r := range p {
		ok := r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9'
		if !ok {
			return fmt.Errorf("%w: prefix %q must be a lowercase letter followed by lowercase letters or digits", ErrBadOptions, p)
		}
	}
	return nil
}

// splitID returns the chassis id at the start of name if name is
// "<prefix><4 hex>" followed by rest, where rest is "" or starts with '-'.
func splitID(name, prefix string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(rest) < idHexLen {
		return "", false
	}
	for _, c := range rest[:idHexLen] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	tail := rest[idHexLen:]
	if tail != "" && tail[0] != '-' {
		return "", false
	}
	return name[:len(prefix)+idHexLen], true
}

// isChassisNS reports whether ns is one of the namespaces a chassis named
// id creates: "<id>-bp" or "<id>-b<digits>".
func isChassisNS(ns, id string) bool {
	rest, ok := strings.CutPrefix(ns, id+"-b")
	if !ok {
		return false
	}
	if rest == "p" {
		return true
	}
	if rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// reserveID picks a fresh chassis id for prefix and creates its marker
// file. Uniqueness across processes comes from O_EXCL on the marker, not
// from the randomness, which only makes collisions rare.
func reserveID(prefix string) (string, error) {
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return "", fmt.Errorf("rig: create marker directory %s: %w", markerDir, err)
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("rig: read own start time: %w", err)
	}
	content := formatMarker(marker{pid: os.Getpid(), start: start})
	var buf [2]byte
	for range 256 {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("rig: random chassis id: %w", err)
		}
		id := prefix + hex.EncodeToString(buf[:])
		if leftovers, _ := namespacesOf(id); len(leftovers) > 0 {
			continue // a crashed run's namespaces; SweepStale will remove them
		}
		f, err := os.OpenFile(filepath.Join(markerDir, id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("rig: create marker for chassis %s: %w", id, err)
		}
		_, werr := f.Write(content)
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(f.Name())
			return "", fmt.Errorf("rig: write marker for chassis %s: %w", id, err)
		}
		return id, nil
	}
	return "", fmt.Errorf("%w: prefix %q", ErrNoFreeID, prefix)
}

// releaseID removes the marker of a chassis whose namespaces are gone.
func releaseID(id string) error {
	err := os.Remove(filepath.Join(markerDir, id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rig: remove marker of chassis %s: %w", id, err)
	}
	return nil
}

// listNamespaces returns the names in /run/netns.
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rig: list %s: %w", netnsDir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// namespacesOf returns the namespaces that belong to chassis id.
func namespacesOf(id string) ([]string, error) {
	all, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range all {
		if isChassisNS(ns, id) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// markerLive reports whether chassis id has a marker naming a live process.
func markerLive(id string) bool {
	path := filepath.Join(markerDir, id)
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	m, err := parseMarker(b)
	if err != nil {
		fi, serr := os.Stat(path)
		return serr == nil && time.Since(fi.ModTime()) < markerGrace
	}
	return m.alive()
}

// SweepStale deletes what crashed runs left behind for chassis ids with
// the given prefix: every namespace "<prefix><4 hex>-bp" or
// "<prefix><4 hex>-b<n>" whose marker in /run/boardha-rig is missing or
// names a dead process, and such markers. Chassis of live processes are
// never touched. It returns the namespaces it deleted. New calls it for its
// prefix; TestMain may call it too.
func SweepStale(prefix string) ([]string, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	ipPath, err := findIP()
	if err != nil {
		return nil, err
	}
	// Namespaces are listed before markers are read: a live chassis creates
	// its marker before its first namespace, so any namespace seen here
	// already has its marker on disk when we look for it below.
	all, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	var (
		deleted []string
		errs    []error
		verdict = map[string]bool{} // id -> stale
	)
	for _, ns := range all {
		id, ok := splitID(ns, prefix)
		if !ok || !isChassisNS(ns, id) {
			continue
		}
		stale, seen := verdict[id]
		if !seen {
			stale = !markerLive(id)
			verdict[id] = stale
		}
		if !stale {
			continue
		}
		if err := deleteNS(ipPath, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, ns)
	}
	ents, err := os.ReadDir(markerDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("rig: list %s: %w", markerDir, err))
	}
	for _, e := range ents {
		id, ok := splitID(e.Name(), prefix)
		if !ok || id != e.Name() || markerLive(id) {
			continue
		}
		if left, _ := namespacesOf(id); len(left) > 0 {
			continue // deletion failed above; keep the marker to retry
		}
		if err := releaseID(id); err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}
