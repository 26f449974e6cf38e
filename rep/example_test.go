package rep_test

import (
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/ckpt"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/rep"
)

// A driver loop for one site: feed the node, perform each Ready through
// EnvStorage, send the messages, Advance.
func Example() {
	opt := inmem.Options{PoolSize: 4 << 20, LogSize: 1 << 20}
	env, err := inmem.Create(opt)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Close()
	st := rep.NewEnvStorage(env, opt, ckpt.Policy{KBytes: 64})
	defer st.Close()
	node, err := rep.NewNode(rep.Config{Site: 1, Priority: 100, AckPolicy: rep.AckQuorum}, st)
	if err != nil {
		fmt.Println(err)
		return
	}
	var now time.Duration
	drive := func() {
		for {
			rd := node.Ready()
			if rd.Empty() {
				node.Advance(rd)
				return
			}
			// Send rd.Messages on the backplane here.
			res, err := st.Apply(&rd, node.Status().Role == rep.RoleMaster)
			if err != nil {
				fmt.Println("apply:", err) // the node notices and recovers
			}
			if res.InitFailed {
				node.InitFailed() // the copy ends; a fresh one begins after a back-off
			}
			for _, ev := range rd.Events {
				fmt.Println("event", ev.Kind)
			}
			node.Advance(rd)
		}
	}
	node.Start(now, rep.StartMaster)
	drive()
	ci, err := st.Env().Update(func(tx *inmem.Tx) error {
		db, err := tx.CreateDBIfNotExists("routes")
		if err != nil {
			return err
		}
		return db.Put([]byte("10.0.0.0/8"), []byte("port 3"))
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	node.Committed(now, ci)
	drive()
	// A lone site's commits are permanent at once.
	fmt.Println("perm:", node.Status().PermLSN == ci.LSN)
	// Output:
	// event MASTER
	// perm: true
}
