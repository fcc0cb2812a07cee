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
	Buckets    int           // the horizon's time buckets, at most 128; default 24 (5 min each at 2 h): ids expire a bucket at a time
	MaxEntries int           // ids remembered at most; default 200 million (about 2 GiB: 10.7 bytes an id while the set turns over)
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

// Set is safe for concurrent use. It is one open-addressing table of
// fingerprints split into 256 shards by the fingerprint's low byte, each
// under its own lock, so a new id costs one probe sequence, not one per
// time bucket, and requests do not queue behind one lock. A slot keeps the
// fingerprint with its low byte (the shard's, so nothing is lost) replaced
// by the tag of the time bucket it was accepted in; a bucket past the
// horizon expires at once by its tag, and its slots are swept when their
// shard is next rebuilt.
type Set struct {
	o     Options
	width time.Duration

	shards [256]shard

	clock   sync.Mutex // advances the window; the hot path only loads it
	win     atomic.Pointer[window]
	counts  [256]atomic.Int64 // ids per live bucket, by tag
	entries atomic.Int64
	pending atomic.Int64 // ids held by claims
	evicted atomic.Int64
}

// window is which buckets are live: epochs lo to cur (an epoch is a
// bucket's start divided by the bucket width), cur being now's.
type window struct {
	lo, cur int64
	live    [256]bool // by tag
}

// Defaults of Options.
const (
	DefaultHorizon    = 2 * time.Hour
	DefaultBuckets    = 24
	DefaultMaxEntries = 200_000_000
	// MaxBuckets keeps a live bucket's tag unique among the 254 tags with
	// room for sweeps: a shard is rebuilt before a tag comes round again.
	MaxBuckets = 128
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
		clickagg.Between("Buckets", o.Buckets, 1, MaxBuckets),
		clickagg.AtLeast("Horizon", o.Horizon, time.Duration(o.Buckets)*time.Millisecond, "a millisecond per bucket"),
		clickagg.Positive("MaxEntries", o.MaxEntries),
	)
}

// New returns an empty Set.
func New(o Options) *Set {
	o = o.WithDefaults()
	o.Buckets = min(max(o.Buckets, 1), MaxBuckets)
	s := &Set{o: o, width: max(o.Horizon/time.Duration(o.Buckets), 1)}
	cur := s.epoch(o.Now())
	s.clock.Lock()
	s.setWindow(&window{lo: cur, cur: cur}, cur-int64(o.Buckets), cur)
	s.clock.Unlock()
	for i := range s.shards {
		s.shards[i].swept = cur
		s.shards[i].settled.L = &s.shards[i].mu
	}
	return s
}

func (s *Set) epoch(t time.Time) int64 { return t.UnixNano() / int64(s.width) }

// tagOf is the tag of an epoch: 1 to tags (table.go).
func tagOf(epoch int64) uint64 { return uint64(epoch%tags) + 1 }

// now returns the window of the present, advancing it when time has.
func (s *Set) now() *window {
	w := s.win.Load()
	if e := s.epoch(s.o.Now()); e > w.cur {
		return s.retire(e)
	}
	return w
}

// retire moves the window to epoch cur: the buckets that fell out of the
// horizon (or under the eviction floor) are no longer live, their counts
// dropped from the entries.
func (s *Set) retire(cur int64) *window {
	s.clock.Lock()
	defer s.clock.Unlock()
	w := s.win.Load()
	if cur <= w.cur {
		return w // another caller moved it on already
	}
	lo := max(w.lo, cur-int64(s.o.Buckets))
	return s.setWindow(w, lo, cur)
}

// setWindow stores the window [lo, cur], retiring the counts of the
// buckets that leave it. Called with s.clock held.
func (s *Set) setWindow(old *window, lo, cur int64) *window {
	w := &window{lo: lo, cur: cur}
	for e := lo; e <= cur; e++ {
		w.live[tagOf(e)] = true
	}
	for e := old.lo; e <= old.cur && e < lo; e++ {
		s.entries.Add(-s.counts[tagOf(e)].Swap(0))
	}
	s.win.Store(w)
	return w
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
	s   *Set
	fps []uint64
	at  []uint64 // where each of fps is pending: its shard's gen<<32 | slot
	// own is fps as a set, made when an id pending in its shard is met
	// again in the same request (rare): is it this claim's?
	own map[uint64]struct{}
	// waits are the ids other claims held when this one was checked.
	waits []uint64
}

// holds reports whether fp is among c's own ids.
func (c *Claim) holds(fp uint64) bool {
	if c.own == nil {
		c.own = make(map[uint64]struct{}, len(c.fps))
		for _, f := range c.fps {
			c.own[f] = struct{}{}
		}
	}
	_, ok := c.own[fp]
	return ok
}

// Check claims the new fingerprints of fps for one request and tells, for
// each, whether it is new, a duplicate, or held by another request. out
// receives the verdicts (reused when large enough).
func (s *Set) Check(fps []uint64, out []Verdict) (*Claim, []Verdict) {
	out = out[:0]
	c := &Claim{s: s}
	s.now()
	for _, fp := range fps {
		sh := &s.shards[uint8(fp)]
		sh.mu.Lock()
		// The window as of now, under the lock: one loaded before it
		// could predate the bucket another request just settled this id
		// in, and take its slot for dead.
		w := s.win.Load()
		sh.sweepIfStale(w)
		v := Fresh
		switch state, i := sh.find(fp, w); state {
		case live:
			v = Duplicate
		case pending:
			if c.holds(fp) {
				v = Duplicate
			} else {
				v = InFlight
				c.waits = append(c.waits, fp)
			}
		default:
			i = sh.place(fp, fp&^0xff|pendingTag, i, w)
			c.fps, c.at = append(c.fps, fp), append(c.at, uint64(sh.gen)<<32|uint64(i))
			if c.own != nil {
				c.own[fp] = struct{}{}
			}
			s.pending.Add(1)
		}
		sh.mu.Unlock()
		out = append(out, v)
	}
	return c, out
}

// Settle records the claim's outcome: committed ids are remembered, the
// ids of a failed commit are released so that a retry counts them as new.
func (s *Set) Settle(c *Claim, committed bool) {
	s.settle(c, func(uint64) bool { return committed })
}

// SettleEach is Settle with the outcome of each fingerprint of the claim:
// a request whose rows went to several shards may have committed some and
// not others. committed is called before any shard is locked, so it may
// block (to learn an outcome that was unknown).
func (s *Set) SettleEach(c *Claim, committed func(fp uint64) bool) {
	ok := make(map[uint64]bool, len(c.fps))
	for _, fp := range c.fps {
		ok[fp] = committed(fp)
	}
	s.settle(c, func(fp uint64) bool { return ok[fp] })
}

// settle releases the claim's ids and remembers those keep says committed.
func (s *Set) settle(c *Claim, keep func(uint64) bool) {
	s.now()
	var tag uint64
	added := int64(0)
	for k, fp := range c.fps {
		sh := &s.shards[uint8(fp)]
		sh.mu.Lock()
		w := s.win.Load() // see Check
		if t := tagOf(w.cur); t != tag {
			s.added(tag, added)
			tag, added = t, 0
		}
		// Only c writes its ids' pending slots, so one still pending is
		// c's (Release took back the ones it gave away).
		if i := sh.held(fp, c.at[k], w); i >= 0 {
			if keep(fp) {
				sh.slots[i] = fp&^0xff | tag
				added++
			} else {
				sh.slots[i] = deadSlot(fp)
			}
			s.pending.Add(-1)
			if sh.waiting > 0 {
				sh.settled.Broadcast()
			}
		}
		sh.mu.Unlock()
	}
	s.added(tag, added)
}

// added counts n new ids of the bucket tagged tag, evicting the oldest
// buckets while the set holds more than MaxEntries.
func (s *Set) added(tag uint64, n int64) {
	if n == 0 {
		return
	}
	s.counts[tag].Add(n)
	if s.entries.Add(n); !s.win.Load().live[tag] {
		// The bucket expired while these went in: its count was retired
		// without them.
		s.counts[tag].Add(-n)
		s.entries.Add(-n)
		return
	}
	if s.entries.Load() <= int64(s.o.MaxEntries) {
		return
	}
	s.clock.Lock()
	defer s.clock.Unlock()
	w := s.win.Load()
	lo := w.lo
	for s.entries.Load() > int64(s.o.MaxEntries) && lo < w.cur {
		s.evicted.Add(s.counts[tagOf(lo)].Load())
		lo++
		w = s.setWindow(w, lo, w.cur)
	}
}

// Release lets go of fps held by c before it settles: ids that another
// instance holds or committed (package claims), which c's outcome must not
// make this set remember.
func (s *Set) Release(c *Claim, fps []uint64) {
	if len(fps) == 0 {
		return
	}
	drop := make(map[uint64]bool, len(fps))
	for _, fp := range fps {
		drop[fp] = true
	}
	n := 0
	for k, fp := range c.fps {
		if !drop[fp] {
			c.fps[n], c.at[n] = fp, c.at[k]
			n++
			continue
		}
		sh := &s.shards[uint8(fp)]
		sh.mu.Lock()
		if i := sh.held(fp, c.at[k], s.win.Load()); i >= 0 {
			sh.slots[i] = deadSlot(fp)
			s.pending.Add(-1)
			if sh.waiting > 0 {
				sh.settled.Broadcast()
			}
		}
		sh.mu.Unlock()
	}
	c.fps, c.at = c.fps[:n], c.at[:n]
}

// Wait blocks until no claim holds an id this claim found in flight, and
// reports whether all of them were committed. When one was not, the
// caller's copy was stored as a duplicate and is not counted: it must ask
// the sender to retry.
func (c *Claim) Wait() bool {
	ok := true
	for _, fp := range c.waits {
		sh := &c.s.shards[uint8(fp)]
		sh.mu.Lock()
		for {
			state, _ := sh.find(fp, c.s.win.Load())
			if state != pending {
				ok = ok && state == live
				break
			}
			sh.waiting++
			sh.settled.Wait()
			sh.waiting--
		}
		sh.mu.Unlock()
	}
	return ok
}

// Add remembers fingerprints accepted at t, e.g. reloaded after a restart.
// Ids older than the horizon are not kept; a t in the future counts as now.
func (s *Set) Add(t time.Time, fps ...uint64) {
	w := s.now()
	if len(fps) == 0 || t.Before(s.o.Now().Add(-s.o.Horizon)) {
		return
	}
	e := min(s.epoch(t), w.cur)
	if e < w.lo {
		return
	}
	tag := tagOf(e)
	added := int64(0)
	for _, fp := range fps {
		sh := &s.shards[uint8(fp)]
		sh.mu.Lock()
		w := s.win.Load() // see Check
		sh.sweepIfStale(w)
		if sh.insert(fp, tag, w) {
			added++
		}
		sh.mu.Unlock()
	}
	s.added(tag, added)
}

// Stats returns the current size and reach of the set.
func (s *Set) Stats() Stats {
	w := s.now()
	st := Stats{Entries: s.entries.Load(), Evicted: s.evicted.Load(), HorizonSeconds: s.o.Horizon.Seconds()}
	st.Pending = s.pending.Load()
	if st.Evicted > 0 {
		oldest := w.lo
		for oldest < w.cur && s.counts[tagOf(oldest)].Load() == 0 {
			oldest++
		}
		start := time.Unix(0, oldest*int64(s.width))
		st.HorizonSeconds = min(s.o.Now().Sub(start), s.o.Horizon).Seconds()
	}
	return st
}
