//go:build race

package inmem

// raceEnabled: the binary is built with the race detector.
const raceEnabled = true

// touchPages reads nothing under the race detector: the prefaulter's reads of
// pages the importer may be writing are deliberate and their values unused,
// but the detector would report them. Race builds keep the prefaulter's
// goroutine and its life cycle, only without the speed-up.
func touchPages(b []byte, ps int) byte { return 0 }
