package hwtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/seed61e250c8/boardha/board"
	"github.com/seed61e250c8/boardha/hwtest/internal/harness"
)

// TestAttachedReaderAcrossReboot: a process reading a replica's tables from
// its shared memory (board.Attach), as a forwarding agent does, while
// writes go on. The replica is killed and restarted with empty memory: the
// reader must learn its region is gone (board.ErrOwnerGone) rather than go
// on serving a frozen copy, and attaching again must show the group's
// writes, those committed while the board was down included.
func TestAttachedReaderAcrossReboot(t *testing.T) {
	s := newScenario(t, 3, nil, func(o *harness.ClusterOptions) { o.NamedShm = true })
	m := s.start()
	s.monitor()
	w := s.writer("rd", 2, nil)
	s.waitPerm(50, 30*time.Second, "commits before the reader attaches")
	var replica uint16
	for _, site := range s.cl.Sites() {
		if site != m {
			replica = site
			break
		}
	}
	// The agent reads as a forwarding agent would: when its board's
	// region is gone it attaches again (the restarted board's region, and
	// again if an internal init replaces that one).
	ag := &attachedAgent{name: s.cl.Node(replica).Shm}
	defer ag.close()
	// sees waits until the agent shows the value of the newest Perm write
	// made after it began waiting: proof it follows the group.
	sees := func(what string) {
		t.Helper()
		s.waitPerm(10, 30*time.Second, "commits for the reader to see")
		var want harness.Write
		for _, wr := range s.hist.Writes() {
			if wr.Outcome == harness.Perm {
				want = wr
			}
		}
		ctx, cancel := s.within(30 * time.Second)
		defer cancel()
		err := harness.WaitFor(ctx, what, 5*time.Millisecond, func(context.Context) (bool, error) {
			var got string
			err := ag.view(func(tx *board.Tx) error { got = string(tx.Bucket(s.db).Get([]byte(want.Key))); return nil })
			return err == nil && got == want.Value, err
		})
		if err != nil {
			t.Fatalf("%s: the reader of site %d's region never showed %s=%q: %v", what, replica, want.Key, want.Value, err)
		}
	}
	sees("before the reboot")

	killed := s.cl.Kill(replica)
	s.fault("SIGKILL replica %d with a reader attached to its region", replica)
	old := ag.r
	ctx, cancel := s.within(30 * time.Second)
	defer cancel()
	err := harness.WaitFor(ctx, "the reader to learn its board died", time.Millisecond, func(context.Context) (bool, error) {
		err := old.View(func(*board.Tx) error { return nil })
		return errors.Is(err, board.ErrOwnerGone), nil
	})
	if err != nil {
		t.Fatalf("views of the dead board's region still succeed: %v", err)
	}
	noticed := time.Since(killed)
	s.waitPerm(20, 30*time.Second, "commits while the replica is down")
	if err := s.cl.Start(ctx, replica, false); err != nil {
		t.Fatal(err)
	}
	s.fault("restart site %d with empty memory", replica)
	sees("after the reboot")
	if ag.attaches < 2 {
		t.Fatalf("the reader attached %d times: it must have attached again to the restarted board's region", ag.attaches)
	}
	w.Stop()
	s.verify()
	s.finish(fmt.Sprintf("reader-noticed-death-after=%v reader-attaches=%d", noticed.Round(time.Millisecond), ag.attaches))
}

// attachedAgent reads a board's region from this process and attaches again
// whenever the board has closed or replaced it (board.ErrOwnerGone).
type attachedAgent struct {
	name     string
	r        *board.Reader
	attaches int
}

func (a *attachedAgent) view(fn func(*board.Tx) error) error {
	for range 3 {
		if a.r == nil {
			r, err := board.Attach(a.name)
			if err != nil {
				return err
			}
			a.r, a.attaches = r, a.attaches+1
		}
		err := a.r.View(fn)
		if !errors.Is(err, board.ErrOwnerGone) {
			return err
		}
		a.close()
	}
	return fmt.Errorf("region %s: %w three times in a row", a.name, board.ErrOwnerGone)
}

func (a *attachedAgent) close() {
	if a.r != nil {
		_ = a.r.Close()
		a.r = nil
	}
}
