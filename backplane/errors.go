package backplane

import "errors"

// Sentinel errors. Match them with errors.Is; the returned errors wrap them
// with the sizes, sites or interface names involved.
var (
	// ErrClosed is returned by Send and Recv once Close was called.
	ErrClosed = errors.New("backplane: transport closed; open a new transport to keep talking")
	// ErrMessageTooLarge is returned by Send for payloads above MaxMessageSize.
	ErrMessageTooLarge = errors.New("backplane: message larger than the 1 MiB limit; split it (e.g. send pages or log batches separately)")
	// ErrUnknownSite is returned by Send when a unicast destination has no address.
	ErrUnknownSite = errors.New("backplane: no address known for the destination site; add it to the transport's site list")
	// ErrBadConfig is returned by the constructors for unusable settings.
	ErrBadConfig = errors.New("backplane: bad transport configuration; fix the named field")
	// ErrFilterUnavailable is returned by NewRaw when the eBPF socket filter
	// cannot be loaded or attached (no CAP_BPF, old kernel); set
	// RawConfig.NoFilter to run with user-space group filtering only.
	ErrFilterUnavailable = errors.New("backplane: eBPF socket filter unavailable; run with CAP_BPF/CAP_NET_ADMIN or set NoFilter")

	// Frame decoding errors from DecodeFrame; transports count them as drops.
	ErrShortFrame   = errors.New("backplane: frame shorter than its header or declared length; frame dropped")
	ErrBadMagic     = errors.New("backplane: frame magic is not 0xB0A7; not a backplane frame, dropped")
	ErrBadVersion   = errors.New("backplane: unsupported frame version; upgrade the older board")
	ErrBadCRC       = errors.New("backplane: frame crc32c mismatch; corrupted in flight, dropped")
	ErrAbsurdLength = errors.New("backplane: frame declares an impossible length or fragment count; dropped")
	ErrBadFragment  = errors.New("backplane: fragment index not below fragment count; dropped")
)
