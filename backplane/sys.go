package backplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched socket I/O shared by the raw and udp transports.
//
// Receiving: the raw transport takes frames from a TPACKET_V2 receive ring
// (pktRing), which hands over each frame as it is written, without a system
// call; UDP sockets, and raw ones whose kernel refuses the ring, use
// recvmmsg, which wakes on the first frame and drains up to a batch per call
// under load. Not TPACKET_V3: a V3 ring hands blocks to user space when they
// fill or when the block-retire timer fires (millisecond granularity), which
// adds up to a timer period of latency to every lone request/response frame —
// exactly the replication ack path. On the rig (2026-12-06) the ring took a
// raw transport's 64 B round trip from 18–25 µs to 13–14 µs p50. Sending:
// sendmmsg sends all fragments of a message in one syscall with the header
// and the caller's payload as separate iovecs, so the payload is never
// copied in user space.

const maxMmsgBatch = 1024 // UIO_MAXIOV: the kernel's limit on vlen

func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

func recvmmsg(fd int, msgs []unix.Mmsghdr, flags int) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// sendAll sends every message of msgs, in batches, retrying briefly when the
// device queue is full (ENOBUFS/EAGAIN) rather than losing the tail of a
// fragmented message.
func sendAll(fd int, msgs []unix.Mmsghdr) (sent int, err error) {
	busy := 0
	for sent < len(msgs) {
		end := min(len(msgs), sent+maxMmsgBatch)
		n, err := sendmmsg(fd, msgs[sent:end])
		if err != nil {
			if (errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN)) && busy < 200 {
				busy++
				time.Sleep(time.Duration(busy) * 20 * time.Microsecond)
				continue
			}
			return sent, err
		}
		busy = 0
		sent += n
	}
	return sent, nil
}

// rxRing is a set of receive buffers wired into mmsghdrs once.
type rxRing struct {
	slab []byte
	size int
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newRxRing(n, size int) *rxRing {
	r := &rxRing{slab: make([]byte, n*size), size: size, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n)}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.slab[i*size]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
	}
	return r
}

func (r *rxRing) buf(i int) []byte {
	return r.slab[i*r.size : i*r.size+int(r.hdrs[i].Len)]
}

// waker lets Close interrupt a Recv blocked in poll.
type waker struct{ efd int }

func newWaker() (waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return waker{-1}, fmt.Errorf("eventfd for close notification: %w", err)
	}
	return waker{fd}, nil
}

func (w waker) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(w.efd, one[:])
}

// fdTransport is the receive loop and close logic shared by raw and udp.
type fdTransport struct {
	fds      []int // receive sockets (first one also sends)
	ring     *rxRing
	pr       *pktRing // raw: the kernel's receive ring on fds[0]; nil: recvmmsg
	wk       waker
	rx       *rxCore
	hdrOff   int                             // bytes before the backplane header in each frame
	learn    func(frame []byte, from uint16) // raw: learn a sender's MAC from a delivered message; may be nil
	c        counters
	closed   atomic.Bool
	recvMu   sync.Mutex // held for a whole Recv; Close waits on it before closing fds
	sendMu   sync.Mutex
	pfds     []unix.PollFd
	blocking bool // one socket: wait in the Go netpoller (see initPoll)
	np       netpollRecv
	closeErr error
	once     sync.Once
	// nextExpire is when the oldest partial message expires (zero: none):
	// a blocking receive wakes then to drop it.
	nextExpire time.Time
	what       string // "raw bp0" / "udp 10.0.0.1:5405", for error messages
	// idleReads counts reads that found nothing: the tests check that
	// Serve mostly skips them.
	idleReads atomic.Uint64
}

func (t *fdTransport) recv(msgs []Message) (int, error) {
	t.recvMu.Lock()
	defer t.recvMu.Unlock()
	t.rx.begin()
	if len(msgs) == 0 {
		return 0, nil
	}
	for {
		n, drained, err := t.pass(msgs)
		if err != nil || n > 0 {
			return n, err
		}
		if t.blocking || !drained {
			continue // fragments only: drain more before sleeping
		}
		if err := t.pollWait(); err != nil {
			return 0, err
		}
	}
}

// pass reads every socket once and turns what came into msgs; in the
// netpoller the read waits for a frame or the reassembly deadline, else it
// does not wait. drained: every read returned fewer frames than it asked
// for, so poll(2) will wait for new ones. recvMu is held.
func (t *fdTransport) pass(msgs []Message) (n int, drained bool, err error) {
	if t.closed.Load() {
		return 0, false, fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
	}
	used := 0
	drained = true
	var now time.Time
	for _, fd := range t.fds {
		want := min(len(msgs)-n, len(t.ring.hdrs)-used)
		if want <= 0 {
			drained = false
			break
		}
		hdrs := t.ring.hdrs[used : used+want]
		for i := range hdrs {
			hdrs[i].Len = 0
			hdrs[i].Hdr.Flags = 0
		}
		var k int
		if t.blocking {
			k, err = t.np.recv(hdrs, t.nextExpire)
		} else {
			k, err = takeFrames(t.pr, fd, hdrs)
		}
		if t.blocking && t.closed.Load() {
			return 0, false, fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				t.idleReads.Add(1)
				continue
			}
			if transientRecvErr(err) {
				t.c.recvErrors.Add(1)
				continue
			}
			if t.closed.Load() {
				return 0, false, fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
			}
			return 0, false, fmt.Errorf("receiving on %s: %w", t.what, err)
		}
		if k == want {
			drained = false
		}
		// After the (possibly blocking) receive: reassembly ages
		// fragments from their arrival.
		now = time.Now()
		n = t.deliver(used, k, msgs, n, now)
		used += k
	}
	if now.IsZero() {
		now = time.Now()
	}
	t.nextExpire = t.rx.reasm.expire(now)
	return n, drained, nil
}

// takeFrames takes the frames waiting on fd without waiting: from its
// receive ring pr if it has one, else by recvmmsg. EAGAIN: none.
func takeFrames(pr *pktRing, fd int, hdrs []unix.Mmsghdr) (int, error) {
	if pr != nil {
		return pr.grab(hdrs)
	}
	return recvmmsg(fd, hdrs, unix.MSG_DONTWAIT)
}

// pollWait waits in poll(2) for a frame on any socket, Close's eventfd, or
// the reassembly deadline.
func (t *fdTransport) pollWait() error {
	timeout := -1
	if !t.nextExpire.IsZero() {
		// Rounded up, and never negative (which would wait for ever).
		timeout = max(0, int(time.Until(t.nextExpire)/time.Millisecond)+1)
	}
	if _, err := unix.Poll(t.pfds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("poll on %s: %w", t.what, err)
	}
	return nil
}

// deliver turns the k frames received into ring slots used.. into
// messages at msgs[n:] and returns the new count.
func (t *fdTransport) deliver(used, k int, msgs []Message, n int, now time.Time) int {
	for i := 0; i < k; i++ {
		slot := used + i
		b := t.ring.buf(slot)
		if t.ring.hdrs[slot].Hdr.Flags&unix.MSG_TRUNC != 0 {
			t.c.framesIn.Add(1)
			t.c.drop(DropAbsurdLength)
			continue
		}
		if len(b) < t.hdrOff {
			t.c.framesIn.Add(1)
			t.c.drop(DropShort)
			continue
		}
		if t.rx.frame(b[t.hdrOff:], now, n, &msgs[n]) {
			if t.learn != nil {
				t.learn(b, msgs[n].From)
			}
			n++
		}
	}
	return n
}

// serve hands received messages to handle, batch by batch, until handle
// returns false (nil), the transport closes (ErrClosed) or receiving fails.
//
// Waiting in the netpoller, it stays inside one RawConn.Read: a read that
// returns fewer frames than it asked for has emptied the socket, and every
// frame queued after it raises a new edge-triggered event, so serve waits
// at once instead of first making the read that would say EAGAIN. Recv
// cannot skip that read: each Read starts by clearing a readiness already
// reported. That read is a system call per wake-up on every board, on the
// commit path of each hop (about a microsecond and a half each on a
// virtual machine).
func (t *fdTransport) serve(msgs []Message, handle func([]Message) bool) error {
	if len(msgs) == 0 {
		return fmt.Errorf("serve on %s: no room for messages", t.what)
	}
	if !t.blocking {
		return t.servePolled(msgs, handle)
	}
	p := &t.np
	want := min(len(msgs), len(t.ring.hdrs))
	hdrs := t.ring.hdrs[:want]
	var (
		stop    bool
		readErr error
	)
	read := func(fd uintptr) bool {
		for {
			t.recvMu.Lock()
			if t.closed.Load() {
				t.recvMu.Unlock()
				return true
			}
			t.rx.begin()
			for i := range hdrs {
				hdrs[i].Len = 0
				hdrs[i].Hdr.Flags = 0
			}
			k, err := takeFrames(t.pr, int(fd), hdrs)
			if err != nil {
				t.recvMu.Unlock()
				switch {
				case errors.Is(err, unix.EAGAIN):
					t.idleReads.Add(1)
					return false
				case transientRecvErr(err):
					t.c.recvErrors.Add(1)
					continue
				}
				readErr = fmt.Errorf("receiving on %s: %w", t.what, err)
				return true
			}
			now := time.Now()
			n := t.deliver(0, k, msgs, 0, now)
			t.nextExpire = t.rx.reasm.expire(now)
			t.recvMu.Unlock()
			if n > 0 && !handle(msgs[:n]) {
				stop = true
				return true
			}
			if !t.nextExpire.Equal(p.deadline) {
				return true // Read again under the new deadline
			}
			if k < want {
				return false
			}
		}
	}
	for {
		if t.closed.Load() {
			return fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
		}
		if !t.nextExpire.Equal(p.deadline) {
			if err := p.file.SetReadDeadline(t.nextExpire); err != nil {
				return fmt.Errorf("recv on %s: %w", t.what, err)
			}
			p.deadline = t.nextExpire
		}
		err := p.conn.Read(read)
		switch {
		case stop:
			return nil
		case readErr != nil:
			return readErr
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.recvMu.Lock()
			t.nextExpire = t.rx.reasm.expire(time.Now())
			t.recvMu.Unlock()
		case err != nil:
			if t.closed.Load() {
				return fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
			}
			return fmt.Errorf("recv on %s: %w", t.what, err)
		}
	}
}

// servePolled is serve waiting in poll(2) on the calling thread, which is
// level-triggered: after a pass that drained every socket it polls at once
// instead of reading again first.
func (t *fdTransport) servePolled(msgs []Message, handle func([]Message) bool) error {
	wait := false
	for {
		t.recvMu.Lock()
		var err error
		switch {
		case t.closed.Load():
			// Close may have closed the descriptors while handle ran.
			err = fmt.Errorf("recv on %s: %w", t.what, ErrClosed)
		case wait:
			err = t.pollWait()
		}
		n, drained := 0, false
		if err == nil {
			t.rx.begin()
			n, drained, err = t.pass(msgs)
		}
		t.recvMu.Unlock()
		if err != nil {
			return err
		}
		if n > 0 && !handle(msgs[:n]) {
			return nil
		}
		wait = drained
	}
}

// Pending polls the receive sockets without waiting.
func (t *fdTransport) Pending() bool {
	if t.closed.Load() {
		return false
	}
	if t.pr != nil {
		return t.pr.ready()
	}
	var pfds [4]unix.PollFd
	ps := pfds[:0]
	for _, fd := range t.fds {
		if len(ps) == cap(ps) {
			break
		}
		ps = append(ps, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	n, err := unix.Poll(ps, 0)
	return err == nil && n > 0
}

// transientRecvErr reports socket errors that describe the link or a peer,
// not this socket: the interface went down (AF_PACKET reports ENETDOWN once
// and keeps the socket usable when it comes back), or an ICMP error for an
// earlier datagram. Recv counts them and keeps receiving.
func transientRecvErr(err error) bool {
	return errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ECONNREFUSED) ||
		errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH)
}

// initPoll prepares waiting. With one socket and netpoll, Recv waits in the
// Go netpoller: the receiving goroutine parks without holding a thread in a
// syscall, so the runtime neither spawns threads nor waits for its monitor
// to take a processor back from a blocked receive (with several boards in a
// process, that wait was most of a commit's latency), and a frame wakes the
// goroutine as soon as epoll reports it. Under load the receive never waits:
// each call drains up to a batch first. Otherwise (several sockets, as udp
// multicast has, or a board alone in its process: RawConfig.WaitInThread),
// Recv polls the sockets and an eventfd that Close signals.
func (t *fdTransport) initPoll(netpoll bool) {
	if netpoll && len(t.fds) == 1 && t.np.open(t.fds[0], t.what) == nil {
		t.blocking = true
		t.np.pr = t.pr
	}
	t.pfds = t.pfds[:0]
	for _, fd := range t.fds {
		t.pfds = append(t.pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	t.pfds = append(t.pfds, unix.PollFd{Fd: int32(t.wk.efd), Events: unix.POLLIN})
}

// netpollRecv receives from one non-blocking socket through the runtime's
// netpoller, on a duplicate of its descriptor that the file owns: closing
// the file wakes a waiting receive at once and closes the duplicate once
// that receive is out, which for Serve may be after its handler has sent
// more on the socket's own descriptor.
type netpollRecv struct {
	file     *os.File
	conn     syscall.RawConn
	read     func(fd uintptr) bool // bound once: no allocation per receive
	pr       *pktRing              // the socket's receive ring, if any
	hdrs     []unix.Mmsghdr
	n        int
	err      error
	deadline time.Time // the read deadline set on file (zero: none)
}

func (p *netpollRecv) open(fd int, what string) error {
	// Non-blocking applies to the socket, so to both descriptors.
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = unix.SetNonblock(fd, false)
		return err
	}
	f := os.NewFile(uintptr(dup), what)
	conn, err := f.SyscallConn()
	if err != nil {
		// Not pollable: wait in poll(2) on the socket instead.
		_ = f.Close()
		_ = unix.SetNonblock(fd, false)
		return err
	}
	p.file, p.conn = f, conn
	p.read = p.readOnce
	return nil
}

// readOnce is the netpoller's callback: false means "nothing yet, wait".
func (p *netpollRecv) readOnce(fd uintptr) bool {
	p.n, p.err = takeFrames(p.pr, int(fd), p.hdrs)
	return !errors.Is(p.err, unix.EAGAIN)
}

// recv waits for at least one frame, or until wake (zero: no limit), when
// it returns EAGAIN.
func (p *netpollRecv) recv(hdrs []unix.Mmsghdr, wake time.Time) (int, error) {
	if !wake.Equal(p.deadline) {
		if err := p.file.SetReadDeadline(wake); err != nil {
			return 0, err
		}
		p.deadline = wake
	}
	p.hdrs = hdrs
	err := p.conn.Read(p.read)
	p.hdrs = nil
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, unix.EAGAIN
	case err != nil:
		return 0, err
	}
	return p.n, p.err
}

func (t *fdTransport) close(extra func() error) error {
	t.once.Do(func() {
		t.closed.Store(true)
		if t.wk.efd >= 0 {
			t.wk.wake()
		}
		var errs []error
		if t.np.file != nil {
			// Wakes a receive waiting in the netpoller at once and returns
			// when it is out; a Serve handler may send until then, so
			// this is not under sendMu.
			if err := t.np.file.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		// No send is in flight past this point, and none starts (closed):
		// the descriptors can go.
		t.sendMu.Lock()
		fds := t.fds
		for _, fd := range fds {
			// Wakes a blocked poll on sockets that support it (udp).
			_ = unix.Shutdown(fd, unix.SHUT_RD)
		}
		t.recvMu.Lock()
		for _, fd := range fds {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, err)
			}
		}
		if t.wk.efd >= 0 {
			_ = unix.Close(t.wk.efd)
		}
		if extra != nil {
			errs = append(errs, extra())
		}
		t.recvMu.Unlock()
		t.sendMu.Unlock()
		if err := errors.Join(errs...); err != nil {
			t.closeErr = fmt.Errorf("close %s: %w", t.what, err)
		}
	})
	return t.closeErr
}

// setRcvBuf asks for a large receive buffer: a 1 MiB message arrives as
// hundreds of back-to-back frames. SO_RCVBUFFORCE needs CAP_NET_ADMIN; without
// it the kernel caps SO_RCVBUF at net.core.rmem_max.
func setRcvBuf(fd, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
}
