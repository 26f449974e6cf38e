package board

import (
	"fmt"
	"net/netip"
)

type transportKind uint8

const (
	transportNone transportKind = iota
	transportRaw
	transportUDP
	transportMem
)

// Transport selects and configures the backplane transport. Build one with
// RawTransport, UDPTransport or MemTransport.
type Transport struct {
	kind     transportKind
	iface    string
	listen   string
	mem      memHub
	inThread bool
}

// RawTransport sends raw Ethernet frames (EtherType 0x88B5) on the named
// backplane interface. Needs CAP_NET_RAW.
func RawTransport(iface string) Transport { return Transport{kind: transportRaw, iface: iface} }

// ReceiveInThread returns the raw transport t waiting for frames on its
// receiving thread (backplane.RawConfig.WaitInThread) rather than in the Go
// netpoller: better for a replica alone in its process, as boardd runs one
// (on the namespace rig, boardd replicas gave a fifth more commits/s at 64
// writers and a fifth lower latency at one); worse for several boards
// sharing a process, and slightly worse for a master whose writers share
// its process (one writer: median p50 108 against 95 µs; 64: equal).
// Other transports ignore it.
func (t Transport) ReceiveInThread() Transport {
	t.inThread = true
	return t
}

// UDPTransport sends UDP datagrams, for rigs without raw sockets and routed
// setups. listen is this board's "host:port"; if empty, Config.Peers[Site]
// is used. Peers' addresses come from Config.Peers; group messages go to each
// peer by unicast.
func UDPTransport(listen string) Transport { return Transport{kind: transportUDP, listen: listen} }

func (t Transport) String() string {
	switch t.kind {
	case transportRaw:
		if t.inThread {
			return "raw:" + t.iface + " (receive in thread)"
		}
		return "raw:" + t.iface
	case transportUDP:
		return "udp:" + t.listen
	case transportMem:
		return "mem"
	}
	return "none"
}

func (t Transport) check(c Config) error {
	switch t.kind {
	case transportNone:
		return fmt.Errorf("is not set; use board.RawTransport, board.UDPTransport or board.MemTransport")
	case transportRaw:
		if t.iface == "" || len(t.iface) > 15 {
			return fmt.Errorf("raw interface name %q invalid; allowed 1..15 characters", t.iface)
		}
	case transportUDP:
		listen := t.listen
		if listen == "" {
			listen = c.Peers[c.Site]
		}
		if _, err := netip.ParseAddrPort(listen); err != nil {
			return fmt.Errorf("udp listen address %q invalid (%v); allowed ip:port given in UDPTransport or Peers[Site]", listen, err)
		}
		for s, a := range c.Peers {
			if _, err := netip.ParseAddrPort(a); err != nil {
				return fmt.Errorf("udp address %q of peer site %d invalid (%v); allowed ip:port", a, s, err)
			}
		}
	case transportMem:
		if t.mem == nil {
			return fmt.Errorf("mem hub is nil; pass backplane.NewMemHub(...)")
		}
	}
	return nil
}
