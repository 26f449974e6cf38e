package rig

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// XDP return codes (linux/bpf.h).
const (
	xdpDrop = 1
	xdpPass = 2
)

// Layout of the injector's maps, one entry each, read and written by the
// program in host byte order.
const (
	cfgThresholdOff = 0 // u64: drop when bpf_get_prandom_u32() < threshold; 1<<32 drops all
	cfgDropFromOff  = 8 // u32: "from" value (as loaded from the frame) to drop; noDropFrom disables
	cfgSize         = 16

	statSeenOff    = 0 // u64 frames of EtherType 0x88B5 examined
	statDroppedOff = 8 // u64 of those dropped
	statSize       = 16
)

// noDropFrom cannot equal a 16-bit load, so it disables the site match.
const noDropFrom = 1 << 16

var (
	// ErrBadFraction: a loss fraction outside [0, 1] or NaN.
	ErrBadFraction = errors.New("rig: loss fraction must be within [0, 1]")
	// ErrInjectorBusy: the link already carries an injector (or another XDP program).
	ErrInjectorBusy = errors.New("rig: an XDP program is already attached to this link; close the other injector, or put loss and drop-from in one InjectConfig")
)

// Direction says which frames of a board an injector sees.
type Direction int

const (
	// FromBoard: frames the board sends, seen as they enter the bridge
	// (XDP on the bridge-side veth, in the backplane namespace).
	FromBoard Direction = iota
	// ToBoard: frames the board receives, seen as they arrive on bp0
	// (XDP on bp0, in the board's namespace), before any socket sees them.
	ToBoard
)

func (d Direction) String() string {
	switch d {
	case FromBoard:
		return "from-board"
	case ToBoard:
		return "to-board"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// InjectConfig describes what an injector drops. Only frames of EtherType
// 0x88B5 long enough to hold the backplane header's "from" field are
// considered; everything else (ARP, IP) passes untouched and uncounted.
type InjectConfig struct {
	Direction Direction
	// Loss is the fraction of frames dropped at random, in [0, 1].
	Loss float64
	// DropFromSet enables dropping every frame whose header "from" equals
	// DropFrom, whatever Loss says.
	DropFromSet bool
	DropFrom    uint16
}

// Injector is an XDP program dropping backplane frames on one link. Its
// settings can be changed while it runs. Methods are safe for concurrent use.
type Injector struct {
	board *Board
	dir   Direction

	mu       sync.Mutex
	cfg      *ebpf.Map
	stats    *ebpf.Map
	prog     *ebpf.Program
	lnk      link.Link
	closed   bool
	lastSeen uint64
	lastDrop uint64
}

// InjectLoss drops the given fraction of the 0x88B5 frames the board sends
// (XDP on its bridge-side veth).
func (b *Board) InjectLoss(fraction float64) (*Injector, error) {
	return b.Inject(InjectConfig{Direction: FromBoard, Loss: fraction})
}

// InjectDropFromSite drops every 0x88B5 frame with header "from" == site
// that this board receives (XDP on bp0 inside the board): the board stops
// hearing that site while every other board still does, an asymmetric
// partition. To silence a site for everyone, use its own board's
// InjectLoss(1) or Inject with FromBoard.
func (b *Board) InjectDropFromSite(site uint16) (*Injector, error) {
	return b.Inject(InjectConfig{Direction: ToBoard, DropFromSet: true, DropFrom: site})
}

// Inject attaches an injector (generic-mode XDP) with the given settings.
// A link takes one injector per direction: a second Inject on the same
// board and direction fails until the first is closed, so combine loss and
// drop-from in one InjectConfig.
func (b *Board) Inject(cfg InjectConfig) (*Injector, error) {
	c := b.chassis
	if cfg.Direction != FromBoard && cfg.Direction != ToBoard {
		return nil, fmt.Errorf("%w: direction %v", ErrBadOptions, cfg.Direction)
	}
	threshold, err := lossThreshold(cfg.Loss)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	gone := c.closed || !slices.Contains(c.Boards, b)
	c.mu.Unlock()
	if gone {
		return nil, fmt.Errorf("inject on board %d: %w", b.Site, ErrClosed)
	}

	inj := &Injector{board: b, dir: cfg.Direction}
	if err := inj.load(); err != nil {
		inj.release()
		return nil, err
	}
	if err := inj.writeConfig(threshold, cfg.DropFromSet, cfg.DropFrom); err != nil {
		inj.release()
		return nil, err
	}
	ns, ifname := c.BackplaneNS, b.bridgeside
	if cfg.Direction == ToBoard {
		ns, ifname = b.NS, b.Iface
	}
	// The interface index and the attachment are resolved in the calling
	// thread's namespace, hence inside doInNS.
	err = doInNS(nsPath(ns), func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("rig: find %s in %s: %w", ifname, ns, err)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: inj.prog, Interface: ifi.Index, Flags: link.XDPGenericMode})
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: %s in %s (board %d, %v): %v", ErrInjectorBusy, ifname, ns, b.Site, cfg.Direction, err)
		}
		if err != nil {
			return fmt.Errorf("rig: attach XDP injector to %s in %s (needs CAP_BPF/CAP_NET_ADMIN and a kernel with XDP): %w", ifname, ns, err)
		}
		inj.lnk = l
		return nil
	})
	if err != nil {
		inj.release()
		return nil, err
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		inj.release()
		return nil, fmt.Errorf("inject on board %d: %w", b.Site, ErrClosed)
	}
	c.injectors[inj] = struct{}{}
	c.mu.Unlock()
	return inj, nil
}

// lossThreshold maps a fraction to the value the random number is compared
// with: fraction 1 gives 1<<32, above every u32, so every frame is dropped.
func lossThreshold(f float64) (uint64, error) {
	if math.IsNaN(f) || f < 0 || f > 1 {
		return 0, fmt.Errorf("%w: got %v", ErrBadFraction, f)
	}
	return uint64(math.Round(f * (1 << 32))), nil
}

// load creates the maps and the program.
func (inj *Injector) load() error {
	var err error
	inj.cfg, err = ebpf.NewMap(&ebpf.MapSpec{Name: "bh_inj_cfg", Type: ebpf.Array, KeySize: 4, ValueSize: cfgSize, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("rig: create injector config map: %w", err)
	}
	inj.stats, err = ebpf.NewMap(&ebpf.MapSpec{Name: "bh_inj_stats", Type: ebpf.Array, KeySize: 4, ValueSize: statSize, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("rig: create injector stats map: %w", err)
	}
	inj.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bh_inject",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: injectorProgram(inj.cfg.FD(), inj.stats.FD()),
	})
	if err != nil {
		return fmt.Errorf("rig: load XDP injector program: %w", err)
	}
	return nil
}

// injectorProgram returns the XDP program:
//
//	if frame too short or EtherType != 0x88B5: pass
//	seen++
//	if from == cfg.dropFrom: dropped++, drop
//	if cfg.threshold != 0 && prandom_u32() < cfg.threshold: dropped++, drop
//	pass
//
// EtherType and "from" are compared as loaded in host byte order; the
// constants and the stored site are converted the same way, so the program
// is right on either endianness.
func injectorProgram(cfgFD, statsFD int) asm.Instructions {
	etherType := int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, EtherType)))
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),              // r6 = ctx
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // r7 = data
		asm.LoadMem(asm.R8, asm.R6, 4, asm.Word), // r8 = data_end
		asm.Mov.Reg(asm.R2, asm.R7),              //
		asm.Add.Imm(asm.R2, fromOffset+2),        // r2 = data + bytes needed
		asm.JGT.Reg(asm.R2, asm.R8, "pass"),      // too short
		asm.LoadMem(asm.R2, asm.R7, etherTypeOffset, asm.Half),
		asm.JNE.Imm(asm.R2, etherType, "pass"),
		asm.LoadMem(asm.R9, asm.R7, fromOffset, asm.Half), // r9 = from

		asm.StoreImm(asm.RFP, -4, 0, asm.Word), // key = 0
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, statsFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0), // r7 = &stats
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R7, asm.R1, asm.DWord, statSeenOff),

		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, cfgFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, cfgDropFromOff, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R9, "drop"),
		asm.LoadMem(asm.R8, asm.R0, cfgThresholdOff, asm.DWord), // r8 = threshold
		asm.JEq.Imm(asm.R8, 0, "pass"),
		asm.FnGetPrandomU32.Call(),
		asm.JLT.Reg(asm.R0, asm.R8, "drop"),

		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),

		asm.Mov.Imm(asm.R1, 1).WithSymbol("drop"),
		asm.AddAtomic.Mem(asm.R7, asm.R1, asm.DWord, statDroppedOff),
		asm.Mov.Imm(asm.R0, xdpDrop),
		asm.Return(),
	}
}

// writeConfig stores the settings the program reads.
func (inj *Injector) writeConfig(threshold uint64, dropFromSet bool, site uint16) error {
	var v [cfgSize]byte
	binary.NativeEndian.PutUint64(v[cfgThresholdOff:], threshold)
	from := uint32(noDropFrom)
	if dropFromSet {
		// The program loads the little-endian field as a host-order u16.
		from = uint32(binary.NativeEndian.Uint16(binary.LittleEndian.AppendUint16(nil, site)))
	}
	binary.NativeEndian.PutUint32(v[cfgDropFromOff:], from)
	if err := inj.cfg.Put(uint32(0), v[:]); err != nil {
		return fmt.Errorf("rig: update injector config: %w", err)
	}
	return nil
}

// readConfig returns the current threshold and drop-from word.
func (inj *Injector) readConfig() (uint64, uint32, error) {
	var v [cfgSize]byte
	if err := inj.cfg.Lookup(uint32(0), v[:]); err != nil {
		return 0, 0, fmt.Errorf("rig: read injector config: %w", err)
	}
	return binary.NativeEndian.Uint64(v[cfgThresholdOff:]), binary.NativeEndian.Uint32(v[cfgDropFromOff:]), nil
}

// SetLoss changes the random loss fraction while the injector runs.
func (inj *Injector) SetLoss(fraction float64) error {
	threshold, err := lossThreshold(fraction)
	if err != nil {
		return err
	}
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if inj.closed {
		return fmt.Errorf("set loss: %w", ErrClosed)
	}
	_, from, err := inj.readConfig()
	if err != nil {
		return err
	}
	var v [cfgSize]byte
	binary.NativeEndian.PutUint64(v[cfgThresholdOff:], threshold)
	binary.NativeEndian.PutUint32(v[cfgDropFromOff:], from)
	if err := inj.cfg.Put(uint32(0), v[:]); err != nil {
		return fmt.Errorf("rig: update injector config: %w", err)
	}
	return nil
}

// SetDropFrom starts dropping every frame from site (on=true) or stops
// dropping by site (on=false), while the injector runs.
func (inj *Injector) SetDropFrom(site uint16, on bool) error {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if inj.closed {
		return fmt.Errorf("set drop-from: %w", ErrClosed)
	}
	threshold, _, err := inj.readConfig()
	if err != nil {
		return err
	}
	return inj.writeConfig(threshold, on, site)
}

func (inj *Injector) attachedTo() *Board { return inj.board }

// Direction returns which frames of the board the injector sees.
func (inj *Injector) Direction() Direction { return inj.dir }

// Stats returns how many 0x88B5 frames the program examined and how many it
// dropped. After Close it returns the last values read.
func (inj *Injector) Stats() (seen, dropped uint64) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if !inj.closed {
		inj.refreshStats()
	}
	return inj.lastSeen, inj.lastDrop
}

// refreshStats reads the counters; a failed read keeps the last values.
func (inj *Injector) refreshStats() {
	var v [statSize]byte
	if err := inj.stats.Lookup(uint32(0), v[:]); err == nil {
		inj.lastSeen = binary.NativeEndian.Uint64(v[statSeenOff:])
		inj.lastDrop = binary.NativeEndian.Uint64(v[statDroppedOff:])
	}
}

// Close detaches the program and frees it. It is idempotent.
func (inj *Injector) Close() error {
	inj.mu.Lock()
	if inj.closed {
		inj.mu.Unlock()
		return nil
	}
	inj.refreshStats()
	inj.closed = true
	err := inj.release()
	inj.mu.Unlock()

	c := inj.board.chassis
	c.mu.Lock()
	delete(c.injectors, inj)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("rig: close injector on board %d (%v): %w", inj.board.Site, inj.dir, err)
	}
	return nil
}

// release closes whatever load and attach created.
func (inj *Injector) release() error {
	var errs []error
	if inj.lnk != nil {
		errs = append(errs, inj.lnk.Close())
		inj.lnk = nil
	}
	if inj.prog != nil {
		errs = append(errs, inj.prog.Close())
	}
	if inj.stats != nil {
		errs = append(errs, inj.stats.Close())
	}
	if inj.cfg != nil {
		errs = append(errs, inj.cfg.Close())
	}
	inj.prog, inj.stats, inj.cfg = nil, nil, nil
	return errors.Join(errs...)
}
