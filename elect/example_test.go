package elect_test

import (
	"fmt"
	"time"

	"github.com/seed61e250c8/boardha/elect"
)

// A driver's loop for a three-site group over a perfect, instant network:
// start every site, move outboxes to their destinations, announce the winner.
func Example() {
	sites := map[uint16]*elect.Election{}
	logs := map[uint16]uint64{1: 100, 2: 300, 3: 200} // LSNs, all of gen 4
	for id := uint16(1); id <= 3; id++ {
		sites[id] = elect.New(elect.Config{Self: id, Priority: 10, Timeout: time.Second, Seed: uint64(id)})
	}
	var queue []elect.Out
	now := time.Duration(0)
	for id := uint16(1); id <= 3; id++ {
		sites[id].Start(now, 4, logs[id], 3, 0)
		queue = append(queue, sites[id].Outbox()...)
	}
	for len(queue) > 0 {
		o := queue[0]
		queue = queue[1:]
		for id, e := range sites {
			switch {
			case o.Kind == elect.KindVote1 && id != o.Vote.Site:
				e.StepVote1(now, o.Vote)
			case o.Kind == elect.KindVote2 && id == o.To:
				e.StepVote2Vote(now, o.Vote)
			}
			queue = append(queue, e.Outbox()...)
		}
	}
	for id := uint16(1); id <= 3; id++ {
		if egen, ok := sites[id].Won(); ok {
			fmt.Printf("site %d won egen %d\n", id, egen)
		}
	}
	// Output: site 2 won egen 1
}
