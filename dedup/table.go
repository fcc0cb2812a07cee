package dedup

import (
	"math/bits"
	"sync"
)

// shard is one part of the set: an open-addressing table (linear probing)
// of the fingerprints whose low byte is the shard's number, and the ids of
// its requests not yet settled. A slot is 0 when empty, else the
// fingerprint with its low byte replaced by its bucket's tag; a slot whose
// tag is not live is dead: lookups pass over it, inserts reuse it, and a
// rebuild drops it.
type shard struct {
	mu      sync.Mutex
	slots   []uint64
	used    int   // slots not empty, live or dead
	swept   int64 // epoch of the last rebuild
	pending map[uint64]*Claim
	_       [64]byte // one cache line apart from the next shard's lock
}

// Loads of the table: rebuilt when used passes maxLoad, to targetLoad of
// its live ids, so it holds 8/0.88 = 9.1 to 8/0.78 = 10.3 bytes an id
// (dead slots aside) and a new id's probe sequence stays short.
const (
	maxLoadNum, maxLoadDen = 22, 25 // 0.88
	targetNum, targetDen   = 39, 50 // 0.78
	minSlots               = 16
)

// home maps a fingerprint onto [0, n) without a division (Lemire's fast
// range), from the bits a slot keeps: its low byte is the shard's, or the
// tag once stored.
func home(fp uint64, n int) int {
	hi, _ := bits.Mul64(fp&^0xff, uint64(n))
	return int(hi)
}

// find looks fp up: found when a live slot holds it, else free is where it
// would go (the first dead or empty slot of its sequence; -1 for none).
func (sh *shard) find(fp uint64, w *window) (found bool, free int) {
	free = -1
	n := len(sh.slots)
	if n == 0 {
		return false, -1
	}
	key := fp >> 8
	for i := home(fp, n); ; {
		v := sh.slots[i]
		if v == 0 {
			if free < 0 {
				free = i
			}
			return false, free
		}
		live := w.live[uint8(v)]
		if live && v>>8 == key {
			return true, i
		}
		if !live && free < 0 {
			free = i
		}
		if i++; i == n {
			i = 0
		}
	}
}

// insert remembers fp in the bucket tagged tag unless a live slot has it;
// it reports whether fp is new.
func (sh *shard) insert(fp, tag uint64, w *window) bool {
	found, free := sh.find(fp, w)
	if found {
		return false
	}
	if free < 0 || sh.slots[free] == 0 && (sh.used+1)*maxLoadDen > len(sh.slots)*maxLoadNum {
		sh.rebuild(w, 1)
		_, free = sh.find(fp, w)
	}
	if sh.slots[free] == 0 {
		sh.used++
	}
	sh.slots[free] = fp&^0xff | tag
	return true
}

// sweepIfStale rebuilds a shard not rebuilt for so long that a dead slot's
// tag could come round to a live bucket's.
func (sh *shard) sweepIfStale(w *window) {
	if w.cur-sh.swept > int64(254-MaxBuckets) {
		sh.rebuild(w, 0)
	}
}

// rebuild copies the live slots into a table sized for them and extra more
// at targetLoad, dropping the dead ones.
func (sh *shard) rebuild(w *window, extra int) {
	live := extra
	for _, v := range sh.slots {
		if v != 0 && w.live[uint8(v)] {
			live++
		}
	}
	old := sh.slots
	sh.slots = make([]uint64, max(minSlots, live*targetDen/targetNum+1))
	sh.used = 0
	n := len(sh.slots)
	for _, v := range old {
		if v == 0 || !w.live[uint8(v)] {
			continue
		}
		i := home(v, n)
		for sh.slots[i] != 0 {
			if i++; i == n {
				i = 0
			}
		}
		sh.slots[i] = v
		sh.used++
	}
	sh.swept = w.cur
}
