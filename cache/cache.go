// Package cache puts Redis in front of a clickagg.MetricsService
// (cache-aside). Answers are stored as JSON with a TTL that depends on
// whether their range is over: long for the past, a few seconds while the
// current minute still fills. Concurrent misses of one key share one inner
// call. Redis is optional at run time: when it fails or is slow, queries are
// answered by the inner service, never failed.
package cache

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/clickagg/clickagg"
)

// Options configures a Cache. The zero value works.
type Options struct {
	Prefix     string           // key prefix; default "clickagg:v1:"
	PastTTL    time.Duration    // answers whose range ends at or before the start of the current minute; default 1 h
	CurrentTTL time.Duration    // answers whose range includes the current minute or the future; default 5 s
	Timeout    time.Duration    // bound of each Redis call, after which the inner service answers; default 100 ms
	Now        func() time.Time // clock of the TTL policy and of the entries' "at"; default time.Now
	Hooks      Hooks            // optional
	// LocalTTL, when set, keeps answers in process that long in front of
	// Redis (never past their TTL there): a hot key then costs no
	// Redis round trip. This instance's late marks clear it at once; other
	// instances' marks are seen within LocalTTL. Zero: off.
	LocalTTL time.Duration
	// LocalMaxEntries bounds the in-process tier; default 10000.
	LocalMaxEntries int
}

// Defaults of Options. DefaultLocalTTL is serve's: the zero Options keep
// no answers in process.
const (
	DefaultPrefix          = "clickagg:v1:"
	DefaultPastTTL         = time.Hour
	DefaultCurrentTTL      = 5 * time.Second
	DefaultTimeout         = 100 * time.Millisecond
	DefaultLocalTTL        = 250 * time.Millisecond
	DefaultLocalMaxEntries = 10000
)

// WithDefaults returns o with its zero fields set to the defaults (LocalTTL
// stays off).
func (o Options) WithDefaults() Options {
	o.Prefix = cmp.Or(o.Prefix, DefaultPrefix)
	o.PastTTL = clickagg.PositiveOr(o.PastTTL, DefaultPastTTL)
	o.CurrentTTL = clickagg.PositiveOr(o.CurrentTTL, DefaultCurrentTTL)
	o.Timeout = clickagg.PositiveOr(o.Timeout, DefaultTimeout)
	o.LocalMaxEntries = clickagg.PositiveOr(o.LocalMaxEntries, DefaultLocalMaxEntries)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate checks a complete Options: TTLs, the Redis timeout and the
// in-process bound positive; LocalTTL 0 (off) or more.
func (o Options) Validate() error {
	return clickagg.FirstError(
		clickagg.NotEmpty("Prefix", o.Prefix),
		clickagg.Positive("PastTTL", o.PastTTL),
		clickagg.Positive("CurrentTTL", o.CurrentTTL),
		clickagg.Positive("Timeout", o.Timeout),
		clickagg.NonNegative("LocalTTL", o.LocalTTL),
		clickagg.Positive("LocalMaxEntries", o.LocalMaxEntries),
	)
}

// Outcome is how a lookup went.
type Outcome string

// Outcomes. OutcomeError means Redis failed or held an unreadable entry; the
// inner service answered.
const (
	OutcomeHit   Outcome = "hit"
	OutcomeMiss  Outcome = "miss"
	OutcomeError Outcome = "error"
)

// Hooks observe the cache, e.g. for metrics; calls are synchronous and must
// be quick.
type Hooks interface {
	// OnLookup reports one call: kind is "metrics", "series" or "top", d
	// the time the caller waited (a miss includes the inner call).
	OnLookup(kind string, outcome Outcome, d time.Duration)
}

// Stats are running totals.
type Stats struct {
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"` // key absent
	Errors int64 `json:"errors"` // failed or timed-out Redis calls, unreadable entries
	Sets   int64 `json:"sets"`   // answers stored
	Shared int64 `json:"shared"` // callers that joined another caller's inner call
	Stale  int64 `json:"stale"`  // entries found but older than a late change to their range
	Marks  int64 `json:"marks"`  // late marks written
	Local  int64 `json:"local"`  // hits answered in process, without Redis (part of Hits)
	// HitRatio is Hits / (Hits + Misses), 0 before any lookup.
	HitRatio float64 `json:"hit_ratio"`
}

// maxKeyText bounds the query part of a key. Longer canonical texts keep a
// readable head and end in a hash of the whole text.
const maxKeyText = 200

// Cache is a clickagg.MetricsService answering from Redis when it can and
// from the inner service otherwise. It is safe for concurrent use.
type Cache struct {
	rdb   redis.UniversalClient
	next  clickagg.MetricsService
	o     Options
	group singleflight.Group
	local local

	hits, misses, errs, sets, shared, stale, marks, localHits atomic.Int64
}

var _ clickagg.MetricsService = (*Cache)(nil)

// New returns a Cache in front of next. Timeout holds whatever rdb's
// options, but with ContextTimeoutEnabled the abandoned Redis calls also end
// at the timeout instead of at rdb's ReadTimeout. While Redis is down each
// query pays at most one Timeout; go-redis itself fails fast once its dials
// keep failing and probes in the background until Redis is back.
func New(rdb redis.UniversalClient, next clickagg.MetricsService, o Options) *Cache {
	o = o.WithDefaults()
	return &Cache{rdb: rdb, next: next, o: o, local: local{max: o.LocalMaxEntries}}
}

// Stats returns running totals.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits:   c.hits.Load(),
		Misses: c.misses.Load(),
		Errors: c.errs.Load(),
		Sets:   c.sets.Load(),
		Shared: c.shared.Load(),
		Stale:  c.stale.Load(),
		Marks:  c.marks.Load(),
		Local:  c.localHits.Load(),
	}
	if n := s.Hits + s.Misses; n > 0 {
		s.HitRatio = float64(s.Hits) / float64(n)
	}
	return s
}

// TTL is how long an answer for r computed now stays cached: PastTTL when r
// ends at or before the start of the current minute (UTC), CurrentTTL
// otherwise.
func (c *Cache) TTL(r clickagg.Range) time.Duration { return c.ttl(r, c.o.Now()) }

// ttl is the policy for an answer whose computation started at at: a query
// started in a minute's last moment must not keep its partial count of that
// minute for an hour because it finished in the next one.
func (c *Cache) ttl(r clickagg.Range, at time.Time) time.Duration {
	if r.To.After(at.UTC().Truncate(time.Minute)) {
		return c.o.CurrentTTL
	}
	return c.o.PastTTL
}

// Key is the Redis key of a query: Prefix and the query's canonical text,
// that text cut to a head and a SHA-256 when longer than maxKeyText bytes.
func (c *Cache) Key(q interface{ Key() string }) string {
	text := q.Key()
	if len(text) > maxKeyText {
		sum := sha256.Sum256([]byte(text))
		n := maxKeyText - len("|sha256=") - 2*len(sum)
		for n > 0 && !utf8.RuneStart(text[n]) {
			n--
		}
		text = text[:n] + "|sha256=" + hex.EncodeToString(sum[:])
	}
	return c.o.Prefix + text
}

// Metrics answers q from Redis or from the inner service.
func (c *Cache) Metrics(ctx context.Context, q clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	return lookup(ctx, c, "metrics", q, q.Range, func(r *clickagg.MetricsResult) *bool { return &r.Cached },
		func(ctx context.Context) (*clickagg.MetricsResult, error) { return c.next.Metrics(ctx, q) })
}

// Series answers q from Redis or from the inner service.
func (c *Cache) Series(ctx context.Context, q clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	return lookup(ctx, c, "series", q, q.Range, func(r *clickagg.SeriesResult) *bool { return &r.Cached },
		func(ctx context.Context) (*clickagg.SeriesResult, error) { return c.next.Series(ctx, q) })
}

// TopAds answers q from Redis or from the inner service.
func (c *Cache) TopAds(ctx context.Context, q clickagg.TopQuery) (*clickagg.TopResult, error) {
	return lookup(ctx, c, "top", q, q.Range, func(r *clickagg.TopResult) *bool { return &r.Cached },
		func(ctx context.Context) (*clickagg.TopResult, error) { return c.next.TopAds(ctx, q) })
}

// entry is what a key holds. At (Unix µs) is when the inner call started,
// so that an event that arrived during the call counts as later: entries
// older than a late event of their range can be dropped.
type entry[R any] struct {
	At int64 `json:"at"`
	V  *R    `json:"v"`
}

// flight is the outcome of one inner call: the leader's result and the
// stored entry, from which each joiner decodes a copy of its own.
type flight struct {
	v   any
	raw []byte
}

// lookup is the cache-aside path shared by the three kinds; cached points at
// a result's Cached field and call asks the inner service.
func lookup[R any](ctx context.Context, c *Cache, kind string, q interface{ Key() string }, rng clickagg.Range,
	cached func(*R) *bool, call func(context.Context) (*R, error)) (*R, error) {
	start := time.Now()
	key := c.Key(q)
	outcome := OutcomeMiss
	if c.o.Hooks != nil {
		defer func() { c.o.Hooks.OnLookup(kind, outcome, time.Since(start)) }()
	}

	now := c.o.Now()
	gen := c.local.generation() // what keepLocal checks, even for a lookup that skips the tier
	if c.o.LocalTTL > 0 && clickagg.LocalCacheAllowed(ctx) {
		if raw, ok := c.local.get(key, now); ok {
			if e, err := decodeEntry[R](raw); err == nil {
				c.hits.Add(1)
				c.localHits.Add(1)
				outcome = OutcomeHit
				*cached(e.V) = true
				return e.V, nil
			}
		}
	}
	store := true
	raw, mark, err := c.get(ctx, key, rng)
	switch {
	case err == nil:
		e, err := decodeEntry[R](raw)
		if err == nil && mark < e.At {
			c.hits.Add(1)
			outcome = OutcomeHit
			c.keepLocal(key, raw, rng, time.UnixMicro(e.At), now, gen)
			*cached(e.V) = true
			return e.V, nil
		}
		if err == nil {
			// Late events landed in the range since the entry was computed.
			c.stale.Add(1)
			break
		}
		// Unreadable (e.g. written by another version): recompute, overwrite.
		c.errs.Add(1)
		outcome = OutcomeError
	case errors.Is(err, redis.Nil):
		c.misses.Add(1)
	default:
		// Redis is likely down or slow: do not pay the timeout again on SET.
		c.errs.Add(1)
		outcome = OutcomeError
		store = false
	}

	leader := false
	ch := c.group.DoChan(key, func() (any, error) {
		leader = true
		// The call serves every joiner, so the leader leaving (a closed
		// connection) must not cancel it; its deadline still bounds it.
		fctx, cancel := detach(ctx)
		defer cancel()
		at := c.o.Now()
		v, err := call(fctx)
		if err != nil {
			return nil, err // errors are not cached
		}
		if v == nil {
			return nil, fmt.Errorf("cache: %s: inner service returned neither a result nor an error", kind)
		}
		raw, err := json.Marshal(entry[R]{At: at.UnixMicro(), V: v})
		if err != nil {
			return nil, fmt.Errorf("cache: encode %s result: %w", kind, err)
		}
		if store {
			c.set(ctx, key, raw, c.ttl(rng, at))
		}
		c.keepLocal(key, raw, rng, at, at, gen)
		return flight{v: v, raw: raw}, nil
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if res.Err != nil {
		return nil, res.Err
	}
	f := res.Val.(flight)
	if leader { // set by the function, which ran before ch was sent on
		v := f.v.(*R)
		*cached(v) = false
		return v, nil
	}
	c.shared.Add(1)
	return decode[R](f.raw) // callers may change their result: one copy each
}

// keepLocal puts an entry computed at `at` in the in-process tier, from now
// for LocalTTL, and never past the end of its TTL in Redis.
func (c *Cache) keepLocal(key string, raw []byte, rng clickagg.Range, at, now time.Time, gen uint64) {
	if c.o.LocalTTL > 0 {
		end := at.Add(c.ttl(rng, at))
		if exp := now.Add(c.o.LocalTTL); exp.Before(end) {
			end = exp
		}
		c.local.put(key, raw, end, gen)
	}
}

func decode[R any](raw []byte) (*R, error) {
	e, err := decodeEntry[R](raw)
	return e.V, err
}

func decodeEntry[R any](raw []byte) (entry[R], error) {
	var e entry[R]
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, err
	}
	if e.V == nil {
		return e, errors.New("cache: entry without a value")
	}
	return e, nil
}

// get reads the entry of key together with the late marks of rng's hours
// (or days, for long ranges) in one MGET, and returns the newest mark.
func (c *Cache) get(ctx context.Context, key string, rng clickagg.Range) ([]byte, int64, error) {
	keys := append([]string{key}, c.markKeys(rng, rng.To.Sub(rng.From) <= markHoursUpTo)...)
	vals, err := bounded(ctx, c.o.Timeout, func(ctx context.Context) ([]any, error) { return c.rdb.MGet(ctx, keys...).Result() })
	if err != nil {
		return nil, 0, err
	}
	s, ok := vals[0].(string)
	if !ok {
		return nil, 0, redis.Nil
	}
	var newest int64
	for _, v := range vals[1:] {
		if m, ok := v.(string); ok {
			if ms, err := strconv.ParseInt(m, 10, 64); err == nil && ms > newest {
				newest = ms
			}
		}
	}
	return []byte(s), newest, nil
}

// markHoursUpTo is the longest range checked against hour marks; longer
// ones check day marks, so a lookup reads at most a few dozen keys.
const markHoursUpTo = 48 * time.Hour

// markKeys names the late marks covering rng, by hour or by day.
func (c *Cache) markKeys(rng clickagg.Range, hours bool) []string {
	step, kind := 24*time.Hour, "late:d:"
	if hours {
		step, kind = time.Hour, "late:h:"
	}
	var keys []string
	for t := rng.From.UTC().Truncate(step); t.Before(rng.To); t = t.Add(step) {
		keys = append(keys, c.o.Prefix+kind+strconv.FormatInt(t.Unix(), 10))
	}
	return keys
}

// MarkChanged records that the numbers of the ranges changed after the fact (late
// events committed, a reconciliation fix), so that every cached answer
// computed before now about an overlapping range is recomputed on its next
// lookup. The marks outlive the longest-lived entry. A failure is counted
// and returned; the entries then live out their TTL.
func (c *Cache) MarkChanged(ctx context.Context, rngs ...clickagg.Range) error {
	c.local.clear()
	now := strconv.FormatInt(c.o.Now().UnixMicro(), 10)
	ttl := max(c.o.PastTTL, c.o.CurrentTTL) + time.Minute
	var keys []string
	for _, rng := range rngs {
		keys = append(append(keys, c.markKeys(rng, true)...), c.markKeys(rng, false)...)
	}
	_, err := bounded(ctx, c.o.Timeout, func(ctx context.Context) ([]redis.Cmder, error) {
		return c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Set(ctx, k, now, ttl)
			}
			return nil
		})
	})
	if err != nil {
		c.errs.Add(1)
		return fmt.Errorf("cache: mark changed range: %w", err)
	}
	c.marks.Add(int64(len(keys)))
	return nil
}

func (c *Cache) set(ctx context.Context, key string, raw []byte, ttl time.Duration) {
	_, err := bounded(ctx, c.o.Timeout, func(ctx context.Context) (string, error) { return c.rdb.Set(ctx, key, raw, ttl).Result() })
	if err != nil {
		c.errs.Add(1)
		return
	}
	c.sets.Add(1)
}

// bounded runs one Redis call for at most timeout and not cancelled with ctx
// (a stored answer is worth having even when its asker left). go-redis
// ignores context deadlines on its sockets unless ContextTimeoutEnabled, so
// the call runs aside and is abandoned at the timeout.
func bounded[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("redis: %w", ctx.Err())
	}
}

// detach returns a context with ctx's values and deadline but not its
// cancellation.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	d := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(d, dl)
	}
	return context.WithCancel(d)
}
