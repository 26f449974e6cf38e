package backplane

// Message is one delivered or sent message.
type Message struct {
	From, To uint16 // To is the destination site or AllSites
	Type     uint8
	Payload  []byte // valid until the next Recv on the transport that returned it
}

// Transport sends and receives messages among the sites of one group.
type Transport interface {
	// Send delivers payload to site to, or to every other site of the group
	// when to is AllSites. The payload may be reused once Send returns.
	// Delivery is best effort (datagram semantics): the layer above
	// retransmits. Payloads above MaxMessageSize fail with ErrMessageTooLarge.
	Send(to uint16, typ uint8, payload []byte) error
	// Recv blocks until at least one message is available and fills msgs
	// with up to len(msgs) messages. Payloads are valid until the next Recv.
	// After Close it returns ErrClosed.
	Recv(msgs []Message) (int, error)
	// Pending reports whether frames wait to be received. It does not
	// receive them, may race with a concurrent Recv, and costs one
	// non-blocking system call: a board asks it before it declares a
	// silent peer dead, so that its own scheduling delay is not mistaken
	// for the peer's.
	Pending() bool
	// Stats returns a snapshot of the transport's counters.
	Stats() Stats
	// Close releases the transport and unblocks a pending Recv.
	Close() error
}
