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

// Server is implemented by transports (raw, udp) that can hand received
// messages to a function batch by batch without returning in between,
// which lets them wait for the next frame without a system call that
// would only say "nothing yet". The package's Serve uses it when there.
type Server interface {
	// Serve passes each batch of received messages (at most len(msgs))
	// to handle until handle returns false, when it returns nil, or until
	// receiving fails (ErrClosed after Close). Payloads are valid until
	// handle returns. Only one Serve or Recv may run at a time.
	Serve(msgs []Message, handle func([]Message) bool) error
}

// Serve receives on tr and passes each batch to handle, as Server.Serve,
// through Recv when tr does not implement Server.
func Serve(tr Transport, msgs []Message, handle func([]Message) bool) error {
	if s, ok := tr.(Server); ok {
		return s.Serve(msgs, handle)
	}
	for {
		n, err := tr.Recv(msgs)
		if err != nil {
			return err
		}
		if !handle(msgs[:n]) {
			return nil
		}
	}
}
