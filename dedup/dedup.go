// Package dedup remembers the fingerprints of recently accepted event ids,
// so that the collector recognises resends (client retries, at-least-once
// senders) before they reach the aggregates. Memory is bounded: ids are kept
// in time buckets covering the horizon, and the oldest bucket goes early
// when MaxEntries is reached. What falls outside is caught by reconciliation,
// which deduplicates raw events by event_id.
package dedup

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/go-faster/city"

	"github.com/clickagg/clickagg"
)

// Fingerprint is ClickHouse's cityHash64 of the event id, so the ids a
// restarted collector reloads from ClickHouse match the ones it computed.
func Fingerprint(eventID string) uint64 {
	return city.CH64(unsafe.Slice(unsafe.StringData(eventID), len(eventID)))
}

// Options configures a Set. The zero value works.
type Options struct {
	Horizon    time.Duration // an accepted id is remembered at least this long (up to one bucket more); default 2 h
	Buckets    int           // the horizon's time buckets; default 24 (5 min each at 2 h): only the newest is a map
	MaxEntries int           // ids remembered at most; default 200 million (about 2 GiB: 10 bytes an id once frozen, 36 in the open bucket)
	Now        func() time.Time
}

// Stats describe the set.
type Stats struct {
	Entries int64 `json:"entries"`
	Pending int64 `json:"pending"` // ids of requests not yet committed
	// HorizonSeconds is the span actually remembered; below Options.Horizon
	// when MaxEntries forced buckets out early.
	HorizonSeconds float64 `json:"horizon_seconds"`
	Evicted        int64   `json:"evicted_early"` // ids forgotten before the horizon because of MaxEntries
}

// bucket holds the ids accepted in one time slice: a map while it is the
// newest, frozen into a compact table once a newer one exists (ids added to
// it later, e.g. reloaded after a restart, go to the map).
type bucket struct {
	start  time.Time
	ids    map[uint64]struct{}
	frozen table
	n      int
}

func (b *bucket) has(fp uint64) bool {
	_, ok := b.ids[fp]
	return ok || b.frozen.has(fp)
}

func (b *bucket) add(fp uint64) bool {
	if b.has(fp) {
		return false
	}
	if b.ids == nil {
		b.ids = make(map[uint64]struct{})
	}
	b.ids[fp] = struct{}{}
	b.n++
	return true
}

func (b *bucket) freeze() {
	if b.frozen.slots == nil && len(b.ids) > 0 {
		b.frozen, b.ids = freeze(b.ids), nil
	}
}

// Set is safe for concurrent use.
type Set struct {
	o     Options
	width time.Duration

	mu      sync.Mutex
	buckets []*bucket         // oldest first
	pending map[uint64]*Claim // ids of claims not yet settled
	entries int
	evicted atomic.Int64
}

// Defaults of Options.
const (
	DefaultHorizon    = 2 * time.Hour
	DefaultBuckets    = 24
	DefaultMaxEntries = 200_000_000
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	o.Horizon = clickagg.PositiveOr(o.Horizon, DefaultHorizon)
	o.Buckets = clickagg.PositiveOr(o.Buckets, DefaultBuckets)
	o.MaxEntries = clickagg.PositiveOr(o.MaxEntries, DefaultMaxEntries)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate checks a complete Options: a positive horizon of at least a
// millisecond per bucket, positive counts.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.Positive("Horizon", o.Horizon),
		clickagg.Between("Buckets", o.Buckets, 1, 1024),
		clickagg.AtLeast("Horizon", o.Horizon, time.Duration(o.Buckets)*time.Millisecond, "a millisecond per bucket"),
		clickagg.Positive("MaxEntries", o.MaxEntries),
	)
}

// New returns an empty Set.
func New(o Options) *Set {
	o = o.WithDefaults()
	o.Buckets = max(o.Buckets, 1)
	return &Set{o: o, width: o.Horizon / time.Duration(o.Buckets), pending: make(map[uint64]*Claim)}
}

// Verdict is what Check says of one fingerprint.
type Verdict uint8

// Verdicts.
const (
	Fresh     Verdict = iota // first time: the claim holds it until settled
	Duplicate                // accepted before (or earlier in the same claim)
	InFlight                 // held by another request not yet committed
)

// Claim is one request's hold on the ids it is committing. Settle it once,
// with whether the commit succeeded.
type Claim struct {
	fps  []uint64
	done chan struct{}
	ok   bool
	// waits are the other claims holding ids this one found in flight.
	waits []*Claim
}

// Check claims the new fingerprints of fps for one request and tells, for
// each, whether it is new, a duplicate, or held by another request. out
// receives the verdicts (reused when large enough).
func (s *Set) Check(fps []uint64, out []Verdict) (*Claim, []Verdict) {
	out = out[:0]
	c := &Claim{done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	for _, fp := range fps {
		v := Fresh
		if s.seenLocked(fp) {
			v = Duplicate
		} else if other, ok := s.pending[fp]; ok {
			if other == c {
				v = Duplicate
			} else {
				v = InFlight
				c.waits = append(c.waits, other)
			}
		} else {
			s.pending[fp] = c
			c.fps = append(c.fps, fp)
		}
		out = append(out, v)
	}
	return c, out
}

func (s *Set) seenLocked(fp uint64) bool {
	for i := len(s.buckets) - 1; i >= 0; i-- {
		if s.buckets[i].has(fp) {
			return true
		}
	}
	return false
}

// Settle records the claim's outcome: committed ids are remembered, the
// ids of a failed commit are released so that a retry counts them as new.
func (s *Set) Settle(c *Claim, committed bool) {
	s.mu.Lock()
	for _, fp := range c.fps {
		if s.pending[fp] == c {
			delete(s.pending, fp)
		}
	}
	if committed {
		s.addLocked(s.o.Now(), c.fps)
	}
	s.mu.Unlock()
	c.ok = committed
	close(c.done)
}

// SettleEach is Settle with the outcome of each fingerprint of the claim:
// a request whose rows went to several shards may have committed some and
// not others. committed is called before the set is locked, so it may
// block (to learn an outcome that was unknown). The claim's waiters see it
// failed if any of its ids failed: they resend, and the committed ones are
// duplicates then.
func (s *Set) SettleEach(c *Claim, committed func(fp uint64) bool) {
	ok := make([]bool, len(c.fps))
	all := true
	for i, fp := range c.fps {
		ok[i] = committed(fp)
		all = all && ok[i]
	}
	now := s.o.Now()
	s.mu.Lock()
	for _, fp := range c.fps {
		if s.pending[fp] == c {
			delete(s.pending, fp)
		}
	}
	if all {
		s.addLocked(now, c.fps)
	} else {
		var landed []uint64
		for i, fp := range c.fps {
			if ok[i] {
				landed = append(landed, fp)
			}
		}
		s.addLocked(now, landed)
	}
	s.mu.Unlock()
	c.ok = all
	close(c.done)
}

// Release lets go of fps held by c before it settles: ids that another
// instance holds or committed (package claims), which c's outcome must not
// make this set remember.
func (s *Set) Release(c *Claim, fps []uint64) {
	if len(fps) == 0 {
		return
	}
	drop := make(map[uint64]bool, len(fps))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fp := range fps {
		drop[fp] = true
		if s.pending[fp] == c {
			delete(s.pending, fp)
		}
	}
	kept := c.fps[:0]
	for _, fp := range c.fps {
		if !drop[fp] {
			kept = append(kept, fp)
		}
	}
	c.fps = kept
}

// Wait blocks until every claim holding an id this claim found in flight is
// settled, and reports whether all of them committed. When one did not, the
// caller's copy was stored as a duplicate and is not counted: it must ask
// the sender to retry.
func (c *Claim) Wait() bool {
	ok := true
	for _, w := range c.waits {
		<-w.done
		ok = ok && w.ok
	}
	return ok
}

// Add remembers fingerprints accepted at t, e.g. reloaded after a restart.
func (s *Set) Add(t time.Time, fps ...uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(t, fps)
}

func (s *Set) addLocked(t time.Time, fps []uint64) {
	if len(fps) == 0 || t.Before(s.o.Now().Add(-s.o.Horizon)) {
		return
	}
	b := s.bucketLocked(t)
	for _, fp := range fps {
		if b.add(fp) {
			s.entries++
		}
	}
	for s.entries > s.o.MaxEntries && len(s.buckets) > 1 {
		s.evicted.Add(int64(s.buckets[0].n))
		s.dropOldestLocked()
	}
}

// bucketLocked finds or makes the bucket of t, keeping buckets ordered.
func (s *Set) bucketLocked(t time.Time) *bucket {
	start := t.Truncate(s.width)
	i := len(s.buckets)
	for i > 0 && s.buckets[i-1].start.After(start) {
		i--
	}
	if i > 0 && s.buckets[i-1].start.Equal(start) {
		return s.buckets[i-1]
	}
	b := &bucket{start: start}
	if i == len(s.buckets) && i > 0 {
		s.buckets[i-1].freeze()
	}
	s.buckets = append(s.buckets, nil)
	copy(s.buckets[i+1:], s.buckets[i:])
	s.buckets[i] = b
	return b
}

func (s *Set) dropOldestLocked() {
	s.entries -= s.buckets[0].n
	s.buckets[0] = nil
	s.buckets = s.buckets[1:]
}

// expireLocked forgets the buckets wholly older than the horizon.
func (s *Set) expireLocked() {
	cutoff := s.o.Now().Add(-s.o.Horizon)
	for len(s.buckets) > 0 && !s.buckets[0].start.Add(s.width).After(cutoff) {
		s.dropOldestLocked()
	}
}

// Stats returns the current size and reach of the set.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	st := Stats{Entries: int64(s.entries), Pending: int64(len(s.pending)), Evicted: s.evicted.Load(), HorizonSeconds: s.o.Horizon.Seconds()}
	if s.evicted.Load() > 0 && len(s.buckets) > 0 {
		st.HorizonSeconds = min(s.o.Now().Sub(s.buckets[0].start), s.o.Horizon).Seconds()
	}
	return st
}
