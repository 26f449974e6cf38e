package shm_test

import (
	"fmt"
	"os"

	"github.com/seed61e250c8/boardha/shm"
)

// A writer creates a region, takes the writer lock and allocates pages; a reader (here in
// the same process, normally another one) attaches read-only and publishes its snapshot;
// the writer releases freed pages only once no older snapshot is visible.
func Example() {
	name := fmt.Sprintf("boardha-example-%d", os.Getpid())
	w, err := shm.Create(name, shm.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shm.Remove(name)
	defer w.Close()
	if err := w.LockWriter(); err != nil {
		fmt.Println(err)
		return
	}
	alloc := w.Allocator()
	pg, _ := alloc.Alloc(2)
	page, _ := w.Pages(pg, 2)
	copy(page, "hello")

	r, err := shm.Attach(name, shm.ReadOnly)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	slot, _ := r.AcquireReader()
	slot.Set(1) // reading the snapshot of txn 1

	alloc.Free(pg, 2, 2) // txn 2 frees the pages snapshot 1 still sees
	oldest, _ := w.OldestReader()
	alloc.Release(oldest)
	fmt.Println("pending while snapshot 1 is read:", alloc.Stats().PendingPages)
	slot.Release()
	if _, ok := w.OldestReader(); !ok {
		alloc.Release(2)
	}
	fmt.Println("pending after the reader left:", alloc.Stats().PendingPages)
	// Output:
	// pending while snapshot 1 is read: 2
	// pending after the reader left: 0
}
