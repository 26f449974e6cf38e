package backplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// DefaultUDPPort is the udp transport's default multicast port.
const DefaultUDPPort = 45405

// UDPConfig configures the udp transport.
type UDPConfig struct {
	Site  uint16
	Group uint32 // GroupID(name)
	// Sites maps every site of the group, this one included, to its unicast
	// address. This site binds its own entry; unicast Sends go to the others.
	Sites map[uint16]netip.AddrPort
	// Interface carries multicast. Empty: the interface holding this site's
	// address. Multicast is used only on an interface that is up and has the
	// MULTICAST flag (plain loopback has not), so group traffic can never
	// leak out of a default route; otherwise every multicast is sent as
	// unicast to each configured site and Stats.MulticastFallback says why.
	Interface string
	// MulticastAddr defaults to GroupIP(Group); Port to DefaultUDPPort.
	// When this site's own port equals Port and no other site's address is
	// local, one wildcard-bound socket serves unicast and multicast and Recv
	// blocks in recvmmsg; otherwise a second socket bound to the group is
	// polled alongside the unicast one (a few µs more per message).
	MulticastAddr netip.Addr
	Port          uint16
	// NoMulticast forces unicast fan-out.
	NoMulticast bool
	// MaxDatagram is the largest datagram sent or accepted (header included);
	// default 1472 (a 1500-byte Ethernet MTU minus IPv4 and UDP headers).
	// Every site of a group must use the same value.
	MaxDatagram       int
	CompressThreshold int // 0: DefaultCompressThreshold; < 0: never compress
	Reassembly        ReassemblyConfig
	RecvBuffer        int // SO_RCVBUF bytes; default 8 MiB
	Batch             int // datagrams per recvmmsg; default 64
}

type udpTransport struct {
	fdTransport
	cfg      UDPConfig
	tx       *txCore
	addrs    map[uint16]*unix.RawSockaddrInet4
	fanout   []uint16 // other sites, sorted
	mcast    *unix.RawSockaddrInet4
	mcastIf  *net.Interface // the interface mcast is sent on
	fallback string
	mmsgs    []unix.Mmsghdr
	iovs     []unix.Iovec
	// txFd sends, bound to this site's address and a port of its own, so
	// it receives nothing. Sending on a receiving socket would wake the
	// receive side for nothing: when a sent datagram's buffer is freed the
	// kernel reports write space on its socket, and the Go netpoller,
	// which waits on the one-socket layout's socket, registers it for
	// EPOLLOUT as well as EPOLLIN (the raw transport's txFd, likewise).
	txFd int
}

func sockaddr4(ap netip.AddrPort) *unix.RawSockaddrInet4 {
	sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	p := (*[2]byte)(unsafePointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	return sa
}

// NewUDP opens the udp transport. Create it inside the network namespace it
// is to use.
func NewUDP(cfg UDPConfig) (Transport, error) {
	self, ok := cfg.Sites[cfg.Site]
	switch {
	case cfg.Site == AllSites:
		return nil, fmt.Errorf("udp transport: Site %#x is the all-sites address: %w", cfg.Site, ErrBadConfig)
	case !ok:
		return nil, fmt.Errorf("udp transport: Sites has no address for this site %d: %w", cfg.Site, ErrBadConfig)
	case !self.Addr().Is4():
		return nil, fmt.Errorf("udp transport: site %d address %v is not IPv4: %w", cfg.Site, self, ErrBadConfig)
	}
	if cfg.MaxDatagram == 0 {
		cfg.MaxDatagram = 1472
	}
	if cfg.MaxDatagram < 576-28 || cfg.MaxDatagram > HeaderSize+MaxFramePayload {
		return nil, fmt.Errorf("udp transport: MaxDatagram %d outside [548, %d]: %w", cfg.MaxDatagram, HeaderSize+MaxFramePayload, ErrBadConfig)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultUDPPort
	}
	if !cfg.MulticastAddr.IsValid() {
		cfg.MulticastAddr = netip.AddrFrom4(GroupIP(cfg.Group))
	}
	if !cfg.MulticastAddr.Is4() || !cfg.MulticastAddr.IsMulticast() {
		return nil, fmt.Errorf("udp transport: MulticastAddr %v is not an IPv4 multicast address: %w", cfg.MulticastAddr, ErrBadConfig)
	}
	if cfg.RecvBuffer <= 0 {
		cfg.RecvBuffer = 8 << 20
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	t := &udpTransport{cfg: cfg, addrs: make(map[uint16]*unix.RawSockaddrInet4), txFd: -1}
	t.what = fmt.Sprintf("udp site %d at %v", cfg.Site, self)
	t.wk.efd = -1
	for s, ap := range cfg.Sites {
		if !ap.Addr().Is4() || ap.Port() == 0 {
			return nil, fmt.Errorf("udp transport: site %d address %v is not IPv4 with a port: %w", s, ap, ErrBadConfig)
		}
		t.addrs[s] = sockaddr4(ap)
		if s != cfg.Site {
			t.fanout = append(t.fanout, s)
		}
	}
	slices.Sort(t.fanout)
	if err := t.open(self); err != nil {
		_ = t.Close()
		return nil, err
	}
	maxFrag := cfg.MaxDatagram - HeaderSize
	t.rx = newRxCore(cfg.Group, cfg.Site, MaxFramePayload, cfg.Reassembly, &t.c)
	t.tx = newTxCore(cfg.Group, cfg.Site, maxFrag, cfg.CompressThreshold, &t.c)
	t.ring = newRxRing(cfg.Batch, cfg.MaxDatagram)
	t.initPoll(true)
	return t, nil
}

func udpSocket() (int, error) {
	return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
}

func (t *udpTransport) open(self netip.AddrPort) error {
	var err error
	if t.wk, err = newWaker(); err != nil {
		return err
	}
	if err := t.openRecv(self); err != nil {
		return err
	}
	// After the receive sockets are bound: the kernel picks the send
	// socket's port, which then cannot be this site's own (the default
	// group port lies in the ephemeral range).
	return t.openSend(self.Addr())
}

// openRecv opens the receive sockets: one (openShared) or a unicast and a
// group socket, or the unicast one alone when multicast is not to be had.
func (t *udpTransport) openRecv(self netip.AddrPort) error {
	ifi, why := t.multicastInterface(self.Addr())
	if ifi != nil && self.Port() == t.cfg.Port && !t.peersLocal() {
		ok, err := t.openShared(ifi)
		if ok || err != nil {
			return err
		}
	}
	fd, err := udpSocket()
	if err != nil {
		return fmt.Errorf("%s: socket: %w", t.what, err)
	}
	t.fds = append(t.fds, fd)
	setRcvBuf(fd, t.cfg.RecvBuffer)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: self.Addr().As4(), Port: int(self.Port())}); err != nil {
		return fmt.Errorf("%s: bind: %w", t.what, err)
	}
	if ifi == nil {
		t.fallback = why
		return nil
	}
	// Multicast is received on a second socket bound to the group, because
	// a socket bound to a unicast address never sees multicast.
	mreq := &unix.IPMreqn{Multiaddr: t.cfg.MulticastAddr.As4(), Ifindex: int32(ifi.Index)}
	mfd, err := udpSocket()
	if err != nil {
		return fmt.Errorf("%s: multicast socket: %w", t.what, err)
	}
	t.fds = append(t.fds, mfd)
	setRcvBuf(mfd, t.cfg.RecvBuffer)
	_ = unix.SetsockoptInt(mfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	_ = unix.SetsockoptInt(mfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(mfd, &unix.SockaddrInet4{Addr: t.cfg.MulticastAddr.As4(), Port: int(t.cfg.Port)}); err != nil {
		return fmt.Errorf("%s: bind multicast %v:%d: %w", t.what, t.cfg.MulticastAddr, t.cfg.Port, err)
	}
	if err := unix.SetsockoptIPMreqn(mfd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		// Membership failing is not fatal: fan out instead, and say so.
		_ = unix.Close(mfd)
		t.fds = t.fds[:1]
		t.fallback = fmt.Sprintf("joining %v on %s failed: %v", t.cfg.MulticastAddr, ifi.Name, err)
		return nil
	}
	t.mcast = sockaddr4(netip.AddrPortFrom(t.cfg.MulticastAddr, t.cfg.Port))
	t.mcastIf = ifi
	return nil
}

// openSend opens txFd: bound to this site's address, so datagrams leave
// from it whatever the receive sockets are bound to, and, when the group
// is reached by multicast, set to send it on that interface with a TTL of
// 1: the group never leaves the backplane.
func (t *udpTransport) openSend(self netip.Addr) error {
	fd, err := udpSocket()
	if err != nil {
		return fmt.Errorf("%s: send socket: %w", t.what, err)
	}
	t.txFd = fd
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: self.As4()}); err != nil {
		return fmt.Errorf("%s: bind send socket to %v: %w", t.what, self, err)
	}
	ifi := t.mcastIf
	if ifi == nil {
		return nil
	}
	mreq := &unix.IPMreqn{Multiaddr: t.cfg.MulticastAddr.As4(), Ifindex: int32(ifi.Index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); err != nil {
		return fmt.Errorf("%s: IP_MULTICAST_IF %s: %w", t.what, ifi.Name, err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 1)
	if !t.peersLocal() {
		// No other site listens in this namespace, so a looped-back copy
		// would reach only this site's own receive socket: a wake-up per
		// multicast for a frame it drops as its own.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
	}
	return nil
}

// openShared tries the one-socket layout: when this site's unicast port is
// the group port, a single socket bound to the wildcard address receives
// both unicast and multicast, so Recv can block in recvmmsg (one syscall per
// wake-up) instead of polling two sockets. It reports false, with no error,
// when the port is taken by a more specific socket of another site in this
// namespace; the caller then uses the two-socket layout.
func (t *udpTransport) openShared(ifi *net.Interface) (bool, error) {
	fd, err := udpSocket()
	if err != nil {
		return false, fmt.Errorf("%s: socket: %w", t.what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(t.cfg.Port)}); err != nil {
		_ = unix.Close(fd)
		return false, nil
	}
	t.fds = append(t.fds, fd)
	setRcvBuf(fd, t.cfg.RecvBuffer)
	// Only the groups this socket joined, not every group any socket of the
	// namespace joined on this port.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	mreq := &unix.IPMreqn{Multiaddr: t.cfg.MulticastAddr.As4(), Ifindex: int32(ifi.Index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		t.fallback = fmt.Sprintf("joining %v on %s failed: %v", t.cfg.MulticastAddr, ifi.Name, err)
		return true, nil
	}
	t.mcast = sockaddr4(netip.AddrPortFrom(t.cfg.MulticastAddr, t.cfg.Port))
	t.mcastIf = ifi
	return true, nil
}

// peersLocal reports whether another configured site has an address of this
// namespace: then a wildcard-bound socket would take that site's unicast.
func (t *udpTransport) peersLocal() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for s, ap := range t.cfg.Sites {
		if s == t.cfg.Site {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == ap.Addr() {
				return true
			}
		}
	}
	return false
}

// multicastInterface picks the interface for multicast or says why none fits.
func (t *udpTransport) multicastInterface(self netip.Addr) (*net.Interface, string) {
	if t.cfg.NoMulticast {
		return nil, "multicast disabled by configuration (NoMulticast)"
	}
	var ifi *net.Interface
	if t.cfg.Interface != "" {
		var err error
		if ifi, err = net.InterfaceByName(t.cfg.Interface); err != nil {
			return nil, fmt.Sprintf("interface %q: %v", t.cfg.Interface, err)
		}
	} else {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Sprintf("listing interfaces: %v", err)
		}
	search:
		for i := range ifs {
			addrs, err := ifs[i].Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == self {
					ifi = &ifs[i]
					break search
				}
			}
		}
		if ifi == nil {
			return nil, fmt.Sprintf("no interface holds this site's address %v", self)
		}
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Sprintf("interface %s is down", ifi.Name)
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return nil, fmt.Sprintf("interface %s has no MULTICAST flag", ifi.Name)
	}
	return ifi, ""
}

func (t *udpTransport) Send(to uint16, typ uint8, payload []byte) error {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.closed.Load() {
		return fmt.Errorf("send on %s: %w", t.what, ErrClosed)
	}
	var dsts []*unix.RawSockaddrInet4
	var one [1]*unix.RawSockaddrInet4
	switch {
	case to != AllSites:
		sa := t.addrs[to]
		if sa == nil || to == t.cfg.Site {
			return fmt.Errorf("udp send to site %d: %w", to, ErrUnknownSite)
		}
		one[0] = sa
		dsts = one[:]
	case t.mcast != nil:
		one[0] = t.mcast
		dsts = one[:]
	default:
		if len(t.fanout) == 0 {
			return nil
		}
		dsts = nil
	}
	frags, err := t.tx.build(to, typ, payload)
	if err != nil {
		return err
	}
	nd := len(dsts)
	if dsts == nil {
		nd = len(t.fanout)
	}
	n := nd * len(frags)
	if cap(t.mmsgs) < n {
		t.mmsgs = make([]unix.Mmsghdr, n)
		t.iovs = make([]unix.Iovec, 2*n)
	}
	mm, iov := t.mmsgs[:n], t.iovs[:2*n]
	bytes := 0
	for d := 0; d < nd; d++ {
		var sa *unix.RawSockaddrInet4
		if dsts != nil {
			sa = dsts[d]
		} else {
			sa = t.addrs[t.fanout[d]]
		}
		for i, f := range frags {
			k := d*len(frags) + i
			fillMsg(&mm[k], iov[2*k:2*k+2], f, (*byte)(unsafePointer(sa)), unix.SizeofSockaddrInet4)
			bytes += len(f.hdr) + len(f.data)
		}
	}
	sent, err := sendAll(t.txFd, mm)
	t.c.framesOut.Add(uint64(sent))
	t.c.bytesOut.Add(uint64(bytes * sent / n))
	clearMsgs(mm, iov)
	if err != nil {
		t.c.sendErrors.Add(1)
		if errors.Is(err, unix.ECONNREFUSED) {
			// An earlier datagram hit a closed port (ICMP): datagram
			// semantics, the peer is down; not this send's failure.
			return nil
		}
		return fmt.Errorf("udp send %d bytes to site %d: %d of %d datagrams sent: %w", len(payload), to, sent, n, err)
	}
	t.c.msgsOut.Add(1)
	return nil
}

func (t *udpTransport) Recv(msgs []Message) (int, error) { return t.recv(msgs) }

// Serve implements Server.
func (t *udpTransport) Serve(msgs []Message, handle func([]Message) bool) error {
	return t.serve(msgs, handle)
}

func (t *udpTransport) Stats() Stats {
	s := t.c.snapshot()
	s.Reassembling = int(t.rx.reasm.nGauge.Load())
	s.ReassemblyBytes = int(t.rx.reasm.bGauge.Load())
	if t.fallback != "" {
		s.MulticastFallback, s.FallbackReason = true, t.fallback
	}
	return s
}

func (t *udpTransport) Close() error {
	return t.close(func() error {
		if t.txFd < 0 {
			return nil
		}
		return unix.Close(t.txFd)
	})
}

// fillMsg points one mmsghdr at a fragment's header and payload.
func fillMsg(m *unix.Mmsghdr, iov []unix.Iovec, f fragment, name *byte, namelen uint32) {
	iov[0].Base = &f.hdr[0]
	iov[0].SetLen(len(f.hdr))
	niov := 1
	if len(f.data) > 0 {
		iov[1].Base = &f.data[0]
		iov[1].SetLen(len(f.data))
		niov = 2
	}
	m.Hdr = unix.Msghdr{Name: name, Namelen: namelen, Iov: &iov[0]}
	m.Hdr.SetIovlen(niov)
	m.Len = 0
}

// clearMsgs drops the references to caller payloads once sent, so a retained
// batch array does not pin them.
func clearMsgs(mm []unix.Mmsghdr, iov []unix.Iovec) {
	clear(mm)
	clear(iov)
}
