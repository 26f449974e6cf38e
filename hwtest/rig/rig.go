package rig

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Errors returned by the rig. Each is wrapped with the names involved.
var (
	// ErrNoIP: the ip binary is needed to create namespaces and links.
	ErrNoIP = errors.New("rig: the ip binary of iproute2 was not found in PATH or /usr/sbin, /sbin; install iproute2")
	// ErrNoPrivilege: namespaces need root with CAP_SYS_ADMIN and CAP_NET_ADMIN.
	ErrNoPrivilege = errors.New("rig: creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); run as root, as CI does")
	// ErrBadOptions: Options out of range; the message says which field.
	ErrBadOptions = errors.New("rig: invalid options; fix the named field")
	// ErrClosed: the chassis (or the board's part of it) was closed or removed.
	ErrClosed = errors.New("rig: chassis or board already closed; create a new chassis")
	// ErrNoFreeID: every id tried for the prefix was taken.
	ErrNoFreeID = errors.New("rig: no free chassis id; close chassis, run SweepStale, or use another prefix")
	// ErrBadMarker: a marker file in /run/boardha-rig is not one the rig wrote.
	ErrBadMarker = errors.New("rig: malformed chassis marker file; delete it if no rig runs")
	// ErrUnknownBoard: the board does not belong to this chassis.
	ErrUnknownBoard = errors.New("rig: board is not part of this chassis")
)

// Limits.
const (
	// DefaultMTU is the MTU of every link when Options.MTU is 0.
	DefaultMTU = 1500
	// MaxMTU is the largest MTU accepted: enough for jumbo frames.
	MaxMTU = 9000
	// minMTU is the IPv4 minimum.
	minMTU = 576
	// MaxBoards bounds the sites so that 10.208.<c>.<site>/24 stays a host
	// address and "<id>-v<site>" fits IFNAMSIZ.
	MaxBoards = 250
	// DefaultPrefix starts every chassis id when Options.Prefix is empty.
	DefaultPrefix = "bh"
	// BoardIface is the name of the backplane link inside every board namespace.
	BoardIface = "bp0"
)

// Options describe a chassis.
type Options struct {
	// Boards is the number of boards created by New (0 is allowed: add
	// them with AddBoard). At most MaxBoards.
	Boards int
	// Prefix starts every namespace and link name (default "bh"): a
	// lowercase letter then up to 4 lowercase letters or digits. Four hex
	// digits unique on this machine are appended to form the chassis id.
	Prefix string
	// MTU of the bridge and every veth (default 1500, at most 9000).
	MTU int
}

// Chassis is a backplane namespace with a bridge and the boards plugged
// into it. Methods are safe for concurrent use.
type Chassis struct {
	// Boards in creation order. Do not modify it. AddBoard and RemoveBoard
	// replace the slice; a goroutine other than the one calling them uses
	// BoardList instead.
	Boards []*Board
	// BackplaneNS is the namespace holding the bridge and the bridge-side veths.
	BackplaneNS string
	// Bridge is the bridge's name inside BackplaneNS.
	Bridge string

	id     string
	subnet byte // third octet of the boards' addresses
	mtu    int
	ipPath string

	// opMu serialises AddBoard, RemoveBoard and Close, which create and
	// delete namespaces, so that Close never races a half-built board.
	opMu sync.Mutex

	mu        sync.Mutex // guards the fields below and Boards
	closed    bool
	nextIndex int
	// partitionGroups is the number of group bridges Partition made.
	partitionGroups int
	injectors       map[attachment]struct{}
}

// attachment is something attached to a board's links (an Injector) that
// Close and RemoveBoard must detach.
type attachment interface {
	Close() error
	attachedTo() *Board
}

// Board is one line card: a namespace with the bp0 link into the backplane.
type Board struct {
	// Index is the board's position at creation, counted from 0 over the
	// chassis's life (it equals the position in Chassis.Boards until a
	// board is removed).
	Index int
	// Site is Index+1: the replication site id of the board.
	Site uint16
	// NS is the board's named network namespace.
	NS string
	// Iface is the backplane link inside NS: always "bp0".
	Iface string
	// MAC is bp0's address, 02:b5:<chassis id>:<site>.
	MAC net.HardwareAddr
	// IP is bp0's IPv4 address, 10.208.<c>.<site>, prefix length 24.
	IP netip.Addr

	chassis    *Chassis
	bridgeside string
}

// New creates a chassis. On error nothing it created is left behind. The
// caller must Close the chassis; tests use NewForTest.
func New(opt Options) (*Chassis, error) {
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	if opt.MTU == 0 {
		opt.MTU = DefaultMTU
	}
	if err := validPrefix(opt.Prefix); err != nil {
		return nil, err
	}
	if opt.MTU < minMTU || opt.MTU > MaxMTU {
		return nil, fmt.Errorf("%w: MTU %d outside %d..%d", ErrBadOptions, opt.MTU, minMTU, MaxMTU)
	}
	if opt.Boards < 0 || opt.Boards > MaxBoards {
		return nil, fmt.Errorf("%w: Boards %d outside 0..%d", ErrBadOptions, opt.Boards, MaxBoards)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	ipPath, err := findIP()
	if err != nil {
		return nil, err
	}
	// A failed sweep must not stop this run: its own names never collide
	// with leftovers (reserveID skips ids that still have namespaces).
	_, _ = SweepStale(opt.Prefix)

	id, err := reserveID(opt.Prefix)
	if err != nil {
		return nil, err
	}
	sub, _ := strconv.ParseUint(id[len(opt.Prefix):], 16, 16)
	c := &Chassis{
		BackplaneNS: id + "-bp",
		Bridge:      id + "-br",
		id:          id,
		subnet:      byte(sub),
		mtu:         opt.MTU,
		ipPath:      ipPath,
		injectors:   map[attachment]struct{}{},
	}
	if err := c.build(opt.Boards); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// build creates the backplane and the first n boards.
func (c *Chassis) build(n int) error {
	if err := c.addNS(c.BackplaneNS); err != nil {
		return err
	}
	if err := runIP(c.ipPath, bridgeSpec(c.Bridge, c.mtu), "-n", c.BackplaneNS, "-batch", "-"); err != nil {
		return fmt.Errorf("rig: create bridge %s in %s: %w", c.Bridge, c.BackplaneNS, err)
	}
	boards := make([]*Board, 0, n)
	for range n {
		b := c.newBoard()
		boards = append(boards, b)
		if err := c.addNS(b.NS); err != nil {
			return err
		}
	}
	// One ip run for all bridge-side work, then one per board: process
	// start-up dominates the cost of a rig.
	var bp strings.Builder
	for _, b := range boards {
		bp.WriteString(c.vethBatch(b))
	}
	if n > 0 {
		if err := runIP(c.ipPath, bp.String(), "-n", c.BackplaneNS, "-batch", "-"); err != nil {
			return fmt.Errorf("rig: create veths in %s: %w", c.BackplaneNS, err)
		}
	}
	for _, b := range boards {
		if err := c.configureBoard(b); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.Boards = boards
	c.mu.Unlock()
	return nil
}

// newBoard assigns the next index and the names of a board.
func (c *Chassis) newBoard() *Board {
	c.mu.Lock()
	idx := c.nextIndex
	c.nextIndex++
	c.mu.Unlock()
	site := uint16(idx + 1)
	var tok [2]byte
	v, _ := strconv.ParseUint(c.id[len(c.id)-idHexLen:], 16, 16)
	tok[0], tok[1] = byte(v>>8), byte(v)
	return &Board{
		Index:      idx,
		Site:       site,
		NS:         fmt.Sprintf("%s-b%d", c.id, site),
		Iface:      BoardIface,
		MAC:        net.HardwareAddr{0x02, 0xb5, tok[0], tok[1], byte(site >> 8), byte(site)},
		IP:         netip.AddrFrom4([4]byte{10, 208, c.subnet, byte(site)}),
		chassis:    c,
		bridgeside: fmt.Sprintf("%s-v%d", c.id, site),
	}
}

// addNS creates a named namespace and silences it.
func (c *Chassis) addNS(ns string) error {
	if err := runIP(c.ipPath, "", "netns", "add", ns); err != nil {
		return fmt.Errorf("rig: create namespace %s: %w", ns, err)
	}
	if err := doInNS(nsPath(ns), quietNamespace); err != nil {
		return fmt.Errorf("rig: configure namespace %s: %w", ns, err)
	}
	return nil
}

// vethBatch returns the ip batch lines, run in the backplane namespace,
// that create board b's veth pair and plug its bridge side into the bridge.
func (c *Chassis) vethBatch(b *Board) string {
	return fmt.Sprintf("link add %s mtu %d type veth peer name %s mtu %d address %s netns %s\n"+
		"link set %s master %s up\n",
		b.bridgeside, c.mtu, b.Iface, c.mtu, b.MAC, b.NS,
		b.bridgeside, c.Bridge)
}

// configureBoard brings up loopback and bp0 inside the board namespace.
func (c *Chassis) configureBoard(b *Board) error {
	batch := fmt.Sprintf("link set lo up\n"+
		"address add %s/24 dev %s\n"+
		"link set %s up\n"+
		"route add 224.0.0.0/4 dev %s\n",
		b.IP, b.Iface, b.Iface, b.Iface)
	if err := runIP(c.ipPath, batch, "-n", b.NS, "-batch", "-"); err != nil {
		return fmt.Errorf("rig: configure board %d in %s: %w", b.Site, b.NS, err)
	}
	return nil
}

// ID returns the chassis id, the common start of all its names.
func (c *Chassis) ID() string { return c.id }

// MTU returns the MTU of the chassis's links.
func (c *Chassis) MTU() int { return c.mtu }

// Board returns the board with the given site, or nil.
func (c *Chassis) Board(site uint16) *Board {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.Boards {
		if b.Site == site {
			return b
		}
	}
	return nil
}

// BoardList returns a snapshot of Boards, safe to call while other
// goroutines add or remove boards.
func (c *Chassis) BoardList() []*Board {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.Boards)
}

// Namespaces returns the names of every namespace the chassis currently owns.
func (c *Chassis) Namespaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{c.BackplaneNS}
	for _, b := range c.Boards {
		out = append(out, b.NS)
	}
	return out
}

// AddBoard plugs a new board into the backplane, with the next site.
func (c *Chassis) AddBoard() (*Board, error) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("add board to chassis %s: %w", c.id, ErrClosed)
	}
	b := c.newBoard()
	if int(b.Site) > MaxBoards {
		return nil, fmt.Errorf("%w: site %d exceeds MaxBoards %d", ErrBadOptions, b.Site, MaxBoards)
	}
	err := c.addNS(b.NS)
	if err == nil {
		err = runIP(c.ipPath, c.vethBatch(b), "-n", c.BackplaneNS, "-batch", "-")
	}
	if err == nil {
		err = c.configureBoard(b)
	}
	if err != nil {
		return nil, errors.Join(err, deleteNS(c.ipPath, b.NS))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Boards = append(slices.Clip(c.Boards), b)
	return b, nil
}

// RemoveBoard unplugs a board and deletes its namespace (and so its veth
// pair). Processes the caller started inside it keep running in a now
// unnamed namespace with no link.
func (c *Chassis) RemoveBoard(b *Board) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("remove board from chassis %s: %w", c.id, ErrClosed)
	}
	i := slices.Index(c.Boards, b)
	if i < 0 {
		c.mu.Unlock()
		return fmt.Errorf("remove board from chassis %s: %w", c.id, ErrUnknownBoard)
	}
	c.Boards = slices.Delete(slices.Clone(c.Boards), i, i+1)
	var mine []attachment
	for inj := range c.injectors {
		if inj.attachedTo() == b {
			mine = append(mine, inj)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, inj := range mine {
		errs = append(errs, inj.Close())
	}
	errs = append(errs, deleteNS(c.ipPath, b.NS))
	return errors.Join(errs...)
}

// Close detaches every injector and deletes every namespace of the chassis
// (with the links inside them) and its marker. It is idempotent; after an
// error it may be called again to retry.
func (c *Chassis) Close() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	c.closed = true
	boards := c.Boards
	injs := make([]attachment, 0, len(c.injectors))
	for inj := range c.injectors {
		injs = append(injs, inj)
	}
	c.mu.Unlock()

	var errs []error
	for _, inj := range injs {
		errs = append(errs, inj.Close())
	}
	// Namespaces are found by name as well as from Boards so that a board
	// half-created by a failed New or AddBoard is removed too.
	names := []string{c.BackplaneNS}
	for _, b := range boards {
		names = append(names, b.NS)
	}
	if found, err := namespacesOf(c.id); err == nil {
		names = append(names, found...)
	} else {
		errs = append(errs, err)
	}
	slices.Sort(names)
	for _, ns := range slices.Compact(names) {
		errs = append(errs, deleteNS(c.ipPath, ns))
	}
	if left, err := namespacesOf(c.id); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("rig: chassis %s: namespaces %v remain after close (%v); run SweepStale or ip netns delete", c.id, left, err))
	} else {
		errs = append(errs, releaseID(c.id))
	}
	return errors.Join(errs...)
}

// DoBackplane runs fn like Board.Do, inside the backplane namespace.
func (c *Chassis) DoBackplane(fn func() error) error {
	return doInNS(nsPath(c.BackplaneNS), fn)
}

// BackplaneCommand is Board.Command for the backplane namespace.
func (c *Chassis) BackplaneCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.ipPath, append([]string{"netns", "exec", c.BackplaneNS, name}, args...)...)
}

// Bridgeside returns the name, inside the backplane namespace, of the veth
// end plugged into the bridge.
func (b *Board) Bridgeside() string { return b.bridgeside }

// Chassis returns the chassis the board belongs to.
func (b *Board) Chassis() *Chassis { return b.chassis }

// IPPrefix returns bp0's address with its /24 prefix length.
func (b *Board) IPPrefix() netip.Prefix { return netip.PrefixFrom(b.IP, 24) }

// Do runs fn on a locked OS thread switched into the board's namespace and
// returns its error. Sockets fn opens stay in the namespace and may be used
// afterwards from any goroutine; goroutines fn starts do not run in the
// namespace. A panic or runtime.Goexit (t.FailNow) in fn is reproduced on
// the caller's goroutine.
func (b *Board) Do(fn func() error) error {
	return doInNS(nsPath(b.NS), fn)
}

// Command returns a command running `name args...` inside the board's
// namespace (through `ip netns exec`, which execs name, so the process's pid
// and signals are name's own). The caller owns the process: it must Wait
// for it or kill it; Close does not.
func (b *Board) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, b.chassis.ipPath, append([]string{"netns", "exec", b.NS, name}, args...)...)
}

// LinkDown cuts the board off the backplane by taking the bridge-side veth
// down: bp0 loses carrier, so the board neither sends nor receives. Raw
// frames sent meanwhile are lost. As after a real cable pull, the kernel
// flushes bp0's ARP entries, and a few IP datagrams sent while the link is
// down may wait for address resolution and still arrive if LinkUp follows
// within about three seconds.
func (b *Board) LinkDown() error { return b.setLink("down") }

// LinkUp restores a link cut by LinkDown.
func (b *Board) LinkUp() error { return b.setLink("up") }

func (b *Board) setLink(state string) error {
	c := b.chassis
	c.mu.Lock()
	closed := c.closed || !slices.Contains(c.Boards, b)
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("link %s of board %d: %w", state, b.Site, ErrClosed)
	}
	if err := runIP(c.ipPath, "", "-n", c.BackplaneNS, "link", "set", b.bridgeside, state); err != nil {
		return fmt.Errorf("rig: link %s of board %d: %w", state, b.Site, err)
	}
	return nil
}
