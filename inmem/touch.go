//go:build !race

package inmem

// raceEnabled: the binary is built with the race detector.
const raceEnabled = false

// touchPages reads the first byte of every ps-byte page of b and returns their
// sum. The importer may be writing one of these pages at the same moment: the
// value read does not matter, only that this process accessed the page (see
// prefaulter).
func touchPages(b []byte, ps int) byte {
	var sum byte
	for i := 0; i < len(b); i += ps {
		sum += b[i]
	}
	return sum
}
