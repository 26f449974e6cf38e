package rig

// Backplane frame layout the injector matches (contracts: backplane).
const (
	// EtherType of backplane frames.
	EtherType = 0x88B5
	// ethHeaderLen is the Ethernet header before the backplane header.
	ethHeaderLen = 14
	// fromOffset is the frame offset of the header's little-endian "from" site.
	fromOffset = ethHeaderLen + 8
	// etherTypeOffset is the frame offset of the big-endian EtherType.
	etherTypeOffset = 12
)
