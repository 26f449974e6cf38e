//go:build !repenv

package rep

// CommitInfo describes one commit record. It mirrors inmem.CommitInfo (and
// becomes an alias of it once inmem is part of the build).
type CommitInfo struct {
	LSN   uint64 // commit record LSN
	End   uint64 // log end after it
	Gen   uint32
	Txn   uint64
	Chain uint64
}
