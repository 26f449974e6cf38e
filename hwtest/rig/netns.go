package rig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/run/netns"

// ipTimeout bounds one run of the ip binary so that a wedged kernel or
// binary fails a test instead of hanging it.
const ipTimeout = 20 * time.Second

// nsPath returns the file that names namespace ns.
func nsPath(ns string) string { return filepath.Join(netnsDir, ns) }

// findIP locates the ip binary of iproute2. PATH first; then the usual sbin
// directories, because a non-login root shell or CI environment may lack
// them in PATH.
func findIP() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoIP
}

// runIP runs the ip binary with args, feeding stdin when it is not empty
// (for -batch -), and returns an error carrying ip's own message.
func runIP(ipPath string, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ipPath, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := string(bytes.TrimSpace(out))
		if stdin != "" {
			msg += " (batch: " + strings.ReplaceAll(strings.TrimSpace(stdin), "\n", "; ") + ")"
		}
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// doResult carries the outcome of fn from the namespace goroutine back to
// the caller, including a panic value or a runtime.Goexit (t.FailNow) so
// that the caller can reproduce it on its own goroutine.
type doResult struct {
	err      error
	panicked bool
	panicVal any
	exited   bool
}

// doInNS runs fn on a fresh goroutine locked to its OS thread, with that
// thread switched into the namespace named by path. The thread never runs
// other goroutines while in the wrong namespace: it is switched back before
// it is unlocked, and if switching back fails the goroutine exits still
// locked, which makes the Go runtime terminate the thread.
func doInNS(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("rig: open network namespace %s: %w (was the chassis closed?)", path, err)
	}
	defer target.Close()

	done := make(chan doResult, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- doResult{err: fmt.Errorf("rig: open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- doResult{err: fmt.Errorf("rig: enter network namespace %s: %w", path, err)}
			return
		}
		res := doResult{exited: true}
		defer func() {
			if res.exited {
				// Either fn panicked (recover below fills in the value) or
				// it called runtime.Goexit.
				if v := recover(); v != nil {
					res.exited, res.panicked, res.panicVal = false, true, v
				}
			}
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				// Leave the thread locked: the runtime kills it when this
				// goroutine ends, so no goroutine ever runs in the wrong
				// namespace.
				if res.err == nil && !res.panicked && !res.exited {
					res.err = fmt.Errorf("rig: return from network namespace %s: %w", path, err)
				}
				done <- res
				return
			}
			runtime.UnlockOSThread()
			done <- res
		}()
		res.err = fn()
		res.exited = false
	}()
	res := <-done
	switch {
	case res.panicked:
		panic(res.panicVal)
	case res.exited:
		runtime.Goexit()
	}
	return res.err
}

// nsExists reports whether a named namespace file is present.
func nsExists(ns string) bool {
	_, err := os.Stat(nsPath(ns))
	return err == nil
}

// deleteNS removes a named namespace. A namespace already gone is not an
// error: Close and SweepStale may race with each other.
func deleteNS(ipPath, ns string) error {
	if !nsExists(ns) {
		return nil
	}
	err := runIP(ipPath, "", "netns", "delete", ns)
	if err != nil && !nsExists(ns) {
		return nil
	}
	return err
}

// writeSysctl writes a value to a /proc/sys file of the current thread's
// network namespace. A missing file (IPv6 compiled out) or a read-only
// /proc/sys (some containers) is not an error: the settings written here
// only reduce noise.
func writeSysctl(name, value string) error {
	err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrPermission) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rig: sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// quietNamespace sets the sysctls that keep a fresh namespace from sending
// frames nobody asked for. It must run inside the namespace (doInNS).
func quietNamespace() error {
	for _, s := range [][2]string{
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
	} {
		if err := writeSysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}
