package logbuf_test

import (
	"fmt"

	"github.com/seed61e250c8/boardha/logbuf"
)

// A master appends records; a replica receives them encoded and appends them at the same
// LSNs.
func Example() {
	area := make([]byte, logbuf.ControlSize+64<<10) // in practice: pages of an shm region
	master, err := logbuf.Format(area, 0, logbuf.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	master.Append(logbuf.Record{Type: logbuf.RecPut, Txn: 1, Body: []byte("routes\x00k\x00v")})
	commit, _ := master.Append(logbuf.Record{Type: logbuf.RecCommit, Txn: 1})

	batch, next, _ := master.ReadEncoded(0, 64<<10, nil)
	replica, _ := logbuf.Format(make([]byte, logbuf.ControlSize+64<<10), 0, logbuf.Options{})
	if err := replica.AppendEncoded(batch); err != nil {
		fmt.Println(err)
		return
	}
	rec, _, _ := replica.Read(commit, nil)
	fmt.Println(next == replica.End(), rec.Type == logbuf.RecCommit, rec.LSN)
	// Output: true true 42
}
