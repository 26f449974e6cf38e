//go:build race

package board

// raceEnabled: the race detector makes sync.Pool drop items at random
// (to expose misuse), so pooled objects are allocated again and
// allocation counts mean nothing.
const raceEnabled = true
