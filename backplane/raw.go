package backplane

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// RawConfig configures the raw (AF_PACKET) transport.
type RawConfig struct {
	Interface string // backplane interface, e.g. "bp0"
	Site      uint16
	Group     uint32 // GroupID(name)
	// Peers optionally pins sites' MAC addresses; others are learned from
	// their frames (unicast goes to the group MAC until then).
	Peers map[uint16]net.HardwareAddr
	// NoFilter skips the eBPF socket filter (group checks then happen in
	// user space only). For benchmarks and kernels without eBPF.
	NoFilter          bool
	CompressThreshold int // 0: DefaultCompressThreshold; < 0: never compress
	Reassembly        ReassemblyConfig
	RecvBuffer        int // SO_RCVBUF bytes; default 8 MiB
	Batch             int // frames per recvmmsg; default 64
	// WaitInThread makes Recv wait for frames in poll(2) on the calling
	// goroutine's thread instead of parking it in the Go netpoller. A frame
	// then wakes the receiving thread itself, not the netpoller's thread
	// and, through it, another: on a machine where every wake-up is
	// costly (a virtual machine) that is most of what a board alone in its
	// process spends per message. Boards sharing one process do better
	// with the netpoller (a blocked receive there holds a processor the
	// other boards need until the runtime takes it back).
	WaitInThread bool
	// NoRing receives with recvmmsg instead of through a PACKET_RX_RING
	// (see pktRing). For comparison; a kernel that refuses the ring gets
	// recvmmsg anyway.
	NoRing bool
	// RingBytes sizes the receive ring; default DefaultRingBytes.
	RingBytes int
}

// DefaultRingBytes is the receive ring's default size: 5,120 slots at MTU
// 1500, as many frames as the 8 MiB socket buffer it replaces held (a large
// message's frames arrive back to back, and what does not fit is lost).
const DefaultRingBytes = 8 << 20

type rawTransport struct {
	fdTransport
	cfg    RawConfig
	tx     *txCore
	filter *groupFilter
	// ringErr is why the receive ring could not be set up ("": it was,
	// or NoRing).
	ringErr string
	ifi     *net.Interface
	group   [6]byte

	macMu sync.RWMutex
	macs  map[uint16][6]byte

	// txFd sends; it is bound with protocol 0, so it receives nothing.
	// Sending on the receive socket would wake the receive side for
	// nothing: when a sent frame's buffer is freed the kernel reports write
	// space on its socket, and the Go netpoller registers a socket for
	// EPOLLOUT as well as EPOLLIN, so every send woke a thread sleeping in
	// epoll_wait, which found no work.
	txFd int
	eth  [EthHeaderSize]byte // send path, under sendMu

	kPackets, kDrops uint64 // accumulated PACKET_STATISTICS, under sendMu
	mmsgs            []unix.Mmsghdr
	iovs             []unix.Iovec
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// NewRaw opens the raw transport on cfg.Interface. It needs CAP_NET_RAW (and
// CAP_BPF or CAP_SYS_ADMIN for the filter). Create it inside the network
// namespace of the interface.
func NewRaw(cfg RawConfig) (Transport, error) {
	if cfg.Site == AllSites {
		return nil, fmt.Errorf("raw transport: Site %#x is the all-sites address: %w", cfg.Site, ErrBadConfig)
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("raw transport: interface %q: %v: %w", cfg.Interface, err, ErrBadConfig)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("raw transport: interface %s is not Ethernet: %w", ifi.Name, ErrBadConfig)
	}
	if ifi.MTU < 576 {
		return nil, fmt.Errorf("raw transport: interface %s MTU %d below 576: %w", ifi.Name, ifi.MTU, ErrBadConfig)
	}
	if cfg.RecvBuffer <= 0 {
		cfg.RecvBuffer = 8 << 20
	}
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	t := &rawTransport{cfg: cfg, ifi: ifi, macs: make(map[uint16][6]byte), txFd: -1}
	t.what = fmt.Sprintf("raw site %d on %s", cfg.Site, ifi.Name)
	t.wk.efd = -1
	copy(t.group[:], GroupMAC(cfg.Group))
	for s, mac := range cfg.Peers {
		if len(mac) != 6 {
			return nil, fmt.Errorf("raw transport: peer %d MAC %v is not 6 bytes: %w", s, mac, ErrBadConfig)
		}
		t.macs[s] = [6]byte(mac)
	}
	if err := t.open(); err != nil {
		_ = t.Close()
		return nil, err
	}
	maxFrag := ifi.MTU - HeaderSize
	t.rx = newRxCore(cfg.Group, cfg.Site, maxFrag, cfg.Reassembly, &t.c)
	t.tx = newTxCore(cfg.Group, cfg.Site, maxFrag, cfg.CompressThreshold, &t.c)
	t.ring = newRxRing(cfg.Batch, EthHeaderSize+ifi.MTU)
	t.hdrOff = EthHeaderSize
	t.learn = t.learnMAC
	copy(t.eth[6:12], ifi.HardwareAddr)
	t.eth[12], t.eth[13] = EtherType>>8, EtherType&0xff
	t.initPoll(!cfg.WaitInThread)
	return t, nil
}

func (t *rawTransport) open() error {
	var err error
	if t.wk, err = newWaker(); err != nil {
		return err
	}
	// Protocol 0: the socket receives nothing until bind, so the filter is
	// in place before the first frame can be queued.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: AF_PACKET socket (needs CAP_NET_RAW): %w", t.what, err)
	}
	t.fds = append(t.fds, fd)
	if !t.cfg.NoFilter {
		if t.filter, err = newGroupFilter(t.cfg.Group); err != nil {
			return fmt.Errorf("%s: %w", t.what, err)
		}
		if err := t.filter.attach(fd); err != nil {
			return fmt.Errorf("%s: %w", t.what, err)
		}
	}
	// Frames this host sends from other sockets on the interface are not
	// for us; the kernel can skip looping them back (Linux >= 4.20).
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	setRcvBuf(fd, t.cfg.RecvBuffer)
	if !t.cfg.NoRing {
		// A kernel without rings still receives, by recvmmsg; Stats
		// says which.
		if t.pr, err = newPktRing(fd, EthHeaderSize+t.ifi.MTU, t.cfg.RingBytes); err != nil {
			t.ringErr = err.Error()
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(EtherType), Ifindex: t.ifi.Index}); err != nil {
		return fmt.Errorf("%s: bind: %w", t.what, err)
	}
	mreq := &unix.PacketMreq{Ifindex: int32(t.ifi.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
	copy(mreq.Address[:], t.group[:])
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("%s: join group MAC %v: %w", t.what, net.HardwareAddr(t.group[:]), err)
	}
	if t.txFd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		return fmt.Errorf("%s: AF_PACKET send socket: %w", t.what, err)
	}
	// Bound to the interface with protocol 0: frames go out of it and none
	// is ever queued to it.
	if err := unix.Bind(t.txFd, &unix.SockaddrLinklayer{Ifindex: t.ifi.Index}); err != nil {
		return fmt.Errorf("%s: bind send socket: %w", t.what, err)
	}
	return nil
}

// learnMAC remembers the Ethernet source of a site's delivered message.
func (t *rawTransport) learnMAC(frame []byte, from uint16) {
	src := [6]byte(frame[6:12])
	t.macMu.RLock()
	cur, ok := t.macs[from]
	t.macMu.RUnlock()
	if ok && cur == src {
		return
	}
	t.macMu.Lock()
	t.macs[from] = src
	t.macMu.Unlock()
}

func (t *rawTransport) Send(to uint16, typ uint8, payload []byte) error {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.closed.Load() {
		return fmt.Errorf("send on %s: %w", t.what, ErrClosed)
	}
	dst := t.group
	if to != AllSites {
		t.macMu.RLock()
		if mac, ok := t.macs[to]; ok {
			dst = mac
		}
		t.macMu.RUnlock()
	}
	copy(t.eth[:6], dst[:])
	frags, err := t.tx.build(to, typ, payload)
	if err != nil {
		return err
	}
	n := len(frags)
	if cap(t.mmsgs) < n {
		t.mmsgs = make([]unix.Mmsghdr, n)
		t.iovs = make([]unix.Iovec, 3*n)
	}
	mm, iov := t.mmsgs[:n], t.iovs[:3*n]
	bytes := 0
	for i, f := range frags {
		v := iov[3*i : 3*i+3]
		v[0].Base = &t.eth[0]
		v[0].SetLen(EthHeaderSize)
		v[1].Base = &f.hdr[0]
		v[1].SetLen(len(f.hdr))
		niov := 2
		if len(f.data) > 0 {
			v[2].Base = &f.data[0]
			v[2].SetLen(len(f.data))
			niov = 3
		}
		mm[i].Hdr = unix.Msghdr{Iov: &v[0]}
		mm[i].Hdr.SetIovlen(niov)
		bytes += EthHeaderSize + len(f.hdr) + len(f.data)
	}
	sent, err := sendAll(t.txFd, mm)
	t.c.framesOut.Add(uint64(sent))
	t.c.bytesOut.Add(uint64(bytes * sent / n))
	clearMsgs(mm, iov)
	if err != nil {
		t.c.sendErrors.Add(1)
		return fmt.Errorf("raw send %d bytes to site %d on %s: %d of %d frames sent: %w", len(payload), to, t.ifi.Name, sent, n, err)
	}
	t.c.msgsOut.Add(1)
	return nil
}

func (t *rawTransport) Recv(msgs []Message) (int, error) { return t.recv(msgs) }

// Serve implements Server.
func (t *rawTransport) Serve(msgs []Message, handle func([]Message) bool) error {
	return t.serve(msgs, handle)
}

func (t *rawTransport) Stats() Stats {
	s := t.c.snapshot()
	if t.rx != nil {
		s.Reassembling = int(t.rx.reasm.nGauge.Load())
		s.ReassemblyBytes = int(t.rx.reasm.bGauge.Load())
	}
	if t.filter != nil && !t.closed.Load() {
		s.Filter = t.filter.stats()
	}
	_, s.SocketDrops, _ = t.kernelStats()
	s.RecvRing, s.RingError = t.pr != nil, t.ringErr
	return s
}

func (t *rawTransport) Close() error {
	return t.close(func() error {
		var errs []error
		if t.txFd >= 0 {
			errs = append(errs, unix.Close(t.txFd))
		}
		if t.filter != nil {
			errs = append(errs, t.filter.close())
		}
		if t.pr != nil {
			// Under recvMu with the socket closed: no grab runs.
			errs = append(errs, t.pr.close())
		}
		return errors.Join(errs...)
	})
}

// kernelStats returns the socket's cumulative PACKET_STATISTICS: frames
// queued to the socket (after the filter) and frames the kernel dropped for
// lack of receive buffer space. The kernel resets the counters on every read,
// so they are accumulated here.
func (t *rawTransport) kernelStats() (packets, drops uint64, err error) {
	// sendMu, not recvMu (held by a blocked Recv), keeps Close from closing
	// the fd under us.
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if !t.closed.Load() {
		st, gerr := unix.GetsockoptTpacketStats(t.fds[0], unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if gerr != nil {
			err = fmt.Errorf("packet statistics on %s: %w", t.what, gerr)
		} else {
			t.kPackets += uint64(st.Packets)
			t.kDrops += uint64(st.Drops)
		}
	}
	return t.kPackets, t.kDrops, err
}
