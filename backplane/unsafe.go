package backplane

import "unsafe"

// unsafePointer is the one place this package converts to unsafe.Pointer:
// socket addresses and iovecs handed to sendmmsg/recvmmsg.
func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
