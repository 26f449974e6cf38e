package rig

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
)

// RequireRoot skips the test, with the reason, unless this process can
// create network namespaces: effective uid 0 with CAP_SYS_ADMIN and
// CAP_NET_ADMIN, and a working `ip netns` from iproute2.
func RequireRoot(t testing.TB) {
	t.Helper()
	if reason, _ := missingPrivilege(); reason != "" {
		t.Skip("hwtest/rig: " + reason)
	}
}

// Available reports whether chassis can be built here: nil, or an error
// wrapping ErrNoPrivilege or ErrNoIP that says what is missing. Programs
// use it to fall back to something that needs no namespaces.
func Available() error {
	_, err := missingPrivilege()
	return err
}

// missingPrivilege returns why namespaces cannot be created here, as a
// skip reason and as an error, or "" and nil.
func missingPrivilege() (string, error) {
	const needRoot = "needs root (CAP_SYS_ADMIN) to create network namespaces; run as root, as CI does"
	if os.Geteuid() != 0 {
		return needRoot, fmt.Errorf("%w: effective uid %d", ErrNoPrivilege, os.Geteuid())
	}
	if capEff, ok := effectiveCaps(); ok {
		if capEff&(1<<capSysAdmin) == 0 || capEff&(1<<capNetAdmin) == 0 {
			return needRoot + " (running as uid 0 but without CAP_SYS_ADMIN/CAP_NET_ADMIN)",
				fmt.Errorf("%w: uid 0 but effective capabilities %#x lack CAP_SYS_ADMIN or CAP_NET_ADMIN", ErrNoPrivilege, capEff)
		}
	}
	ipPath, err := findIP()
	if err != nil {
		return "needs the ip binary of iproute2 (apt-get install iproute2) to create network namespaces", err
	}
	if err := runIP(ipPath, "", "netns", "list"); err != nil {
		return "`ip netns` is unavailable here: " + err.Error(), fmt.Errorf("%w: %w", ErrNoPrivilege, err)
	}
	return "", nil
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// NewForTest calls RequireRoot, creates a chassis and registers its Close
// with t.Cleanup, so the namespaces go away however the test ends. A
// creation or cleanup error fails the test.
func NewForTest(t testing.TB, opt Options) *Chassis {
	t.Helper()
	RequireRoot(t)
	c, err := New(opt)
	if err != nil {
		t.Fatalf("hwtest/rig: create chassis: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("hwtest/rig: close chassis %s: %v", c.ID(), err)
		}
	})
	return c
}
