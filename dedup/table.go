package dedup

import (
	"math/bits"
	"sync"
)

// shard is one part of the set: an open-addressing table (linear probing)
// of the fingerprints whose low byte is the shard's number, and the ids of
// its requests not yet settled. A slot is 0 when empty, else the
// fingerprint with its low byte replaced by its bucket's tag, or by
// pendingTag while a claim holds it; a slot whose tag is neither live nor
// pending is dead: lookups pass over it, inserts reuse it, and a rebuild
// drops it. A claim notes where it put each id, so settling it writes the
// slot without a second probe sequence unless a rebuild moved it (gen).
type shard struct {
	mu    sync.Mutex
	slots []uint64
	used  int    // slots not empty, live, pending or dead
	gen   uint32 // rebuilds so far: a noted slot index is good while it stands
	swept int64  // epoch of the last rebuild
	// settled wakes the requests waiting for a pending id of the shard
	// (waiting of them) when it is settled.
	settled sync.Cond
	waiting int
	_       [64]byte // one cache line apart from the next shard's lock
}

// Tags: a live bucket's is 1 to tags (its epoch's rest modulo tags, plus
// one), pendingTag marks an id held by a claim, and 0 (with a non-zero
// rest) a dead slot left by a claim that failed.
const (
	tags       = 254
	pendingTag = 255
)

// slot states found by find.
const (
	absent = iota
	live
	pending
)

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

// find looks fp up: live or pending with the index of the slot holding it,
// else absent with where it would go (the first dead or empty slot of its
// sequence; -1 for none).
func (sh *shard) find(fp uint64, w *window) (state, i int) {
	free := -1
	n := len(sh.slots)
	if n == 0 {
		return absent, -1
	}
	key := fp >> 8
	for i := home(fp, n); ; {
		v := sh.slots[i]
		if v == 0 {
			if free < 0 {
				free = i
			}
			return absent, free
		}
		tag := uint8(v)
		taken := tag == pendingTag || w.live[tag]
		if taken && v>>8 == key {
			if tag == pendingTag {
				return pending, i
			}
			return live, i
		}
		if !taken && free < 0 {
			free = i
		}
		if i++; i == n {
			i = 0
		}
	}
}

// insert remembers fp in the bucket tagged tag unless a live or pending
// slot has it; it reports whether fp is new.
func (sh *shard) insert(fp, tag uint64, w *window) bool {
	state, free := sh.find(fp, w)
	if state != absent {
		return false
	}
	sh.place(fp, fp&^0xff|tag, free, w)
	return true
}

// place writes v, fp's slot, at free (find's answer for fp), rebuilding
// first when there is no room, and returns where it went.
func (sh *shard) place(fp, v uint64, free int, w *window) int {
	if free < 0 || sh.slots[free] == 0 && (sh.used+1)*maxLoadDen > len(sh.slots)*maxLoadNum {
		sh.rebuild(w, 1)
		_, free = sh.find(fp, w)
	}
	if sh.slots[free] == 0 {
		sh.used++
	}
	sh.slots[free] = v
	return free
}

// held returns the index of fp's pending slot, from where a claim noted it
// (at: gen<<32 | index) or, after a rebuild, by looking; -1 when fp is not
// pending.
func (sh *shard) held(fp, at uint64, w *window) int {
	if uint32(at>>32) == sh.gen {
		if i := int(uint32(at)); i < len(sh.slots) && sh.slots[i] == fp&^0xff|pendingTag {
			return i
		}
	}
	if state, i := sh.find(fp, w); state == pending {
		return i
	}
	return -1
}

// deadSlot is what a released pending slot becomes: tag 0 is never live,
// and the rest stays non-zero so that probe sequences through it go on.
func deadSlot(fp uint64) uint64 { return max(fp&^0xff, 1<<8) }

// kept reports whether a rebuild keeps slot v: live or pending.
func kept(v uint64, w *window) bool {
	return v != 0 && (uint8(v) == pendingTag || w.live[uint8(v)])
}

// sweepIfStale rebuilds a shard not rebuilt for so long that a dead slot's
// tag could come round to a live bucket's.
func (sh *shard) sweepIfStale(w *window) {
	if w.cur-sh.swept > int64(tags-1-MaxBuckets) {
		sh.rebuild(w, 0)
	}
}

// rebuild copies the live and pending slots into a table sized for them
// and extra more at targetLoad, dropping the dead ones.
func (sh *shard) rebuild(w *window, extra int) {
	keep := extra
	for _, v := range sh.slots {
		if kept(v, w) {
			keep++
		}
	}
	old := sh.slots
	sh.slots = make([]uint64, max(minSlots, keep*targetDen/targetNum+1))
	sh.used = 0
	sh.gen++
	n := len(sh.slots)
	for _, v := range old {
		if !kept(v, w) {
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
