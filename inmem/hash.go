package inmem

import "encoding/binary"

// ContentHash is an order-independent hash over every (database, key, value) of
// the current snapshot, plus every database name: equal on two environments with
// the same content whatever their page layout.
func (e *Env) ContentHash() uint64 {
	var h uint64
	_ = e.View(func(tx *Tx) error {
		var err error
		h, err = tx.ContentHash()
		return err
	})
	return h
}

// ContentHash hashes the transaction's view (see Env.ContentHash). Corruption is
// returned, not hashed.
func (tx *Tx) ContentHash() (uint64, error) {
	var sum uint64
	for _, name := range tx.DBNames() {
		nh := fnv(fnvOffset, []byte(name))
		sum += mix(nh)
		db := tx.DB(name)
		if db == nil {
			break
		}
		c := db.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var l [4]byte
			binary.LittleEndian.PutUint32(l[:], uint32(len(k)))
			h := fnv(nh, l[:])
			h = fnv(h, k)
			sum += mix(fnv(h, v))
		}
	}
	return sum, tx.err
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// mix finalises a hash so that summing many of them stays well distributed.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb3f97f4a7c35
	x ^= x >> 33
	return x
}
