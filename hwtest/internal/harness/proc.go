package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ErrSupervisorClosed: Start after Close.
var ErrSupervisorClosed = errors.New("harness: supervisor closed; start processes before cleanup")

// Proc is one process the Supervisor started.
type Proc struct {
	Name    string
	Pid     int
	LogPath string // stdout and stderr of the process

	cmd     *exec.Cmd
	logf    *os.File
	done    chan struct{}
	waitErr error
	started time.Time
	exited  time.Time
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the exit status after Done (nil for a clean exit).
func (p *Proc) Err() error {
	<-p.done
	return p.waitErr
}

// Kill sends SIGKILL to the process (by pid) and waits until it is reaped.
// It returns the time the signal was sent. Killing an exited process is a
// no-op returning the zero time.
func (p *Proc) Kill() time.Time {
	if p.Exited() {
		return time.Time{}
	}
	at := time.Now()
	// Through the os.Process handle (a pidfd on Linux): after the
	// process was reaped the signal cannot reach a reused pid.
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return at
}

// Stop sends SIGTERM and waits up to grace for the exit, then SIGKILL.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.waitErr
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(grace):
	}
	p.Kill()
	return fmt.Errorf("harness: %s (pid %d) ignored SIGTERM for %v and was killed", p.Name, p.Pid, grace)
}

// Tail returns the last n bytes of the process's log, for failure messages.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log %s unreadable: %v)", p.LogPath, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Supervisor starts processes and guarantees they are all gone after Close:
// every process is killed by its own pid (never by name) and reaped.
type Supervisor struct {
	mu     sync.Mutex
	procs  []*Proc
	closed bool
}

// Start starts cmd with its output appended to logPath and returns the
// running process. cmd must not have been started; its Stdout/Stderr are
// replaced.
func (s *Supervisor) Start(name string, cmd *exec.Cmd, logPath string) (*Proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%w: %s", ErrSupervisorClosed, name)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: log file for %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The processes die with the test even when it is killed outright (or
	// dies of a closed output pipe) and cannot run its cleanups, as bench
	// and boardd rig arrange for theirs: a boardd left running holds its
	// board's raw socket and CPU after the scenario.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("harness: starting %s (%s): %w", name, cmd.Path, err)
	}
	p := &Proc{Name: name, Pid: cmd.Process.Pid, LogPath: logPath, cmd: cmd, logf: logf,
		done: make(chan struct{}), started: time.Now()}
	go func() {
		p.waitErr = cmd.Wait()
		p.exited = time.Now()
		logf.Close()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return p, nil
}

// Live returns the processes that have not exited.
func (s *Supervisor) Live() []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Proc
	for _, p := range s.procs {
		if !p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

// Close kills every process still running and waits for all of them. It is
// idempotent; Start fails afterwards.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.closed = true
	procs := append([]*Proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
}

// abortError marks a condition error that ends WaitFor at once.
type abortError struct{ err error }

func (e *abortError) Error() string { return e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// Abort wraps err so that WaitFor returns it at once instead of polling on
// (the awaited thing can no longer happen, e.g. the process exited).
func Abort(err error) error { return &abortError{err} }

// WaitFor polls cond every interval until it returns true or an error, or
// ctx ends (then the last error from cond, or the context's, is returned
// with what). It is the only way scenarios wait: on a condition with a
// deadline, never a fixed sleep.
func WaitFor(ctx context.Context, what string, interval time.Duration, cond func(context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		var ab *abortError
		if errors.As(err, &ab) {
			return fmt.Errorf("harness: gave up waiting for %s: %w", what, ab.err)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("harness: timed out waiting for %s: last error: %w", what, last)
			}
			return fmt.Errorf("harness: timed out waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
