package board_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/board"
)

// openMaster opens a one-board group on an in-process hub and makes it
// master. Real boards use board.RawTransport("bp0") and list their peers.
func openMaster(ctx context.Context, hub *backplane.MemHub, shm string) *board.Board {
	b, err := board.Open(board.Config{Site: 1, Group: "fib", Priority: 100,
		Peers: map[uint16]string{1: ""}, Transport: board.MemTransport(hub), ShmName: shm,
		PoolSize: 4 << 20, LogSize: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Start(ctx, board.StartMaster); err != nil {
		log.Fatal(err)
	}
	if _, err := b.WaitMaster(ctx); err != nil {
		log.Fatal(err)
	}
	return b
}

func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub := backplane.NewMemHub(backplane.MemConfig{})
	b, err := board.Open(board.Config{
		Site: 1, Group: "fib", Priority: 100,
		Peers:     map[uint16]string{1: ""},
		Transport: board.MemTransport(hub), // board.RawTransport("bp0") on a chassis
		AckPolicy: board.AckQuorum,
		PoolSize:  4 << 20, LogSize: 1 << 20,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(ctx, board.StartClient); err != nil {
		log.Fatal(err)
	}
	master, err := b.WaitMaster(ctx) // a group of one elects itself
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("master:", master, "role:", b.Stat().Role)
	// Output: master: 1 role: master
}

func ExampleBoard_Update() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := openMaster(ctx, backplane.NewMemHub(backplane.MemConfig{}), "")
	defer b.Close()

	c, err := b.Update(ctx, func(tx *board.Tx) error {
		return tx.Bucket("routes").Put([]byte("10.0.0.0/8"), []byte("eth1"))
	})
	if err != nil {
		log.Fatal(err) // ErrNotMaster on a replica: use Apply there
	}
	fmt.Println("committed:", c.LSN > 0, "perm:", c.Perm)
	// Output: committed: true perm: true
}

func ExampleBoard_View() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := openMaster(ctx, backplane.NewMemHub(backplane.MemConfig{}), "")
	defer b.Close()
	for _, r := range [][2]string{{"10.0.0.0/8", "eth1"}, {"10.1.0.0/16", "eth2"}, {"192.168.0.0/16", "eth3"}} {
		if _, err := b.Apply(ctx, board.Put("routes", []byte(r[0]), []byte(r[1]))); err != nil {
			log.Fatal(err)
		}
	}

	err := b.View(func(tx *board.Tx) error {
		c := tx.Bucket("routes").Cursor()
		for k, v := c.Seek([]byte("10.")); k != nil && k[0] == '1' && k[1] == '0'; k, v = c.Next() {
			fmt.Printf("%s -> %s\n", k, v) // k and v are valid only inside View
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 10.0.0.0/8 -> eth1
	// 10.1.0.0/16 -> eth2
}

func ExampleBoard_Apply() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hub := backplane.NewMemHub(backplane.MemConfig{})
	peers := map[uint16]string{1: "", 2: ""}
	var boards []*board.Board
	for site := uint16(1); site <= 2; site++ {
		b, err := board.Open(board.Config{Site: site, Group: "fib", Priority: 100, Peers: peers,
			Transport: board.MemTransport(hub), PoolSize: 4 << 20, LogSize: 1 << 20})
		if err != nil {
			log.Fatal(err)
		}
		defer b.Close()
		boards = append(boards, b)
	}
	master, replica := boards[0], boards[1]
	if err := master.Start(ctx, board.StartMaster); err != nil {
		log.Fatal(err)
	}
	if err := replica.Start(ctx, board.StartClient); err != nil {
		log.Fatal(err)
	}
	if _, err := replica.WaitMaster(ctx); err != nil {
		log.Fatal(err)
	}

	// On the replica: forwarded to the master over the backplane.
	c, err := replica.Apply(ctx,
		board.Put("arp", []byte("10.0.0.1"), []byte("02:00:00:00:00:01")),
		board.Delete("arp", []byte("10.0.0.9")))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("perm:", c.Perm)
	master.View(func(tx *board.Tx) error {
		fmt.Printf("master has %s\n", tx.Bucket("arp").Get([]byte("10.0.0.1")))
		return nil
	})
	// Output:
	// perm: true
	// master has 02:00:00:00:00:01
}

func ExampleAttach() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := fmt.Sprintf("boardha-example-%d", os.Getpid())
	b := openMaster(ctx, backplane.NewMemHub(backplane.MemConfig{}), name)
	defer b.Close() // removes the region
	if _, err := b.Apply(ctx, board.Put("routes", []byte("10.0.0.0/8"), []byte("eth1"))); err != nil {
		log.Fatal(err)
	}

	// In another process on the same board (here the same one):
	r, err := board.Attach(name)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	r.View(func(tx *board.Tx) error {
		fmt.Printf("%s\n", tx.Bucket("routes").Get([]byte("10.0.0.0/8")))
		return nil
	})
	// Output: eth1
}
