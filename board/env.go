package board

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/seed61e250c8/boardha/backplane"
	"github.com/seed61e250c8/boardha/inmem"
	"github.com/seed61e250c8/boardha/shm"
)

type memHub = *backplane.MemHub

// MemTransport connects boards of one process through hub (tests, the
// simulator, examples). Every board of the group uses the same hub.
func MemTransport(hub *backplane.MemHub) Transport { return Transport{kind: transportMem, mem: hub} }

func envOptions(c Config) inmem.Options {
	return inmem.Options{Name: c.ShmName, PoolSize: c.PoolSize, PageSize: c.PageSize, LogSize: c.LogSize, Mode: 0o600}
}

// openEnv creates the environment. A named region left by a dead process is
// taken over with its contents (the board then rejoins by verifying its log
// against the master); one held by a live process is an error.
func openEnv(c Config, log *slog.Logger) (*inmem.Env, error) {
	env, err := inmem.Create(envOptions(c))
	if err == nil || c.ShmName == "" || !errors.Is(err, shm.ErrExists) {
		if err != nil {
			return nil, mapErr(fmt.Errorf("board: creating the environment (pool %d bytes, log %d bytes): %w", c.PoolSize, c.LogSize, err))
		}
		return env, nil
	}
	env, err = inmem.Open(c.ShmName)
	if err != nil {
		if errors.Is(err, inmem.ErrWriterActive) {
			return nil, fmt.Errorf("board: shared memory %q is in use by a live process; stop it or pick another ShmName: %w", c.ShmName, err)
		}
		// Unusable leftovers (corrupt, other geometry): start empty; the
		// group re-initialises this board.
		log.Warn("discarding unusable shared memory region", "name", c.ShmName, "err", err)
		if rerr := shm.Remove(c.ShmName); rerr != nil {
			return nil, fmt.Errorf("board: removing unusable shared memory %q: %w (opening it failed: %v)", c.ShmName, rerr, err)
		}
		env, err = inmem.Create(envOptions(c))
		if err != nil {
			return nil, mapErr(fmt.Errorf("board: creating the environment: %w", err))
		}
		return env, nil
	}
	log.Info("took over shared memory left by a previous process", "name", c.ShmName, "lsn", env.Log().End())
	return env, nil
}

// closeEnv releases the environment; a named region is removed unless the
// configuration keeps it.
func closeEnv(env *inmem.Env, c Config) error {
	if c.ShmName == "" || c.KeepShm {
		return env.Close()
	}
	if env.Name() == c.ShmName {
		return env.Remove()
	}
	// An imported environment, renamed to the configured name by
	// rep.EnvStorage.
	err := env.Close()
	if rerr := shm.Remove(c.ShmName); err == nil {
		err = rerr
	}
	return err
}

func newTransport(c Config) (backplane.Transport, error) {
	group := backplane.GroupID(c.Group)
	switch c.Transport.kind {
	case transportMem:
		return wrapTr(backplane.NewMem(c.Transport.mem, c.Site))
	case transportUDP:
		sites := map[uint16]netip.AddrPort{}
		for s, a := range c.Peers {
			sites[s] = netip.MustParseAddrPort(a) // validated
		}
		if c.Transport.listen != "" {
			sites[c.Site] = netip.MustParseAddrPort(c.Transport.listen)
		}
		return wrapTr(backplane.NewUDP(backplane.UDPConfig{Site: c.Site, Group: group, Sites: sites}))
	case transportRaw:
		return wrapTr(backplane.NewRaw(backplane.RawConfig{Site: c.Site, Group: group, Interface: c.Transport.iface,
			WaitInThread: c.Transport.inThread}))
	}
	return nil, fmt.Errorf("%w: no transport configured", ErrInvalidConfig)
}

func wrapTr(t backplane.Transport, err error) (backplane.Transport, error) {
	if err != nil {
		return nil, fmt.Errorf("board: opening the backplane transport: %w", err)
	}
	return t, nil
}

func fillEnvStat(st *Stat, env *inmem.Env) {
	l := env.Log()
	st.LSN = l.End()
	st.Log.Begin, st.Log.End = l.Begin(), l.End()
	st.Log.Size = l.Stats().Capacity
	es := env.Stats()
	st.Pool = PoolStat{PageSize: es.Pages.PageSize, TotalPages: es.Pages.TotalPages, UsedPages: es.Pages.UsedPages,
		HeldPages: es.PendingPages, Snapshots: es.Snapshots, OldestBehind: es.Txid - min(es.OldestTxid, es.Txid)}
	for _, r := range env.Region().Readers() {
		rs := ReaderStat{PID: r.PID, Reading: r.HasTxid}
		if r.HasTxid {
			rs.Behind = es.Txid - min(r.Txid, es.Txid)
		}
		st.Pool.Readers = append(st.Pool.Readers, rs)
	}
}
