package cache

import (
	"sync"
	"time"
)

// local is the in-process tier in front of Redis: entries this instance read
// from Redis (or computed) are kept for Options.LocalTTL, so that a hot key
// costs no Redis round trip. The instance's own MarkChanged empties it at
// once; marks written by other instances are seen within LocalTTL.
type local struct {
	mu      sync.Mutex
	max     int
	entries map[string]localEntry
	gen     uint64 // counts clears: a lookup that began before one keeps nothing
}

type localEntry struct {
	raw     []byte
	expires time.Time
}

func (l *local) get(key string, now time.Time) ([]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[key]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.raw, true
}

// generation is what put must be given: the count of clears so far.
func (l *local) generation() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// put keeps raw unless the tier was cleared since gen was read: the entry
// may then predate the change that cleared it.
func (l *local) put(key string, raw []byte, expires time.Time, gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return
	}
	if l.entries == nil || len(l.entries) >= l.max {
		// Full: start over rather than track recency; hot keys come back
		// with their next lookup.
		l.entries = make(map[string]localEntry, min(l.max, 1024))
	}
	l.entries[key] = localEntry{raw, expires}
}

func (l *local) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
	l.gen++
}
