package backplane

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The raw transport's in-kernel filter: an eBPF socket filter, assembled
// here with cilium/ebpf/asm (no clang, no object files), that lets through
// only EtherType 0x88B5 frames of our group and counts its decisions in an
// array map. Frames it rejects are never copied to the socket, so a busy
// foreign group on the same backplane costs no wake-ups or copies here.

// Filter counter slots.
const (
	filterPassed = iota
	filterEtherType
	filterGroup
	filterShort
	filterSlots
)

type groupFilter struct {
	prog     *ebpf.Program
	counters *ebpf.Map
}

// countAndReturn bumps counters[slot] and returns ret. LD_ABS clobbers
// R1-R5, so the map pointer is loaded here, after the packet loads.
func countAndReturn(label string, fd int, slot int32, ret int32) asm.Instructions {
	skip := label + "_ret"
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, int64(slot), asm.Word).WithSymbol(label),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, fd),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		// This CPU's slot. Still an atomic add: on preemptible-softirq
		// kernels (PREEMPT_RT) two runs can interleave on one CPU; a
		// CPU-local atomic costs a few cycles, no cache-line transfer.
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, ret).WithSymbol(skip),
		asm.Return(),
	}
}

func newGroupFilter(group uint32) (*groupFilter, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		// Per-CPU: the filter runs on every CPU taking frames; a shared
		// counter would bounce its cache line between them on every frame.
		Name: "bp_filter_cnt", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: filterSlots,
	})
	if err != nil {
		return nil, fmt.Errorf("create filter counter map: %v: %w", err, ErrFilterUnavailable)
	}
	fd := m.FD()
	const minLen = EthHeaderSize + HeaderSize
	// LD_ABS reads in network byte order; the group field is little-endian
	// on the wire, so compare against the byte-swapped id. The constant goes
	// through a 64-bit register load because jump immediates are
	// sign-extended 32-bit values.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // __sk_buff.len
		asm.JLT.Imm(asm.R2, minLen, "short"),
		asm.LoadAbs(12, asm.Half),
		asm.JNE.Imm(asm.R0, EtherType, "ethertype"),
		asm.LoadAbs(EthHeaderSize+4, asm.Word),
		asm.LoadImm(asm.R2, int64(bits.ReverseBytes32(group)), asm.DWord),
		asm.JNE.Reg(asm.R0, asm.R2, "group"),
	}
	insns = append(insns, countAndReturn("pass", fd, filterPassed, -1)...) // -1: keep the whole frame
	insns = append(insns, countAndReturn("short", fd, filterShort, 0)...)
	insns = append(insns, countAndReturn("ethertype", fd, filterEtherType, 0)...)
	insns = append(insns, countAndReturn("group", fd, filterGroup, 0)...)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bp_group_filter", Type: ebpf.SocketFilter, License: "Dual MIT/GPL", Instructions: insns,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("load group filter: %v: %w", err, ErrFilterUnavailable)
	}
	return &groupFilter{prog: p, counters: m}, nil
}

func (f *groupFilter) attach(sock int) error {
	if err := unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, f.prog.FD()); err != nil {
		return fmt.Errorf("SO_ATTACH_BPF: %v: %w", err, ErrFilterUnavailable)
	}
	return nil
}

func (f *groupFilter) stats() FilterStats {
	var v [filterSlots]uint64
	var perCPU []uint64
	for i := range v {
		if f.counters.Lookup(uint32(i), &perCPU) == nil {
			for _, c := range perCPU {
				v[i] += c
			}
		}
	}
	return FilterStats{Attached: true, Passed: v[filterPassed], OtherEtherType: v[filterEtherType],
		ForeignGroup: v[filterGroup], Short: v[filterShort]}
}

func (f *groupFilter) close() error {
	return errors.Join(f.prog.Close(), f.counters.Close())
}
