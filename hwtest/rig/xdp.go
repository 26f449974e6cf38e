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
	cfgThresholdOff = 0  // u64: drop when bpf_get_prandom_u32() < threshold; 1<<32 drops all
	cfgDropFromOff  = 8  // u32: "from" value (as loaded from the frame) to drop; noDropFrom disables
	cfgUDPPortOff   = 12 // u32: UDP destination port (as loaded from the frame) also matched; 0 disables
	cfgSize         = 16

	statSeenOff    = 0 // u64 frames examined (0x88B5, or UDP to the port)
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
// 0x88B5 (and, with UDPPort, UDP datagrams to that port) long enough to hold
// the backplane header's "from" field are considered; everything else (ARP,
// other IP) passes untouched and uncounted.
type InjectConfig struct {
	Direction Direction
	// Loss is the fraction of frames dropped at random, in [0, 1].
	Loss float64
	// DropFromSet enables dropping every frame whose header "from" equals
	// DropFrom, whatever Loss says.
	DropFromSet bool
	DropFrom    uint16
	// UDPPort, when not 0, makes the injector also act on IPv4 UDP
	// datagrams to this destination port, whose payload starts with the
	// backplane header (the UDP transport). Non-first IP fragments pass.
	UDPPort uint16
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
	settings InjectConfig // what the config map holds, but for Direction
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
	if _, err := lossThreshold(cfg.Loss); err != nil {
		return nil, err
	}
	c.mu.Lock()
	gone := c.closed || !slices.Contains(c.Boards, b)
	c.mu.Unlock()
	if gone {
		return nil, fmt.Errorf("inject on board %d: %w", b.Site, ErrClosed)
	}

	inj := &Injector{board: b, dir: cfg.Direction, settings: cfg}
	if err := inj.load(); err != nil {
		inj.release()
		return nil, err
	}
	if err := inj.writeConfig(); err != nil {
		inj.release()
		return nil, err
	}
	var err error
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
//	if EtherType == 0x88B5: from = frame[22:24]
//	else if cfg.udpPort != 0 && IPv4 && UDP && first fragment && dport == cfg.udpPort:
//		from = UDP payload[8:10]
//	else: pass
//	seen++
//	if from == cfg.dropFrom: dropped++, drop
//	if cfg.threshold != 0 && prandom_u32() < cfg.threshold: dropped++, drop
//	pass
//
// Every field is compared as loaded, in host byte order; the constants and
// the configured values are converted the same way (hostOrder), so the
// program is right on either endianness.
func injectorProgram(cfgFD, statsFD int) asm.Instructions {
	const (
		ipHeaderMin  = 20
		udpHeaderLen = 8
		ipProtoUDP   = 17
	)
	be16 := func(v uint16) int32 { return int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))) }
	return asm.Instructions{
		// r6 = ctx, r7 = &config, r8 = &stats: callee-saved across helpers.
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word), // key = 0
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, cfgFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, statsFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R8, asm.R0),

		// r2 = data, r3 = data_end.
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethHeaderLen),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R4, asm.R2, etherTypeOffset, asm.Half),
		asm.JEq.Imm(asm.R4, be16(EtherType), "raw"),
		asm.JNE.Imm(asm.R4, be16(etherTypeIPv4), "pass"),

		// IPv4: is it UDP to the configured port?
		asm.LoadMem(asm.R4, asm.R7, cfgUDPPortOff, asm.Word),
		asm.JEq.Imm(asm.R4, 0, "pass"),
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, ethHeaderLen+ipHeaderMin),
		asm.JGT.Reg(asm.R5, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, ethHeaderLen+9, asm.Byte), // protocol
		asm.JNE.Imm(asm.R5, ipProtoUDP, "pass"),
		asm.LoadMem(asm.R5, asm.R2, ethHeaderLen+6, asm.Half), // flags and fragment offset
		asm.And.Imm(asm.R5, be16(0x1fff)),
		asm.JNE.Imm(asm.R5, 0, "pass"),                      // a later fragment has no UDP header
		asm.LoadMem(asm.R5, asm.R2, ethHeaderLen, asm.Byte), // version and IHL
		asm.And.Imm(asm.R5, 0x0f),
		asm.LSh.Imm(asm.R5, 2),
		asm.JLT.Imm(asm.R5, ipHeaderMin, "pass"),
		asm.Add.Reg(asm.R2, asm.R5), // r2 = data + IHL: UDP header at r2+14
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, ethHeaderLen+udpHeaderLen+fromInHeader+2),
		asm.JGT.Reg(asm.R5, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, ethHeaderLen+2, asm.Half), // destination port
		asm.JNE.Reg(asm.R5, asm.R4, "pass"),
		asm.LoadMem(asm.R9, asm.R2, ethHeaderLen+udpHeaderLen+fromInHeader, asm.Half),
		asm.Ja.Label("match"),

		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("raw"),
		asm.Add.Imm(asm.R4, fromOffset+2),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R9, asm.R2, fromOffset, asm.Half),

		// r9 = from.
		asm.Mov.Imm(asm.R1, 1).WithSymbol("match"),
		asm.AddAtomic.Mem(asm.R8, asm.R1, asm.DWord, statSeenOff),
		asm.LoadMem(asm.R1, asm.R7, cfgDropFromOff, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R9, "drop"),
		asm.LoadMem(asm.R6, asm.R7, cfgThresholdOff, asm.DWord),
		asm.JEq.Imm(asm.R6, 0, "pass"),
		asm.FnGetPrandomU32.Call(),
		asm.JLT.Reg(asm.R0, asm.R6, "drop"),

		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),

		asm.Mov.Imm(asm.R1, 1).WithSymbol("drop"),
		asm.AddAtomic.Mem(asm.R8, asm.R1, asm.DWord, statDroppedOff),
		asm.Mov.Imm(asm.R0, xdpDrop),
		asm.Return(),
	}
}

// hostOrder returns the value a 16-bit load from the frame yields for a
// field holding v in byte order bo.
func hostOrder(bo binary.AppendByteOrder, v uint16) uint32 {
	return uint32(binary.NativeEndian.Uint16(bo.AppendUint16(nil, v)))
}

// writeConfig stores inj.settings in the config map. Callers hold inj.mu
// or own inj exclusively.
func (inj *Injector) writeConfig() error {
	threshold, err := lossThreshold(inj.settings.Loss)
	if err != nil {
		return err
	}
	var v [cfgSize]byte
	binary.NativeEndian.PutUint64(v[cfgThresholdOff:], threshold)
	from := uint32(noDropFrom)
	if inj.settings.DropFromSet {
		from = hostOrder(binary.LittleEndian, inj.settings.DropFrom)
	}
	binary.NativeEndian.PutUint32(v[cfgDropFromOff:], from)
	var port uint32
	if inj.settings.UDPPort != 0 {
		port = hostOrder(binary.BigEndian, inj.settings.UDPPort)
	}
	binary.NativeEndian.PutUint32(v[cfgUDPPortOff:], port)
	if err := inj.cfg.Put(uint32(0), v[:]); err != nil {
		return fmt.Errorf("rig: update injector config: %w", err)
	}
	return nil
}

// SetLoss changes the random loss fraction while the injector runs.
func (inj *Injector) SetLoss(fraction float64) error {
	if _, err := lossThreshold(fraction); err != nil {
		return err
	}
	return inj.update(func(s *InjectConfig) { s.Loss = fraction })
}

// SetDropFrom starts dropping every frame from site (on=true) or stops
// dropping by site (on=false), while the injector runs.
func (inj *Injector) SetDropFrom(site uint16, on bool) error {
	return inj.update(func(s *InjectConfig) { s.DropFromSet, s.DropFrom = on, site })
}

// Config returns the injector's current settings.
func (inj *Injector) Config() InjectConfig {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.settings
}

// update applies change to the settings and stores them; on failure the
// settings stay as they were.
func (inj *Injector) update(change func(*InjectConfig)) error {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if inj.closed {
		return fmt.Errorf("update injector on board %d: %w", inj.board.Site, ErrClosed)
	}
	old := inj.settings
	change(&inj.settings)
	if err := inj.writeConfig(); err != nil {
		inj.settings = old
		return err
	}
	return nil
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
