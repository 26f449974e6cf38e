package rig

// Backplane frame layout the injector matches (contracts: backplane).
const (
	// EtherType of backplane frames.
	EtherType = 0x88B5
	// ethHeaderLen is the Ethernet header before the backplane header.
	ethHeaderLen = 14
	// fromOffset is the frame offset of the header's little-endian "from" site.
	fromOffset = ethHeaderLen + fromInHeader
	// etherTypeOffset is the frame offset of the big-endian EtherType.
	etherTypeOffset = 12
	// etherTypeIPv4 carries the UDP transport.
	etherTypeIPv4 = 0x0800
	// fromInHeader is the offset of "from" in the backplane header.
	fromInHeader = 8
)
