package rep

import "github.com/seed61e250c8/boardha/inmem"

// CommitInfo describes one commit record: inmem's, so Committed takes what
// Env.Update returns.
type CommitInfo = inmem.CommitInfo
