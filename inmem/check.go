package inmem

import (
	"bytes"
	"fmt"
)

// Check verifies the transaction's whole tree: every page complete and valid,
// separator keys bounding their subtrees, no page reachable twice, catalog entries
// well formed (the bbolt Tx.Check idea). Use it in tests and after suspicious faults.
func (tx *Tx) Check() error {
	if tx.meta.root == 0 {
		return nil // no catalog yet
	}
	seen := newPageBits(tx.npages)
	return tx.checkTree(tx.meta.root, 0, nil, nil, true, &seen)
}

// Check runs Tx.Check on the current snapshot.
func (e *Env) Check() error {
	return e.View(func(tx *Tx) error { return tx.Check() })
}

func (tx *Tx) checkTree(pgno uint64, depth int, lo, hi []byte, catalog bool, seen *pageBits) error {
	if depth >= maxDepth {
		return corrupt(pgno, "tree deeper than the depth limit")
	}
	if !seen.add(pgno) {
		return corrupt(pgno, "page reachable twice")
	}
	p, err := tx.page(pgno)
	if err != nil {
		return err
	}
	if err := validatePage(p, pgno, tx.ps); err != nil {
		return fmt.Errorf("inmem: %w: %w", ErrCorrupt, err)
	}
	n := pCount(p)
	for i := 0; i < n; i++ {
		raw, _ := entryAt(p, i)
		k := rawKey(pType(p), raw)
		if (i > 0 || pType(p) == pageLeaf) && (lo != nil && bytes.Compare(k, lo) < 0 || hi != nil && bytes.Compare(k, hi) >= 0) {
			return corrupt(pgno, fmt.Sprintf("key %q of entry %d outside its parent's bounds", k, i))
		}
		if pType(p) == pageBranch {
			clo, chi := lo, hi
			if i > 0 {
				clo = k
			}
			if i+1 < n {
				chi, _ = keyAt(p, i+1)
			}
			child, _ := childAt(p, i)
			if err := tx.checkTree(child, depth+1, clo, chi, catalog, seen); err != nil {
				return err
			}
			continue
		}
		_, v, ovpg, vlen, ovfl := leafValue(raw)
		if ovfl {
			if !seen.add(ovpg) {
				return corrupt(ovpg, "overflow run reachable twice")
			}
			if _, err := tx.overflow(ovpg, vlen); err != nil {
				return err
			}
		}
		if catalog {
			_, root, ok := catEntry(v)
			if ovfl || !ok {
				return corrupt(pgno, fmt.Sprintf("catalog entry %q malformed", k))
			}
			if err := tx.checkTree(root, 0, nil, nil, false, seen); err != nil {
				return err
			}
		}
	}
	if depth > 0 && n == 0 {
		return corrupt(pgno, "empty non-root page")
	}
	return nil
}
