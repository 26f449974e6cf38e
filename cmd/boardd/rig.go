package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/rig"
)

// rigBoardArgs are the embedded defaults of every rig board: a small pool
// and log so a demo internal init and log reclamation happen within seconds.
func rigBoardArgs() []string {
	return []string{"-pool-size", "64M", "-log-size", "8M", "-checkpoint-kib", "256", "-log-level", "warn"}
}

// chassisRig is a whole chassis of `boardd run` processes.
type chassisRig struct {
	out     io.Writer
	self    string // this executable
	dir     string // sockets and logs
	group   string
	raw     bool
	chassis *rig.Chassis
	boards  []*rigBoard

	mu      sync.Mutex
	notes   []string // recent actions, newest last
	writes  atomic.Uint64
	fails   atomic.Uint64
	okTimes []time.Time // recent successful writes, guarded by mu
}

type rigBoard struct {
	site   uint16
	sock   string
	shm    string
	args   []string
	ns     *rig.Board // raw mode
	logf   *os.File
	cmd    *exec.Cmd
	exited chan struct{}
	// state for display: "up", "killed", "partitioned", "frozen"
	state string
}

func cmdRig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("boardd rig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("boards", 3, "boards in the chassis (2..16)")
	script := fs.Bool("script", false, "run the scripted demo and exit (default when stdin is not a terminal)")
	udp := fs.Bool("udp", false, "use loopback UDP processes even as root")
	rate := fs.Int("rate", 500, "steady writes per second")
	fill := fs.Int("fill", 20000, "keys of 512 bytes written before the demo, so internal init has pages to copy")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *n < 2 || *n > 16 {
		return usagef("boardd rig: -boards %d; allowed 2..16", *n)
	}
	if *rate < 1 || *rate > 20000 {
		return usagef("boardd rig: -rate %d; allowed 1..20000", *rate)
	}
	if *fill < 0 || *fill > 1000000 {
		return usagef("boardd rig: -fill %d; allowed 0..1000000", *fill)
	}
	interactive := !*script && isTerminal(os.Stdin)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	r := &chassisRig{out: stdout, group: "rig"}
	defer r.cleanup()
	if err := r.setup(*n, !*udp); err != nil {
		return err
	}
	for _, b := range r.boards {
		if err := r.startBoard(b); err != nil {
			return err
		}
	}
	mode := "loopback UDP processes (not root, or -udp)"
	if r.raw {
		mode = fmt.Sprintf("raw Ethernet in network namespaces (chassis %s)", r.chassis.ID())
	}
	fmt.Fprintf(stdout, "boardd rig: %d boards, %s; logs in %s\n", *n, mode, r.dir)
	master, err := r.waitMaster(ctx, 0, 15*time.Second)
	if err != nil {
		return err
	}
	r.note("board %d elected master", master)
	if *fill > 0 {
		t0 := time.Now()
		if err := r.prefill(ctx, *fill); err != nil {
			return err
		}
		r.note("wrote %d keys of 512 B in %v", *fill, time.Since(t0).Round(time.Millisecond))
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		steadyWriter(wctx, r.liveSocks, "load", *rate, 1000, func(ok bool) {
			if ok {
				r.writes.Add(1)
				r.mu.Lock()
				if len(r.okTimes) >= 100000 {
					r.okTimes = append(r.okTimes[:0], r.okTimes[50000:]...)
				}
				r.okTimes = append(r.okTimes, time.Now())
				r.mu.Unlock()
			} else {
				r.fails.Add(1)
			}
		})
	}()
	defer func() { wcancel(); wg.Wait() }()
	if interactive {
		return r.interactive(ctx)
	}
	return r.scripted(ctx)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (r *chassisRig) note(format string, args ...any) {
	s := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.notes = append(r.notes, s)
	if len(r.notes) > 12 {
		r.notes = r.notes[len(r.notes)-12:]
	}
	r.mu.Unlock()
}

func (r *chassisRig) setup(n int, wantRaw bool) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("boardd rig: finding this executable: %w", err)
	}
	r.self = self
	if r.dir, err = os.MkdirTemp("", "boardd-rig-"); err != nil {
		return fmt.Errorf("boardd rig: %w", err)
	}
	if wantRaw && os.Geteuid() == 0 {
		c, err := rig.New(rig.Options{Boards: n})
		if err == nil {
			r.chassis, r.raw = c, true
		} else {
			fmt.Fprintf(r.out, "boardd rig: network namespaces unavailable (%v); using loopback UDP\n", err)
		}
	}
	peers := make([]string, n)
	if !r.raw {
		ports, err := freeUDPPorts(n)
		if err != nil {
			return err
		}
		for i := range n {
			peers[i] = fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[i])
		}
	} else {
		for i := range n {
			peers[i] = strconv.Itoa(i + 1)
		}
	}
	for i := range n {
		site := uint16(i + 1)
		b := &rigBoard{site: site, state: "down",
			sock: filepath.Join(r.dir, fmt.Sprintf("b%d.sock", site)),
			shm:  fmt.Sprintf("boardha-rig%d-%d", os.Getpid(), site)}
		b.args = append([]string{"run", "-site", strconv.Itoa(int(site)), "-group", r.group,
			"-peers", strings.Join(peers, ","), "-sock", b.sock, "-shm", b.shm}, rigBoardArgs()...)
		if r.raw {
			b.ns = r.chassis.Boards[i]
			b.args = append(b.args, "-transport", "raw", "-iface", b.ns.Iface)
		}
		r.boards = append(r.boards, b)
	}
	return nil
}

// freeUDPPorts finds n loopback UDP ports nobody uses right now.
func freeUDPPorts(n int) ([]int, error) {
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var ports []int
	for range n {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("boardd rig: finding a free UDP port: %w", err)
		}
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

func (r *chassisRig) startBoard(b *rigBoard) error {
	var err error
	if b.logf == nil {
		if b.logf, err = os.OpenFile(filepath.Join(r.dir, fmt.Sprintf("b%d.log", b.site)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return fmt.Errorf("boardd rig: %w", err)
		}
	}
	if b.ns != nil {
		b.cmd = b.ns.Command(context.Background(), r.self, b.args...)
	} else {
		b.cmd = exec.Command(r.self, b.args...)
	}
	b.cmd.Stdout, b.cmd.Stderr = b.logf, b.logf
	// Children die with the rig even if it is killed outright.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("boardd rig: starting board %d: %w", b.site, err)
	}
	b.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(b.cmd, b.exited)
	b.state = "up"
	return nil
}

// kill SIGKILLs the board's process and waits for it.
func (r *chassisRig) kill(b *rigBoard) {
	if b.cmd == nil || b.state == "killed" {
		return
	}
	if b.state == "frozen" {
		_ = b.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
	b.state = "killed"
}

// reboot restarts a board with empty memory: its region is removed first.
func (r *chassisRig) reboot(b *rigBoard) error {
	r.kill(b)
	if b.ns != nil && b.state == "partitioned" {
		_ = b.ns.LinkUp()
	}
	_ = os.Remove(filepath.Join("/dev/shm", b.shm))
	_ = os.Remove(b.sock)
	return r.startBoard(b)
}

// partition cuts a board off (raw: link down; udp: the process is frozen
// with SIGSTOP, which the others cannot tell from a cut link) or heals it.
func (r *chassisRig) partition(b *rigBoard, cut bool) error {
	if b.state == "killed" {
		return fmt.Errorf("board %d is not running", b.site)
	}
	switch {
	case b.ns != nil && cut:
		if err := b.ns.LinkDown(); err != nil {
			return err
		}
		b.state = "partitioned"
	case b.ns != nil:
		if err := b.ns.LinkUp(); err != nil {
			return err
		}
		b.state = "up"
	case cut:
		if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return err
		}
		b.state = "frozen"
	default:
		if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			return err
		}
		b.state = "up"
	}
	return nil
}

func (r *chassisRig) cleanup() {
	for _, b := range r.boards {
		r.kill(b)
		if b.logf != nil {
			b.logf.Close()
		}
		_ = os.Remove(filepath.Join("/dev/shm", b.shm))
	}
	if r.chassis != nil {
		if err := r.chassis.Close(); err != nil {
			fmt.Fprintf(r.out, "boardd rig: removing the namespaces: %v\n", err)
		}
	}
	if r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

// liveSocks lists the sockets of running, reachable boards.
func (r *chassisRig) liveSocks() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, b := range r.boards {
		if b.state == "up" {
			s = append(s, b.sock)
		}
	}
	return s
}

func (r *chassisRig) stat(ctx context.Context, b *rigBoard) (board.Stat, error) {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	c, err := dial(ctx, b.sock)
	if err != nil {
		return board.Stat{}, err
	}
	defer c.Close()
	resp, err := c.call(ctx, request{Op: "stat", NoHash: true})
	if err != nil || resp.Stat == nil {
		return board.Stat{}, fmt.Errorf("stat of board %d: %v", b.site, err)
	}
	return *resp.Stat, nil
}

// stats polls every running board in parallel.
func (r *chassisRig) stats(ctx context.Context) map[uint16]board.Stat {
	var mu sync.Mutex
	out := map[uint16]board.Stat{}
	var wg sync.WaitGroup
	for _, b := range r.boards {
		if b.state != "up" && b.state != "partitioned" {
			continue
		}
		wg.Add(1)
		go func(b *rigBoard) {
			defer wg.Done()
			if st, err := r.stat(ctx, b); err == nil {
				mu.Lock()
				out[b.site] = st
				mu.Unlock()
			}
		}(b)
	}
	wg.Wait()
	return out
}

// waitMaster waits until a running board other than not says it is master
// and the boards that are up agree.
func (r *chassisRig) waitMaster(ctx context.Context, not uint16, limit time.Duration) (uint16, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		sts := r.stats(ctx)
		for site, st := range sts {
			if st.Role == board.RoleMaster && site != not {
				return site, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return 0, &remoteError{codeUnavail, fmt.Sprintf("boardd rig: no master within %v; see the board logs in %s", limit, r.dir)}
}

func (r *chassisRig) boardBySite(s uint16) *rigBoard {
	for _, b := range r.boards {
		if b.site == s {
			return b
		}
	}
	return nil
}

// prefill writes n keys of 512 bytes through the master with many
// connections at once, so group commit batches them.
func (r *chassisRig) prefill(ctx context.Context, n int) error {
	const conns = 16
	val := []byte(strings.Repeat("v", 512))
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *client
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				for attempt := 0; ; attempt++ {
					if c == nil {
						socks := r.liveSocks()
						var err error
						if c, err = dial(ctx, socks[int(i)%len(socks)]); err != nil {
							c = nil
						}
					}
					if c != nil {
						cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
						_, err := c.call(cctx, request{Op: "put", DB: "fill", Key: []byte(fmt.Sprintf("fill/%08d", i)), Value: val})
						cancel()
						if err == nil {
							break
						}
						c.Close()
						c = nil
						if attempt == 20 {
							once.Do(func() { firstErr = fmt.Errorf("boardd rig: prefill: %w", err) })
							return
						}
					}
					time.Sleep(10 * time.Millisecond) // back off before retrying a failed put
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// render draws the status table.
func (r *chassisRig) render(w io.Writer, sts map[uint16]board.Stat, clear bool) {
	var sb strings.Builder
	if clear {
		sb.WriteString("\x1b[H\x1b[2J")
	}
	mode := "udp/loopback"
	if r.raw {
		mode = "raw/netns " + r.chassis.ID()
	}
	fmt.Fprintf(&sb, "boardha chassis (%s)   writes ok %d  failed %d   %s\n\n", mode, r.writes.Load(), r.fails.Load(), time.Now().Format("15:04:05"))
	fmt.Fprintf(&sb, "%-5s %-11s %-7s %-6s %-5s %-12s %-10s %-8s %-9s %-22s %s\n", "SITE", "STATE", "ROLE", "MASTER", "GEN", "LSN", "LAG", "LEASE", "ELECTS", "INIT", "FAILOVER")
	for _, b := range r.boards {
		st, ok := sts[b.site]
		if !ok {
			fmt.Fprintf(&sb, "%-5d %-11s %s\n", b.site, b.state, "-")
			continue
		}
		var lag uint64
		if m, ok := sts[st.Master]; ok && m.LSN > st.LSN {
			lag = m.LSN - st.LSN
		}
		initS := "-"
		if st.Init.Active {
			initS = fmt.Sprintf("%.0f%% %.0f pg/s", st.Init.Percent, st.Init.PagesPerSec)
		} else if st.Init.Count > 0 {
			initS = fmt.Sprintf("done %v %.0f pg/s", st.Init.LastDuration.Round(time.Millisecond), st.Init.PagesPerSec)
		}
		lease := "off"
		if st.Lease.Enabled {
			lease = map[bool]string{true: "held", false: "-"}[st.Lease.Valid]
		}
		fo := "-"
		if st.Election.LastFailover > 0 {
			fo = st.Election.LastFailover.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(&sb, "%-5d %-11s %-7s %-6d %-5d %-12d %-10d %-8s %-9d %-22s %s\n", b.site, b.state, st.Role, st.Master, st.Gen, st.LSN, lag, lease, st.Election.Elections, initS, fo)
	}
	sb.WriteString("\n")
	r.mu.Lock()
	for _, n := range r.notes {
		sb.WriteString("  " + n + "\n")
	}
	r.mu.Unlock()
	if clear {
		sb.WriteString("\nkeys: k kill master   r reboot a board (empty memory)   p partition/heal a board   q quit\n")
	}
	io.WriteString(w, sb.String())
}

func (r *chassisRig) currentMaster(sts map[uint16]board.Stat) uint16 {
	for site, st := range sts {
		if st.Role == board.RoleMaster {
			return site
		}
	}
	return 0
}

// interactive shows the live table and acts on keys.
func (r *chassisRig) interactive(ctx context.Context) error {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return r.scripted(ctx)
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return r.scripted(ctx)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	keys := make(chan byte, 8)
	go func() {
		var b [1]byte
		for {
			if n, err := os.Stdin.Read(b[:]); err != nil || n == 0 {
				close(keys)
				return
			}
			keys <- b[0]
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var cut *rigBoard
	rebootNext := 0
	for {
		sts := r.stats(ctx)
		r.render(r.out, sts, true)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case k, ok := <-keys:
			if !ok || k == 'q' {
				return nil
			}
			switch k {
			case 'k':
				m := r.currentMaster(sts)
				if b := r.boardBySite(m); b != nil {
					r.kill(b)
					r.note("killed master %d (SIGKILL)", m)
				} else {
					r.note("no master to kill")
				}
			case 'r':
				b := r.boards[rebootNext%len(r.boards)]
				for i := 0; i < len(r.boards) && b.site == r.currentMaster(sts) && b.state == "up"; i++ {
					rebootNext++
					b = r.boards[rebootNext%len(r.boards)]
				}
				rebootNext++
				if err := r.reboot(b); err != nil {
					r.note("reboot board %d: %v", b.site, err)
				} else {
					r.note("rebooted board %d with empty memory", b.site)
				}
			case 'p':
				if cut != nil {
					if err := r.partition(cut, false); err != nil {
						r.note("heal board %d: %v", cut.site, err)
					} else {
						r.note("healed board %d", cut.site)
					}
					cut = nil
					break
				}
				m := r.boardBySite(r.currentMaster(sts))
				if m == nil {
					r.note("no master to partition")
					break
				}
				if err := r.partition(m, true); err != nil {
					r.note("partition board %d: %v", m.site, err)
					break
				}
				cut = m
				r.note("partitioned master %d from the others", m.site)
			}
		}
	}
}

// scripted runs the demo: failover, internal init, partition and heal.
func (r *chassisRig) scripted(ctx context.Context) error {
	step := func(format string, args ...any) {
		r.note(format, args...)
		fmt.Fprintf(r.out, "== "+format+"\n", args...)
	}
	show := func() { r.render(r.out, r.stats(ctx), false) }
	pause := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := pause(time.Second); err != nil {
		return nil
	}
	show()

	// 1. Failover.
	sts := r.stats(ctx)
	m := r.boardBySite(r.currentMaster(sts))
	if m == nil {
		return &remoteError{codeUnavail, "boardd rig: no master before the failover step"}
	}
	step("killing master %d with SIGKILL", m.site)
	t0 := time.Now()
	r.kill(m)
	nm, err := r.waitMaster(ctx, m.site, 10*time.Second)
	if err != nil {
		return err
	}
	elected := time.Since(t0)
	resumed := r.writeGap(ctx, t0, 10*time.Second)
	sts = r.stats(ctx)
	step("board %d is master %v after the kill (its own measure from the old master's last message: %v); longest write gap %v",
		nm, elected.Round(100*time.Microsecond), sts[nm].Election.LastFailover.Round(100*time.Microsecond), resumed.Round(100*time.Microsecond))
	failover := elected

	// 2. Reboot the dead board with empty memory: internal init.
	if err := pause(500 * time.Millisecond); err != nil {
		return nil
	}
	step("rebooting board %d with empty memory", m.site)
	if err := r.reboot(m); err != nil {
		return err
	}
	var initSt board.Stat
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := r.stat(ctx, m)
		// Caught up: a replica of a known master, not locked out, not
		// initialising, with data (by internal init or from the log).
		if err == nil && st.Role == board.RoleClient && st.Master != 0 && !st.LockedOut && !st.Init.Active && st.LSN > 0 {
			initSt = st
			break
		}
		if time.Now().After(deadline) {
			return &remoteError{codeUnavail, fmt.Sprintf("boardd rig: board %d did not catch up within 30s; see %s", m.site, r.dir)}
		}
		if err := pause(5 * time.Millisecond); err != nil {
			return nil
		}
	}
	initRate := ""
	if initSt.Init.Count > 0 {
		mb := float64(initSt.Init.PagesTotal) * float64(initSt.Pool.PageSize) / (1 << 20)
		secs := initSt.Init.LastDuration.Seconds()
		initRate = fmt.Sprintf("%d pages (%.1f MiB) in %v: %.0f pages/s, %.1f MiB/s", initSt.Init.PagesTotal, mb,
			initSt.Init.LastDuration.Round(time.Millisecond), initSt.Init.PagesPerSec, mb/max(secs, 1e-9))
		step("board %d internally initialised: %s", m.site, initRate)
	} else {
		initRate = "no internal init (caught up from the master's log)"
		step("board %d caught up from the log (the master still held it all): no internal init", m.site)
	}
	show()

	// 3. Partition the master, watch the majority elect, heal.
	if err := pause(500 * time.Millisecond); err != nil {
		return nil
	}
	sts = r.stats(ctx)
	pm := r.boardBySite(r.currentMaster(sts))
	if pm == nil {
		return &remoteError{codeUnavail, "boardd rig: no master before the partition step"}
	}
	how := "link down"
	if !r.raw {
		how = "SIGSTOP: frozen, as good as cut off"
	}
	step("partitioning master %d (%s)", pm.site, how)
	t1 := time.Now()
	if err := r.partition(pm, true); err != nil {
		return err
	}
	pm2, err := r.waitMaster(ctx, pm.site, 10*time.Second)
	if err != nil {
		_ = r.partition(pm, false)
		return err
	}
	step("majority elected board %d in %v", pm2, time.Since(t1).Round(100*time.Microsecond))
	if err := pause(time.Second); err != nil {
		return nil
	}
	step("healing board %d", pm.site)
	if err := r.partition(pm, false); err != nil {
		return err
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		sts = r.stats(ctx)
		st, ok := sts[pm.site]
		if ok && st.Role == board.RoleClient && st.Master == pm2 && !st.LockedOut {
			break
		}
		if time.Now().After(deadline) {
			return &remoteError{codeUnavail, fmt.Sprintf("boardd rig: board %d did not rejoin within 15s; see %s", pm.site, r.dir)}
		}
		if err := pause(10 * time.Millisecond); err != nil {
			return nil
		}
	}
	step("board %d rejoined as a replica of %d", pm.site, pm2)
	if err := pause(500 * time.Millisecond); err != nil {
		return nil
	}
	show()
	fmt.Fprintf(r.out, "\nsummary: failover (kill -9 of the master to a new master) %v; longest write gap %v; internal init: %s; writes ok %d, failed %d\n",
		failover.Round(100*time.Microsecond), resumed.Round(100*time.Microsecond), initRate, r.writes.Load(), r.fails.Load())
	return nil
}

// writeGap returns the longest time without a successful write in the
// second after t0 (the client-visible outage of a failover: writes answered
// by the old master just before it died come first), once writes have been
// succeeding again for a while.
func (r *chassisRig) writeGap(ctx context.Context, t0 time.Time, limit time.Duration) time.Duration {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.mu.Lock()
		var gap time.Duration
		after := 0
		for i := 1; i < len(r.okTimes); i++ {
			a, b := r.okTimes[i-1], r.okTimes[i]
			if b.Before(t0) || a.After(t0.Add(time.Second)) {
				continue
			}
			gap = max(gap, b.Sub(a))
			after++
		}
		done := after >= 10 && r.okTimes[len(r.okTimes)-1].After(t0.Add(time.Second))
		r.mu.Unlock()
		if done {
			return gap
		}
		time.Sleep(5 * time.Millisecond) // polling the writer's record with a deadline
	}
	return -1
}
