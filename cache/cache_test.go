package cache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/services"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// now is the injected clock: 30 s into the minute 12:30.
var now = time.Date(2030, 1, 2, 12, 30, 30, 0, time.UTC)

var (
	past    = clickagg.Range{From: now.Add(-30*time.Minute - 30*time.Second), To: now.Add(-30 * time.Second)} // 12:00-12:30
	current = clickagg.Range{From: past.From, To: past.To.Add(time.Minute)}                                   // 12:00-12:31
)

func fixedNow() time.Time { return now }

// fake is the inner service: deterministic answers derived from the query,
// counted calls, optional delay, error and entry signal.
type fake struct {
	calls   atomic.Int64
	delay   time.Duration
	err     error
	entered chan struct{} // when set, receives once per call, at its start
}

func (f *fake) enter(ctx context.Context) error {
	f.calls.Add(1)
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.err != nil {
		return f.err
	}
	select {
	case <-time.After(f.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fake) Metrics(ctx context.Context, q clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	return metricsAnswer(q), nil
}

func (f *fake) Series(ctx context.Context, q clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	return seriesAnswer(q), nil
}

func (f *fake) TopAds(ctx context.Context, q clickagg.TopQuery) (*clickagg.TopResult, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	return topAnswer(q), nil
}

// counts differ per query, so that a wrong key shows as a wrong answer.
func counts(q interface{ Key() string }) clickagg.Counts {
	n := int64(len(q.Key()))
	return clickagg.Counts{Impressions: 1000 + n, Clicks: 10 + n, Conversions: n % 7, SpendMicros: 1234567 * n}
}

func metricsAnswer(q clickagg.MetricsQuery) *clickagg.MetricsResult {
	return &clickagg.MetricsResult{Range: q.Range, Rows: []clickagg.MetricsRow{
		{Dims: map[clickagg.Dimension]string{clickagg.DimCountry: "KR", clickagg.DimMinute: q.Range.From.Format(time.RFC3339)}, Counts: counts(q)},
		{Dims: map[clickagg.Dimension]string{clickagg.DimCountry: "US"}},
	}}
}

func seriesAnswer(q clickagg.SeriesQuery) *clickagg.SeriesResult {
	r := &clickagg.SeriesResult{Range: q.Range}
	for t := q.Range.From; t.Before(q.Range.To) && len(r.Points) < 5; t = t.Add(q.Granularity) {
		r.Points = append(r.Points, clickagg.SeriesPoint{Time: t, Counts: counts(q)})
	}
	return r
}

func topAnswer(q clickagg.TopQuery) *clickagg.TopResult {
	r := &clickagg.TopResult{Range: q.Range}
	for i := range q.N {
		r.Ads = append(r.Ads, clickagg.TopAd{AdID: fmt.Sprintf("ad-%d", i), Counts: counts(q)})
	}
	return r
}

// recorder is a Hooks that keeps "kind outcome" lines.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) OnLookup(kind string, outcome cache.Outcome, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, kind+" "+string(outcome))
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// startRedis starts a Redis for the test and a client with short timeouts,
// so that a stopped server fails calls quickly.
func startRedis(t *testing.T) (*services.Redis, *redis.Client) {
	t.Helper()
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{
		Addr:        r.Addr(),
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
	})
	t.Cleanup(func() { rdb.Close() })
	return r, rdb
}

func metricsQuery(rng clickagg.Range, countries ...string) clickagg.MetricsQuery {
	return clickagg.MetricsQuery{Range: rng, Filter: clickagg.Filter{Countries: countries}, GroupBy: []clickagg.Dimension{clickagg.DimCountry, clickagg.DimMinute}}
}

// kindCase asks one query of one kind; ask returns the answer with Cached
// cleared, for comparison, and Cached apart.
type kindCase struct {
	name string
	q    interface{ Key() string }
	want any
	ask  func(context.Context, *cache.Cache) (any, bool, error)
}

func split[R any](r *R, err error, cached func(*R) *bool) (any, bool, error) {
	if err != nil {
		return nil, false, err
	}
	was := *cached(r)
	*cached(r) = false
	return r, was, nil
}

func kinds(rng clickagg.Range) []kindCase {
	mq := metricsQuery(rng, "US", "KR")
	sq := clickagg.SeriesQuery{AdID: "ad-7", Range: rng, Granularity: time.Minute, Filter: clickagg.Filter{Devices: []string{"mobile"}}}
	tq := clickagg.TopQuery{Range: rng, N: 3, Metric: clickagg.MetricClicks}
	return []kindCase{
		{"metrics", mq, metricsAnswer(mq), func(ctx context.Context, c *cache.Cache) (any, bool, error) {
			r, err := c.Metrics(ctx, mq)
			return split(r, err, func(r *clickagg.MetricsResult) *bool { return &r.Cached })
		}},
		{"series", sq, seriesAnswer(sq), func(ctx context.Context, c *cache.Cache) (any, bool, error) {
			r, err := c.Series(ctx, sq)
			return split(r, err, func(r *clickagg.SeriesResult) *bool { return &r.Cached })
		}},
		{"top", tq, topAnswer(tq), func(ctx context.Context, c *cache.Cache) (any, bool, error) {
			r, err := c.TopAds(ctx, tq)
			return split(r, err, func(r *clickagg.TopResult) *bool { return &r.Cached })
		}},
	}
}

// expect asks k and checks the answer and whether it was cached.
func expect(t *testing.T, c *cache.Cache, k kindCase, cached bool) {
	t.Helper()
	got, was, err := k.ask(context.Background(), c)
	if err != nil {
		t.Fatalf("%s: %v", k.name, err)
	}
	if was != cached {
		t.Errorf("%s: Cached = %v, want %v", k.name, was, cached)
	}
	if !reflect.DeepEqual(got, k.want) {
		t.Errorf("%s: answer\n%+v\nwant\n%+v", k.name, got, k.want)
	}
}

func TestMissThenHit(t *testing.T) {
	_, rdb := startRedis(t)
	for _, k := range kinds(past) {
		t.Run(k.name, func(t *testing.T) {
			inner, rec := &fake{}, &recorder{}
			c := cache.New(rdb, inner, cache.Options{Now: fixedNow, Hooks: rec})
			expect(t, c, k, false)
			if n := inner.calls.Load(); n != 1 {
				t.Fatalf("inner calls after a miss = %d, want 1", n)
			}
			expect(t, c, k, true)
			if n := inner.calls.Load(); n != 1 {
				t.Errorf("inner calls after a hit = %d, want 1", n)
			}
			if got, want := c.Stats(), (cache.Stats{Hits: 1, Misses: 1, Sets: 1, HitRatio: 0.5}); got != want {
				t.Errorf("stats %+v, want %+v", got, want)
			}
			if got, want := rec.lines(), []string{k.name + " miss", k.name + " hit"}; !reflect.DeepEqual(got, want) {
				t.Errorf("hooks %q, want %q", got, want)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	_, rdb := startRedis(t)
	ctx := context.Background()
	o := cache.Options{Now: fixedNow, PastTTL: 40 * time.Minute, CurrentTTL: 7 * time.Second}
	c := cache.New(rdb, &fake{}, o)
	for _, tc := range []struct {
		name string
		rng  clickagg.Range
		want time.Duration
	}{
		{"ends at the current minute", past, o.PastTTL},
		{"ends before it", clickagg.Range{From: past.From, To: past.To.Add(-time.Minute)}, o.PastTTL},
		{"includes it", current, o.CurrentTTL},
		{"future", clickagg.Range{From: past.From, To: current.To.Add(time.Hour)}, o.CurrentTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.TTL(tc.rng); got != tc.want {
				t.Errorf("TTL = %v, want %v", got, tc.want)
			}
			q := metricsQuery(tc.rng)
			if _, err := c.Metrics(ctx, q); err != nil {
				t.Fatal(err)
			}
			ttl, err := rdb.TTL(ctx, c.Key(q)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl > tc.want || ttl < tc.want-2*time.Second {
				t.Errorf("Redis TTL = %v, want about %v", ttl, tc.want)
			}
		})
	}
}

func TestEntry(t *testing.T) {
	_, rdb := startRedis(t)
	ctx := context.Background()
	c := cache.New(rdb, &fake{}, cache.Options{Now: fixedNow})
	q := metricsQuery(past, "KR")
	if _, err := c.Metrics(ctx, q); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.Get(ctx, c.Key(q)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		At int64                   `json:"at"`
		V  *clickagg.MetricsResult `json:"v"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("entry %s: %v", raw, err)
	}
	if e.At != now.UnixMicro() {
		t.Errorf("at = %d, want %d", e.At, now.UnixMicro())
	}
	if !reflect.DeepEqual(e.V, metricsAnswer(q)) {
		t.Errorf("v = %+v, want %+v", e.V, metricsAnswer(q))
	}
}

func TestKeys(t *testing.T) {
	_, rdb := startRedis(t)
	c := cache.New(rdb, &fake{}, cache.Options{Now: fixedNow})
	key := func(q interface{ Key() string }) string { return c.Key(q) }

	a := metricsQuery(past, "US", "KR", "DE")
	b := metricsQuery(past, "DE", "US", "KR", "US")
	if key(a) != key(b) {
		t.Errorf("equal queries, different keys:\n%s\n%s", key(a), key(b))
	}
	if !strings.HasPrefix(key(a), "clickagg:v1:metrics|") {
		t.Errorf("key %q lacks the prefix and kind", key(a))
	}
	others := []interface{ Key() string }{
		metricsQuery(past, "US", "KR"),
		metricsQuery(current, "US", "KR", "DE"),
		clickagg.MetricsQuery{Range: past, Filter: a.Filter},
		clickagg.TopQuery{Range: past, Filter: a.Filter, N: 10, Metric: clickagg.MetricClicks},
		clickagg.TopQuery{Range: past, Filter: a.Filter, N: 10, Metric: clickagg.MetricClicks, Approx: true},
		clickagg.SeriesQuery{AdID: "x", Range: past, Filter: a.Filter, Granularity: time.Minute},
	}
	seen := map[string]int{key(a): -1}
	for i, q := range others {
		if j, ok := seen[key(q)]; ok {
			t.Errorf("queries %d and %d share key %s", i, j, key(q))
		}
		seen[key(q)] = i
	}

	var ads []string
	for i := range 500 {
		ads = append(ads, fmt.Sprintf("ad-%04d", i))
	}
	long := clickagg.MetricsQuery{Range: past, Filter: clickagg.Filter{AdIDs: ads}}
	long2 := clickagg.MetricsQuery{Range: past, Filter: clickagg.Filter{AdIDs: append(ads[:499:499], "ad-x")}}
	if k := key(long); len(k) > len("clickagg:v1:")+200 || !strings.HasPrefix(k, "clickagg:v1:metrics|") {
		t.Errorf("long key %q (%d bytes): want at most 200 bytes after the prefix", k, len(k))
	}
	if key(long) == key(long2) {
		t.Errorf("long queries that differ at the end share key %s", key(long))
	}
	k := kindCase{"long", long, metricsAnswer(long), func(ctx context.Context, c *cache.Cache) (any, bool, error) {
		r, err := c.Metrics(ctx, long)
		return split(r, err, func(r *clickagg.MetricsResult) *bool { return &r.Cached })
	}}
	expect(t, c, k, false)
	expect(t, c, k, true)
}

func TestSingleflight(t *testing.T) {
	_, rdb := startRedis(t)
	inner := &fake{delay: 100 * time.Millisecond}
	c := cache.New(rdb, inner, cache.Options{Now: fixedNow})
	q := metricsQuery(past, "KR")
	const callers = 50
	results := make([]*clickagg.MetricsResult, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			r, err := c.Metrics(context.Background(), q)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if n := inner.calls.Load(); n != 1 {
		t.Errorf("inner calls = %d, want 1", n)
	}
	st := c.Stats()
	// A caller slower than the inner call and the SET gets a hit instead.
	if st.Shared != callers-1-st.Hits || st.Shared < callers/2 {
		t.Errorf("stats %+v: want %d callers sharing the leader's call", st, callers-1)
	}
	want := metricsAnswer(q)
	for i, r := range results {
		was := r.Cached
		r.Cached = false
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("caller %d: %+v, want %+v", i, r, want)
		}
		r.Cached = was
	}
	// Each caller owns its answer.
	results[0].Rows[0].Clicks = -1
	results[0].Rows[0].Dims[clickagg.DimCountry] = "changed"
	for i, r := range results[1:] {
		if r.Rows[0].Clicks == -1 || r.Rows[0].Dims[clickagg.DimCountry] == "changed" {
			t.Fatalf("caller %d sees caller 0's change", i+1)
		}
	}
}

// TestLeaderCancelled: the caller whose call runs leaves; the caller that
// joined it still gets the answer.
func TestLeaderCancelled(t *testing.T) {
	_, rdb := startRedis(t)
	inner := &fake{delay: 300 * time.Millisecond, entered: make(chan struct{}, 1)}
	c := cache.New(rdb, inner, cache.Options{Now: fixedNow})
	q := metricsQuery(past, "KR")

	lctx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Metrics(lctx, q)
		leaderErr <- err
	}()
	<-inner.entered
	joined := make(chan *clickagg.MetricsResult, 1)
	go func() {
		r, err := c.Metrics(context.Background(), q)
		if err != nil {
			t.Error(err)
		}
		joined <- r
	}()
	time.Sleep(50 * time.Millisecond) // let it join
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	r := <-joined
	if r == nil || !reflect.DeepEqual(r.Rows, metricsAnswer(q).Rows) {
		t.Errorf("joiner got %+v", r)
	}
	if n := inner.calls.Load(); n != 1 {
		t.Errorf("inner calls = %d, want 1", n)
	}
}

// askAll asks every kind n times and checks the answers come from the inner
// service; it returns how long that took.
func askAll(t *testing.T, c *cache.Cache, ks []kindCase, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for i := range n {
		k := ks[i%len(ks)]
		got, was, err := k.ask(context.Background(), c)
		if err != nil {
			t.Fatalf("%s with Redis down: %v", k.name, err)
		}
		if was || !reflect.DeepEqual(got, k.want) {
			t.Fatalf("%s with Redis down: cached=%v %+v, want %+v", k.name, was, got, k.want)
		}
	}
	return time.Since(start)
}

// waitHit asks k until the answer comes from Redis again.
func waitHit(t *testing.T, c *cache.Cache, k kindCase) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, was, err := k.ask(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if was {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hit after Redis came back: %+v", c.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisDown(t *testing.T) {
	r, rdb := startRedis(t)
	inner := &fake{}
	c := cache.New(rdb, inner, cache.Options{Now: fixedNow})
	ks := kinds(past)
	for _, k := range ks {
		expect(t, c, k, false)
		expect(t, c, k, true)
	}

	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	before, calls := c.Stats(), inner.calls.Load()
	took := askAll(t, c, ks, 10)
	after := c.Stats()
	if after.Errors-before.Errors < 10 || after.Hits != before.Hits || after.Sets != before.Sets {
		t.Errorf("stats before %+v, after 10 calls with Redis down %+v: want 10 more errors", before, after)
	}
	if n := inner.calls.Load() - calls; n != 10 {
		t.Errorf("inner calls with Redis down = %d, want 10", n)
	}
	if took > 2*time.Second {
		t.Errorf("10 calls with Redis down took %v", took)
	}
	t.Logf("10 calls with Redis down: %v, %+v", took, after)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		waitHit(t, c, k) // the restarted Redis is empty: a miss, then hits
	}
	errs := c.Stats().Errors
	for _, k := range ks {
		expect(t, c, k, true)
	}
	if got := c.Stats().Errors; got != errs {
		t.Errorf("errors went on after Redis came back: %d, then %d", errs, got)
	}
}

// TestRedisHung: a Redis that accepts connections but does not answer (here
// SIGSTOPped) costs each call the Timeout at most, even with a client that
// waits seconds for an answer.
func TestRedisHung(t *testing.T) {
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()}) // ReadTimeout 3 s, no ContextTimeoutEnabled
	t.Cleanup(func() { rdb.Close() })
	inner := &fake{}
	c := cache.New(rdb, inner, cache.Options{Now: fixedNow, Timeout: 50 * time.Millisecond})
	ks := kinds(past)
	expect(t, c, ks[0], false) // a connection in the pool

	pid := r.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)

	before := c.Stats()
	took := askAll(t, c, ks, 10)
	if took > 2*time.Second {
		t.Errorf("10 calls with Redis hung took %v", took)
	}
	if after := c.Stats(); after.Errors-before.Errors != 10 {
		t.Errorf("stats before %+v, after 10 calls with Redis hung %+v: want 10 more errors", before, after)
	}
	resume()
	waitHit(t, c, ks[0])
}

func TestInnerError(t *testing.T) {
	_, rdb := startRedis(t)
	ctx := context.Background()
	for _, innerErr := range []error{&clickagg.ParamError{Param: "from", Message: "bad time"}, errors.New("clickhouse: boom")} {
		inner := &fake{err: innerErr}
		c := cache.New(rdb, inner, cache.Options{Now: fixedNow})
		q := metricsQuery(past, "KR")
		for range 2 {
			r, err := c.Metrics(ctx, q)
			if err != innerErr || r != nil {
				t.Errorf("got %v, %v; want the inner error %v unchanged", r, err, innerErr)
			}
		}
		if n := inner.calls.Load(); n != 2 {
			t.Errorf("inner calls = %d, want 2: errors are not cached", n)
		}
		if n, err := rdb.Exists(ctx, c.Key(q)).Result(); err != nil || n != 0 {
			t.Errorf("key exists after an error: %d, %v", n, err)
		}
		if st := c.Stats(); st.Sets != 0 || st.Errors != 0 {
			t.Errorf("stats %+v", st)
		}
	}
}

func TestUnreadableEntry(t *testing.T) {
	_, rdb := startRedis(t)
	ctx := context.Background()
	inner := &fake{}
	c := cache.New(rdb, inner, cache.Options{Now: fixedNow})
	k := kinds(past)[0]
	if err := rdb.Set(ctx, c.Key(k.q), "not json", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	expect(t, c, k, false)
	expect(t, c, k, true) // overwritten
	if st := c.Stats(); st.Errors != 1 || st.Sets != 1 || inner.calls.Load() != 1 {
		t.Errorf("stats %+v, inner calls %d", st, inner.calls.Load())
	}
}

// A change marked on a range drops the cached answers about overlapping
// ranges, short or long, and leaves the others alone.
func TestMarkChanged(t *testing.T) {
	_, rdb := startRedis(t)
	clock := now
	c := cache.New(rdb, &fake{}, cache.Options{Now: func() time.Time { return clock }})
	ctx := context.Background()
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	short := metricsQuery(clickagg.Range{From: day.Add(10 * time.Hour), To: day.Add(11 * time.Hour)})
	long := metricsQuery(clickagg.Range{From: day.Add(-5 * 24 * time.Hour), To: day.Add(24 * time.Hour)})
	other := metricsQuery(clickagg.Range{From: day.Add(14 * time.Hour), To: day.Add(15 * time.Hour)})
	ask := func(q clickagg.MetricsQuery) bool {
		t.Helper()
		res, err := c.Metrics(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return res.Cached
	}
	for _, q := range []clickagg.MetricsQuery{short, long, other} {
		ask(q)
		if !ask(q) {
			t.Fatal("not cached")
		}
	}
	clock = clock.Add(time.Second) // the late event commits after the answers were computed
	if err := c.MarkChanged(ctx, clickagg.Range{From: day.Add(10*time.Hour + 5*time.Minute), To: day.Add(10*time.Hour + 6*time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second) // an answer computed in the mark's millisecond would count as stale
	if ask(short) || ask(long) {
		t.Error("an answer about a changed range was served from the cache")
	}
	if !ask(other) {
		t.Error("an answer about an unchanged range was dropped")
	}
	if !ask(short) || !ask(long) {
		t.Error("recomputed answers were not cached again")
	}
	if st := c.Stats(); st.Stale != 2 || st.Marks == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestLocalTier(t *testing.T) {
	srv, rdb := startRedis(t)
	clock := now
	inner := &fake{}
	c := cache.New(rdb, inner, cache.Options{Now: func() time.Time { return clock }, LocalTTL: time.Second})
	k := kinds(past)[0]
	expect(t, c, k, false) // computed: into Redis and the local tier
	// The benchmark route asks Redis itself.
	if _, was, err := k.ask(clickagg.WithoutLocalCache(context.Background()), c); err != nil || !was || c.Stats().Local != 0 {
		t.Fatalf("without the local tier: cached %v, %v, stats %+v", was, err, c.Stats())
	}
	// Redis gone: the local tier still answers, without an inner call.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	expect(t, c, k, true)
	if st := c.Stats(); st.Local != 1 || st.Hits != 2 || inner.calls.Load() != 1 {
		t.Fatalf("stats %+v, inner calls %d: want one local hit", st, inner.calls.Load())
	}
	// The instance's own late mark empties it at once (the mark itself
	// fails with Redis down; the answer is recomputed).
	c.MarkChanged(context.Background(), past)
	expect(t, c, k, false)
	if n := inner.calls.Load(); n != 2 {
		t.Errorf("inner calls after MarkChanged = %d, want 2", n)
	}
	// And it lives LocalTTL at most.
	expect(t, c, k, true)
	clock = clock.Add(1100 * time.Millisecond)
	expect(t, c, k, false)
	if st := c.Stats(); st.Local != 2 {
		t.Errorf("stats %+v: want two local hits", st)
	}
}
