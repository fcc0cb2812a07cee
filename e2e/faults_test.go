package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

// The fault tests run the real `clickagg serve` binary against real
// servers and break something under it. Each logs what it measured.

// Fault durations; the environment shortens them for development only.
var (
	outageFor   = durationEnv("CLICKAGG_FAULT_OUTAGE", 30*time.Second)
	overloadFor = durationEnv("CLICKAGG_FAULT_OVERLOAD", 60*time.Second)
)

func durationEnv(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
	}
}

// batch is one request body and the events in it, resent as it is until
// a 200 acknowledges it.
type batch struct {
	events []event
	body   []byte
	// An attempt got no answer, or a 503 (the server may not know either,
	// when ClickHouse took the rows and went away): they may be committed.
	ambiguous bool
}

func newBatch(events []event) *batch {
	lines := make([][]byte, len(events))
	for i, e := range events {
		lines[i] = e.json()
	}
	return &batch{events: events, body: bytes.Join(lines, []byte("\n"))}
}

// attempt is one POST as a client saw it.
type attempt struct {
	start, end time.Time
	outcome
}

// ledger is the clients' record: which events a 200 acknowledged and what
// every attempt got.
type ledger struct {
	mu         sync.Mutex
	acked      map[string]event
	ackedAt    []time.Time // end of each 200
	attempts   []attempt
	accepted   int // summed over 200 answers
	duplicates int
	resent     int      // acknowledged events sent again: the duplicates a 200 must report
	lateDups   int      // events of ambiguous batches committed by an attempt not answered 200
	mismatches []string // answers that do not add up
}

func newLedger() *ledger { return &ledger{acked: map[string]event{}} }

func (l *ledger) record(a attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts = append(l.attempts, a)
}

// ack books a 200 for b. Its duplicates must be the events acknowledged
// before or, for an ambiguous batch, more: on one server all its events (a
// request's rows are committed whole, in one INSERT), on a cluster those of
// the shards that committed while another failed.
func (l *ledger) ack(b *batch, a answer, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	before := 0
	for _, e := range b.events {
		if _, ok := l.acked[e.id]; ok {
			before++
		}
	}
	ok := a.Accepted+a.Duplicates == len(b.events) && a.Duplicates == before
	if b.ambiguous && a.Accepted+a.Duplicates == len(b.events) && a.Duplicates > before {
		ok = true
		l.lateDups += a.Duplicates - before
	}
	if !ok {
		l.mismatches = append(l.mismatches, fmt.Sprintf("%d events, %d acknowledged before (ambiguous %v): answer %+v",
			len(b.events), before, b.ambiguous, a))
	}
	for _, e := range b.events {
		l.acked[e.id] = e
	}
	l.accepted += a.Accepted
	l.duplicates += a.Duplicates
	l.resent += before
	l.ackedAt = append(l.ackedAt, at)
}

func (l *ledger) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstAckAfter is the end of the first 200 after t, zero when none.
func (l *ledger) firstAckAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, at := range l.ackedAt {
		if at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

func (l *ledger) events() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]event, 0, len(l.acked))
	for _, e := range l.acked {
		out = append(out, e)
	}
	return out
}

// feeder is a client sending batches of new events with unique ids, some
// carrying resends of events it had acknowledged, and resending a batch
// as it is until a 200, as a real client would.
type feeder struct {
	url       string
	alt       string // when set, where to turn when url does not answer (a load balancer's retry)
	hc        *http.Client
	l         *ledger
	prefix    string
	size      int           // new events per batch
	pause     time.Duration // after each 200
	resend    float64       // share of batches that also carry 10 acknowledged events
	netRetry  time.Duration // wait after a failed connection (0: give up the batch)
	inflight  *atomic.Int64 // requests in flight, when set
	failedNet atomic.Int64
}

// run sends until stop is closed, then finishes its last batch; ctx is the
// hard limit.
func (f *feeder) run(ctx context.Context, stop <-chan struct{}, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	now := time.Now().UTC()
	var mine []event // acknowledged
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		events := make([]event, 0, f.size+10)
		for i := range f.size {
			e := randomEvent(r, i, now, 30*time.Minute)
			e.id = fmt.Sprintf("%s-%d-%d-%d", f.prefix, seed, n, i)
			events = append(events, e)
		}
		if len(mine) > 0 && r.Float64() < f.resend {
			for range 10 {
				events = append(events, mine[r.IntN(len(mine))])
			}
			// no id twice in one request: a resend may repeat an id drawn twice
			events = slices.CompactFunc(sortedByID(events), func(a, b event) bool { return a.id == b.id })
		}
		b := newBatch(events)
		if !f.deliver(ctx, b) {
			return
		}
		mine = append(mine, events[:min(len(events), 50)]...)
		if f.pause > 0 && !sleepCtx(ctx, f.pause) {
			return
		}
	}
}

// endFeeders stops the feeders and waits for their last batches, fails the
// test on answers that contradict earlier ones, and returns how many
// attempts got no answer.
func endFeeders(t *testing.T, ctx context.Context, stop chan struct{}, wg *sync.WaitGroup, l *ledger, feeders []*feeder) (noAnswer int64) {
	t.Helper()
	close(stop)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("clients still had unacknowledged batches at the time limit")
	}
	if len(l.mismatches) > 0 {
		t.Errorf("%d answers do not match what was acknowledged before, e.g. %v", len(l.mismatches), l.mismatches[:min(3, len(l.mismatches))])
	}
	for _, f := range feeders {
		noAnswer += f.failedNet.Load()
	}
	return noAnswer
}

func sortedByID(events []event) []event {
	slices.SortFunc(events, func(a, b event) int { return strings.Compare(a.id, b.id) })
	return events
}

// deliver posts b until a 200; false when ctx ended first or the batch
// was given up.
func (f *feeder) deliver(ctx context.Context, b *batch) bool {
	for {
		if f.inflight != nil {
			f.inflight.Add(1)
		}
		start := time.Now()
		o := postBatch(ctx, f.hc, f.url, b.body)
		if f.inflight != nil {
			f.inflight.Add(-1)
		}
		if ctx.Err() != nil {
			return false
		}
		f.l.record(attempt{start, time.Now(), o})
		switch {
		case o.err != nil && o.status == 0:
			b.ambiguous = true
			f.failedNet.Add(1)
			if f.alt != "" {
				f.url, f.alt = f.alt, f.url
			}
			if f.netRetry == 0 || !sleepCtx(ctx, f.netRetry) {
				return false
			}
		case o.status == 200 && o.err == nil:
			f.l.ack(b, o.ans, time.Now())
			return true
		case o.status == http.StatusServiceUnavailable:
			b.ambiguous = true
			if !sleepCtx(ctx, retryAfter(o.retryAfter)) {
				return false
			}
		default: // recorded; the test fails on it, the batch is still resent
			if !sleepCtx(ctx, time.Second) {
				return false
			}
		}
	}
}

// checkStored compares the database with the acknowledged events: each
// exactly once counted, any other copy marked duplicate, and the minute
// aggregates equal to the model. It returns the rows stored as duplicates.
func checkStored(t *testing.T, db testenv.ClickHouseDB, acked []event) (dupRows int) {
	t.Helper()
	dupRows = checkEvents(t, db, acked)
	same(t, "ad_stats_minute by minute x ad", minuteAggregates(t, db), minuteModel(acked))
	return dupRows
}

// checkEvents checks that each acknowledged event is counted exactly once
// in events and nothing else is; it returns the rows stored as duplicates.
func checkEvents(t *testing.T, db testenv.ClickHouseDB, acked []event) (dupRows int) {
	t.Helper()
	got := testenv.QueryString(t, db, "SELECT countIf(duplicate = 0), uniqExact(event_id), uniqExactIf(event_id, duplicate = 0), countIf(duplicate = 1) FROM events")
	var counted, uniq, uniqCounted int
	if _, err := fmt.Sscanf(got, "%d\t%d\t%d\t%d", &counted, &uniq, &uniqCounted, &dupRows); err != nil {
		t.Fatalf("events: %q: %v", got, err)
	}
	if counted != len(acked) || uniq != len(acked) || uniqCounted != len(acked) {
		t.Errorf("events: %d counted, %d distinct ids (%d counted), want %d acknowledged events each counted once", counted, uniq, uniqCounted, len(acked))
	}
	ids := map[string]int{}
	for _, id := range strings.Split(testenv.QueryString(t, db, "SELECT event_id FROM events WHERE duplicate = 0"), "\n") {
		ids[id]++
	}
	missing, twice := 0, 0
	var sample []string
	for _, e := range acked {
		switch ids[e.id] {
		case 0:
			missing++
		case 1:
		default:
			if twice++; len(sample) < 3 {
				sample = append(sample, "'"+e.id+"'")
			}
		}
	}
	if missing > 0 || twice > 0 {
		t.Errorf("of %d acknowledged events %d are missing and %d counted more than once", len(acked), missing, twice)
	}
	if len(sample) > 0 {
		t.Logf("rows of events counted twice (event_id, received_at, duplicate): %s", strings.ReplaceAll(testenv.QueryString(t, db,
			"SELECT event_id, toString(received_at), duplicate FROM events WHERE event_id IN ("+strings.Join(sample, ",")+") ORDER BY event_id, received_at"), "\n", "; "))
	}
	return dupRows
}

func minuteModel(events []event) map[string]counts {
	return model(events, func(e event) string { return fmt.Sprint(e.ts.Truncate(time.Minute).Unix(), " ", e.ad) })
}

// minuteAggregates reads ad_stats_minute keyed like minuteModel.
func minuteAggregates(t *testing.T, db testenv.ClickHouseDB) map[string]counts {
	t.Helper()
	rows := testenv.QueryString(t, db, "SELECT toUnixTimestamp(minute), ad_id, sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_minute GROUP BY minute, ad_id")
	have := map[string]counts{}
	for _, line := range strings.Split(rows, "\n") {
		var minute int64
		var ad string
		var c counts
		if _, err := fmt.Sscanf(line, "%d\t%s\t%d\t%d\t%d\t%d", &minute, &ad, &c.imp, &c.clk, &c.conv, &c.spend); err != nil {
			t.Fatalf("ad_stats_minute row %q: %v", line, err)
		}
		have[fmt.Sprint(minute, " ", ad)] = c
	}
	return have
}

// differing counts the cells where got and want differ.
func differing(got, want map[string]counts) int {
	n := 0
	for k, w := range want {
		if got[k] != w {
			n++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			n++
		}
	}
	return n
}

// outageAttempts sums up the attempts started at or after from and
// answered before to.
func outageAttempts(l *ledger, from, to time.Time) (n, status503, noRetryAfter, ok200 int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.attempts {
		if a.start.Before(from) || a.end.After(to) {
			continue
		}
		n++
		switch a.status {
		case 503:
			status503++
			if a.retryAfter == "" {
				noRetryAfter++
			}
		case 200:
			ok200++
		}
	}
	return
}

// unexpected lists attempts that got neither 200 nor 503 with a
// Retry-After, or no answer.
func unexpected(l *ledger) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for _, a := range l.attempts {
		switch {
		case a.status == 0 || a.err != nil:
			bad = append(bad, fmt.Sprintf("no answer: %v", a.err))
		case a.status == 503 && a.retryAfter == "":
			bad = append(bad, "503 without Retry-After")
		case a.status != 200 && a.status != 503:
			bad = append(bad, fmt.Sprintf("status %d", a.status))
		}
	}
	return bad
}

func count503(l *ledger) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if a.status == 503 {
			n++
		}
	}
	return n
}

// TestFaultClickHouseDown: ClickHouse is stopped for 30 s under steady
// ingest and started again. Requests meanwhile get 503 with Retry-After,
// ingest resumes without restarting clickagg, and every acknowledged event
// counts exactly once though clients resent their batches.
func TestFaultClickHouseDown(t *testing.T) {
	t.Parallel()
	db := testenv.Migrate(t, testenv.OwnClickHouse(t))
	rd := testenv.Redis(t)
	p := serveProc(t, db, rd.Addr(), "--linger", "50ms")

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), outageFor+3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{}
	feeders := make([]*feeder, 4)
	for i := range feeders {
		feeders[i] = &feeder{url: p.url("/v1/events"), hc: hc, l: l, prefix: "chd", size: 100, pause: 20 * time.Millisecond, resend: 0.2}
		wg.Go(func() { feeders[i].run(ctx, stop, uint64(i+1)) })
	}
	defer func() { close(stop); cancel(); wg.Wait() }()

	waitFor(t, 30*time.Second, "2000 events acknowledged before the outage", func() bool { return l.ackedCount() >= 2000 })
	// Stop is SIGTERM, then SIGKILL after a 15 s grace: 18.16 keeps serving
	// connections that stay busy, so ingest goes on until the kill, which
	// lands in the middle of INSERTs whose answers are then lost.
	stopAt := time.Now()
	if err := db.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	sleepCtx(ctx, outageFor)
	upAt := time.Now()
	if err := db.Server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	var resumed time.Time
	waitFor(t, 60*time.Second, "a 200 after ClickHouse is back", func() bool {
		resumed = l.firstAckAfter(up)
		return !resumed.IsZero()
	})
	afterResume := l.ackedCount()
	waitFor(t, 60*time.Second, "1000 more events acknowledged after the outage", func() bool { return l.ackedCount() >= afterResume+1000 })
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	if ctx.Err() != nil {
		t.Fatal("clients still had unacknowledged batches at the time limit")
	}

	unknown := 0 // 503s for rows whose INSERT lost its answer
	for _, a := range l.attempts {
		if a.status == 503 && strings.Contains(a.message, "outcome unknown") {
			unknown++
		}
	}
	n, n503, noRA, n200 := outageAttempts(l, down, upAt)
	if n == 0 || n503 != n || noRA != 0 || n200 != 0 {
		t.Errorf("while ClickHouse was down: %d attempts, %d 503 (%d without Retry-After), %d 200", n, n503, noRA, n200)
	}
	if bad := unexpected(l); len(bad) > 0 {
		t.Errorf("%d attempts got other than 200 or 503+Retry-After, e.g. %v", len(bad), bad[:min(3, len(bad))])
	}
	if len(l.mismatches) > 0 {
		t.Errorf("%d answers do not match what was acknowledged before, e.g. %v", len(l.mismatches), l.mismatches[:min(3, len(l.mismatches))])
	}
	if resumed.Sub(up) > 10*time.Second {
		t.Errorf("first 200 came %v after ClickHouse answered again", resumed.Sub(up))
	}
	st := p.ingestStatus()
	if st.Collector.Duplicates != int64(l.duplicates) || l.duplicates != l.resent+l.lateDups || st.Collector.Accepted != int64(l.accepted) {
		t.Errorf("duplicates: collector %d, answers %d, resends of acknowledged events %d; accepted: collector %d, answers %d",
			st.Collector.Duplicates, l.duplicates, l.resent+l.lateDups, st.Collector.Accepted, l.accepted)
	}
	acked := l.events()
	dupRows := checkEvents(t, db, acked)
	if dupRows < l.resent+l.lateDups {
		t.Errorf("%d rows stored as duplicates, want at least the %d resends", dupRows, l.resent+l.lateDups)
	}
	// The kill can land between an INSERT's part in events and those of its
	// views (18.16 writes them one after another): the events are there, a
	// view misses them. Reconciliation, which serve runs on a schedule, is
	// the remedy; here it runs once, and then the aggregates must be exact.
	want := minuteModel(acked)
	off := differing(minuteAggregates(t, db), want)
	var oldest time.Time
	for _, e := range acked {
		if oldest.IsZero() || e.ts.Before(oldest) {
			oldest = e.ts
		}
	}
	fixed := reconcileFix(t, db, oldest.Truncate(time.Minute), time.Now().UTC().Truncate(time.Minute).Add(time.Minute))
	same(t, "ad_stats_minute by minute x ad after reconciliation", minuteAggregates(t, db), want)
	t.Logf("before reconciliation %d minute x ad cells differed from the model; reconciliation fixed %v", off, fixed)
	t.Logf("ClickHouse stop took %v, down %v (stop call to server answering %v); first 200 %v after it answered",
		down.Sub(stopAt).Round(time.Millisecond), upAt.Sub(down).Round(time.Millisecond), up.Sub(stopAt).Round(time.Millisecond), resumed.Sub(up).Round(time.Millisecond))
	t.Logf("during the outage %d attempts, all 503 with Retry-After; %d 503s in all (%d for rows whose INSERT lost its answer), %d attempts; %d events acknowledged, each counted once; %d resends of acknowledged events and %d events committed under a 503 answered as duplicates (collector: %d duplicates, %d shed; ingestor: %d failed rows, %d retries, %d blocks found by probe)",
		n, count503(l), unknown, len(l.attempts), len(acked), l.resent, l.lateDups, st.Collector.Duplicates, st.Collector.Shed, st.Ingestor.FailedRows, st.Ingestor.Retries, st.Ingestor.Recovered)
}

// TestFaultRedisRestart: Redis is stopped and started again under query
// load. Every query answers 200 with the totals of the model; queries
// that find no cache are answered by ClickHouse.
func TestFaultRedisRestart(t *testing.T) {
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	p := serveProc(t, db, rd.Addr())

	// Past minutes only: the answers are cached for an hour and no longer change.
	end := time.Now().UTC().Truncate(time.Minute).Add(-5 * time.Minute)
	from, to := end.Add(-2*time.Hour), end
	r := rand.New(rand.NewPCG(7, 8))
	events := make([]event, 20000)
	for i := range events {
		events[i] = randomEvent(r, i, to.Add(-time.Minute), 2*time.Hour-2*time.Minute)
		events[i].id = fmt.Sprintf("rr-%d", i)
	}
	l := newLedger()
	f := &feeder{url: p.url("/v1/events"), hc: &http.Client{}, l: l}
	for i := 0; i < len(events); i += 2000 {
		if !f.deliver(context.Background(), newBatch(events[i:i+2000])) {
			t.Fatal("preload failed")
		}
	}
	one := model(events, byCountryFormat)
	byCountry := model(events, func(e event) string { return e.country })
	// The model is what ClickHouse holds.
	direct := map[string]counts{}
	for _, line := range strings.Split(testenv.QueryString(t, db, "SELECT country, sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_minute GROUP BY country"), "\n") {
		var k string
		var c counts
		fmt.Sscanf(line, "%s\t%d\t%d\t%d\t%d", &k, &c.imp, &c.clk, &c.conv, &c.spend)
		direct[k] = c
	}
	same(t, "ClickHouse by country", direct, byCountry)

	span := "from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339))
	type result struct {
		at      time.Time
		took    time.Duration
		cached  bool
		failure string
	}
	var (
		mu      sync.Mutex
		results []result
	)
	ask := func(hc *http.Client, r *rand.Rand) result {
		start := time.Now()
		res := result{at: start}
		var ans struct {
			Impressions int64 `json:"impressions"`
			Clicks      int64 `json:"clicks"`
			Conversions int64 `json:"conversions"`
			SpendMicros int64 `json:"spend_micros"`
			Rows        []map[string]any
			Cached      bool
		}
		var path string
		var want map[string]counts
		if r.IntN(4) == 0 {
			path, want = "/v1/metrics?group_by=country&"+span, byCountry
		} else {
			c, f := nations[r.IntN(len(nations))], formats[r.IntN(len(formats))]
			path, want = "/v1/metrics/"+c+"/"+f+"?"+span, map[string]counts{c + " " + f: one[c+" "+f]}
		}
		resp, err := hc.Get(p.url(path))
		if err != nil {
			res.failure = err.Error()
			return res
		}
		raw, _ := readAll(resp)
		res.took = time.Since(start)
		if resp.StatusCode != 200 {
			res.failure = fmt.Sprintf("%s: %d %s", path, resp.StatusCode, raw)
			return res
		}
		if err := json.Unmarshal(raw, &ans); err != nil {
			res.failure = err.Error()
			return res
		}
		res.cached = ans.Cached
		got := map[string]counts{}
		if ans.Rows == nil {
			for k := range want {
				got[k] = counts{ans.Impressions, ans.Clicks, ans.Conversions, ans.SpendMicros}
			}
		} else {
			for _, row := range ans.Rows {
				n := func(k string) int64 { return int64(row[k].(float64)) }
				got[fmt.Sprint(row["country"])] = counts{n("impressions"), n("clicks"), n("conversions"), n("spend_micros")}
			}
		}
		for k, w := range want {
			if got[k] != w {
				res.failure = fmt.Sprintf("%s: %s got %v want %v", path, k, got[k], w)
			}
		}
		return res
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 99))
			hc := &http.Client{Timeout: 10 * time.Second}
			for ctx.Err() == nil {
				res := ask(hc, r)
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
				sleepCtx(ctx, 5*time.Millisecond)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	var cs struct{ Hits, Errors, Local int64 }
	redisHits := func() int64 { p.getJSON("/v1/cache/stats", &cs); return cs.Hits - cs.Local }
	waitFor(t, 30*time.Second, "answers from Redis before the restart", func() bool { return redisHits() > 100 })
	stopAt := time.Now()
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	sleepCtx(ctx, 5*time.Second)
	startAt := time.Now()
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	errorsAtUp, hitsAtUp := cs.Errors, redisHits()
	var back time.Time
	waitFor(t, 30*time.Second, "answers from Redis again after the restart", func() bool {
		if redisHits() > hitsAtUp+100 {
			back = time.Now()
			return true
		}
		return false
	})
	sleepCtx(ctx, time.Second)
	cancel()
	wg.Wait()

	var failed []string
	var uncached, during, duringUncached int
	var maxDuring time.Duration
	for _, r := range results {
		if r.failure != "" {
			failed = append(failed, r.failure)
		}
		if !r.cached {
			uncached++
		}
		if !r.at.Before(stopAt) && r.at.Before(up) {
			during++
			maxDuring = max(maxDuring, r.took)
			if !r.cached {
				duringUncached++
			}
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d queries failed or were wrong, e.g. %v", len(failed), len(results), failed[:min(3, len(failed))])
	}
	if during == 0 {
		t.Error("no query while Redis was down")
	}
	t.Logf("Redis down %v (stop call to answering again %v), cache answering from Redis again %v after that",
		startAt.Sub(stopAt).Round(time.Millisecond), up.Sub(stopAt).Round(time.Millisecond), back.Sub(up).Round(time.Millisecond))
	t.Logf("%d queries, all 200 and equal to the model; %d uncached in all; while Redis was down %d queries, %d uncached (the rest from the in-process tier), slowest %v; cache errors %d by the restart, %d at the end",
		len(results), uncached, during, duringUncached, maxDuring.Round(time.Millisecond), errorsAtUp, cs.Errors)
}

// TestFaultKill9: clickagg is killed with SIGKILL under ingest and started
// again on the same database; clients resend what was not acknowledged.
// Every acknowledged event is there once, and the resends of events the
// killed process had committed without answering count as duplicates.
func TestFaultKill9(t *testing.T) {
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	p := serveProc(t, db, rd.Addr())

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var inflight atomic.Int64
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	feeders := make([]*feeder, 6)
	for i := range feeders {
		feeders[i] = &feeder{url: p.url("/v1/events"), hc: hc, l: l, prefix: "k9", size: 500, resend: 0.2, netRetry: 50 * time.Millisecond, inflight: &inflight}
		wg.Go(func() { feeders[i].run(ctx, stop, uint64(i+1)) })
	}
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		cancel()
		wg.Wait()
	}()

	// Three kills at random moments while requests wait for their commit:
	// some find the block still open, some an INSERT in flight.
	r := rand.New(rand.NewPCG(9, 9))
	var kills []string
	var startTook time.Duration
	for round := range 3 {
		n := l.ackedCount()
		waitFor(t, 30*time.Second, "3000 more events acknowledged", func() bool { return l.ackedCount() >= n+3000 })
		waitFor(t, 10*time.Second, "requests in flight", func() bool { return inflight.Load() >= 3 })
		time.Sleep(time.Duration(r.IntN(150)) * time.Millisecond)
		pending := p.ingestStatus().Ingestor.BufferedRows
		inflightAtKill := inflight.Load()
		ackedBefore := l.events()
		killAt := time.Now()
		p.kill()
		// Everything acknowledged so far is in ClickHouse without clickagg.
		ids := map[string]bool{}
		for _, id := range strings.Split(testenv.QueryString(t, db, "SELECT event_id FROM events WHERE duplicate = 0"), "\n") {
			ids[id] = true
		}
		lost := 0
		for _, e := range ackedBefore {
			if !ids[e.id] {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("round %d: %d of %d events acknowledged before the kill are not in ClickHouse", round, lost, len(ackedBefore))
		}
		startTook = max(startTook, p.start())
		kills = append(kills, fmt.Sprintf("%d in flight/%d rows buffered, serving again after %v",
			inflightAtKill, pending, time.Since(killAt).Round(time.Millisecond)))
	}
	n := l.ackedCount()
	waitFor(t, 30*time.Second, "3000 more events acknowledged after the last restart", func() bool { return l.ackedCount() >= n+3000 })
	stopped = true
	noAnswer := endFeeders(t, ctx, stop, &wg, l, feeders)
	st := p.ingestStatus()
	dupRows := checkStored(t, db, l.events())
	if dupRows < l.resent+l.lateDups {
		t.Errorf("%d rows stored as duplicates, want at least %d resends", dupRows, l.resent+l.lateDups)
	}
	t.Logf("3 kills (%s); start to serving at most %v; %d attempts got no answer and were resent",
		strings.Join(kills, "; "), startTook.Round(time.Millisecond), noAnswer)
	t.Logf("%d events acknowledged, each counted once; %d resends of acknowledged events and %d events the killed process committed without answering came back as duplicates (restarted collector: %d duplicates)",
		len(l.acked), l.resent, l.lateDups, st.Collector.Duplicates)
}

// TestFaultSIGTERM: SIGTERM while requests wait for a 2 s linger: the
// listener closes at once, the waiting requests are answered after their
// events are committed, and the process exits 0 within its timeout.
func TestFaultSIGTERM(t *testing.T) {
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	const timeout = 10 * time.Second
	p := serveProc(t, db, rd.Addr(), "--linger", "2s", "--shutdown-timeout", timeout.String())

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{}
	feeders := make([]*feeder, 8)
	for i := range feeders {
		feeders[i] = &feeder{url: p.url("/v1/events"), hc: hc, l: l, prefix: "term", size: 300, resend: 0.3}
		wg.Go(func() { feeders[i].run(ctx, stop, uint64(i+1)) })
	}
	defer func() { cancel(); wg.Wait() }()
	// One round acknowledged, then SIGTERM while the next waits in the buffer.
	waitFor(t, 30*time.Second, "a first round acknowledged", func() bool { return l.ackedCount() >= 8*300 })
	waitFor(t, 10*time.Second, "rows buffered", func() bool { return p.ingestStatus().Ingestor.BufferedRows > 0 })
	buffered := p.ingestStatus().Ingestor.BufferedRows
	termAt := time.Now()
	p.signal(syscall.SIGTERM)
	var refusedAfter time.Duration
	waitFor(t, 2*time.Second, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return false
		}
		refusedAfter = time.Since(termAt)
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	aliveWhenRefused := p.pid() != 0
	code, exited := p.wait(timeout + 5*time.Second)
	took := time.Since(termAt)
	close(stop)
	wg.Wait()
	if !exited || code != 0 || took > timeout {
		t.Errorf("after SIGTERM: exited %v with %d after %v, want 0 within %v", exited, code, took, timeout)
	}
	if !aliveWhenRefused {
		t.Errorf("the process was gone before connections were refused (%v): nothing shows the listener closed first", refusedAfter)
	}
	// The requests buffered at SIGTERM were answered 200 after it.
	drained := 0
	l.mu.Lock()
	for _, a := range l.attempts {
		if a.start.Before(termAt) && a.end.After(termAt) && a.status == 200 {
			drained++
		}
	}
	var other []string
	for _, a := range l.attempts {
		if a.status != 200 && a.status != 0 {
			other = append(other, fmt.Sprint(a.status))
		}
	}
	l.mu.Unlock()
	if drained == 0 {
		t.Error("no request in flight at SIGTERM was answered 200")
	}
	if len(other) > 0 {
		t.Errorf("answers other than 200 around shutdown: %v", other)
	}
	if len(l.mismatches) > 0 {
		t.Errorf("%d answers do not match what was acknowledged before, e.g. %v", len(l.mismatches), l.mismatches[:min(3, len(l.mismatches))])
	}
	counted := checkAnswered(t, db, l)
	t.Logf("SIGTERM with %d rows buffered (linger 2s): new connections refused after %v, %d requests in flight answered 200 after it, exit %d after %v (timeout %v); %d events acknowledged, all in ClickHouse once, %d stored in all",
		buffered, refusedAfter.Round(time.Millisecond), drained, code, took.Round(time.Millisecond), timeout, l.ackedCount(), counted)
}

// checkAnswered checks that every event a 200 acknowledged is in
// ClickHouse and none counts twice; batches that got no answer may or may
// not be there. It returns the events counted.
func checkAnswered(t *testing.T, db testenv.ClickHouseDB, l *ledger) (counted int) {
	t.Helper()
	got := testenv.QueryString(t, db, "SELECT countIf(duplicate = 0), uniqExact(event_id) FROM events")
	var uniq int
	fmt.Sscanf(got, "%d\t%d", &counted, &uniq)
	if counted != uniq {
		t.Errorf("%d events counted for %d distinct ids", counted, uniq)
	}
	ids := map[string]bool{}
	for _, id := range strings.Split(testenv.QueryString(t, db, "SELECT event_id FROM events WHERE duplicate = 0"), "\n") {
		ids[id] = true
	}
	acked := l.events()
	missing := 0
	for _, e := range acked {
		if !ids[e.id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged events are not in ClickHouse", missing, len(acked))
	}
	return counted
}

// TestFaultSIGTERMTimeout: SIGTERM while requests wait for a 5 s linger,
// with a 1 s shutdown timeout: the process gives up the drain and exits
// within the timeout, and no request it cut off was answered 200.
func TestFaultSIGTERMTimeout(t *testing.T) {
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	const timeout = time.Second
	p := serveProc(t, db, rd.Addr(), "--linger", "5s", "--shutdown-timeout", timeout.String())

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{}
	for i := range 4 {
		f := &feeder{url: p.url("/v1/events"), hc: hc, l: l, prefix: "termto", size: 300}
		wg.Go(func() { f.run(ctx, stop, uint64(i+1)) })
	}
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, 10*time.Second, "rows buffered", func() bool { return p.ingestStatus().Ingestor.BufferedRows >= 4*300 })
	termAt := time.Now()
	p.signal(syscall.SIGTERM)
	code, exited := p.wait(timeout + 5*time.Second)
	took := time.Since(termAt)
	close(stop)
	wg.Wait()
	// A little over the timeout: the process still closes its connections.
	if !exited || took > timeout+500*time.Millisecond {
		t.Errorf("after SIGTERM: exited %v with %d after %v, want within %v", exited, code, took, timeout)
	}
	statuses := map[string]int{}
	l.mu.Lock()
	for _, a := range l.attempts {
		if a.status == 0 {
			statuses["no answer"]++
		} else {
			statuses[strconv.Itoa(a.status)]++
		}
	}
	l.mu.Unlock()
	counted := checkAnswered(t, db, l)
	t.Logf("SIGTERM with 1200 rows waiting for a 5 s linger, timeout %v: exit %d after %v; answers %v; %d events acknowledged, all in ClickHouse once, %d stored",
		timeout, code, took.Round(time.Millisecond), statuses, l.ackedCount(), counted)
}

// readAll reads and closes a response body.
func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	return b.Bytes(), err
}

// overloadEvents writes events first..first+n-1 of the overload test as
// NDJSON and returns their totals: the fields follow from the number, so
// millions need no memory.
func overloadEvents(dst []byte, first, n int64, base time.Time) ([]byte, counts) {
	var c counts
	for i := first; i < first+n; i++ {
		typ := types[i%int64(len(types))]
		price := i % 5000
		switch typ {
		case "impression":
			c.imp++
		case "click":
			c.clk++
		case "conversion":
			c.conv++
		}
		c.spend += price
		dst = append(dst, `{"event_id":"ov-`...)
		dst = strconv.AppendInt(dst, i, 10)
		dst = append(dst, `","type":"`...)
		dst = append(dst, typ...)
		dst = append(dst, `","ts":"`...)
		dst = base.Add(-time.Duration(i%1800)*time.Second).AppendFormat(dst, time.RFC3339)
		ad := i % 40
		dst = append(dst, `","ad_id":"ad`...)
		dst = strconv.AppendInt(dst, ad, 10)
		dst = append(dst, `","campaign_id":"c-ad`...)
		dst = strconv.AppendInt(dst, ad, 10)
		dst = append(dst, `","country":"`...)
		dst = append(dst, nations[i%3]...)
		dst = append(dst, `","ad_format":"`...)
		dst = append(dst, formats[(i/3)%3]...)
		dst = append(dst, `","device":"web","price_micros":`...)
		dst = strconv.AppendInt(dst, price, 10)
		dst = append(dst, "}\n"...)
	}
	return dst, c
}

func (c *counts) add(o counts) {
	c.imp += o.imp
	c.clk += o.clk
	c.conv += o.conv
	c.spend += o.spend
}

// TestFaultOverload: clients offering four times the sustainable rate or
// more for a minute against a small in-flight budget. Peak RSS stays
// within the documented bound, the excess is refused with 503 and
// Retry-After (no other error), acknowledged events keep flowing, a normal
// batch is accepted within seconds after, and once every batch is resent
// until acknowledged each event counts once.
func TestFaultOverload(t *testing.T) {
	t.Parallel()
	db := testenv.Migrated(t)
	rd := testenv.Redis(t)
	// The budget cannot go below one request's own limits (body plus
	// inflated body: 16 + 32 MiB by default), so 48 is the smallest that
	// holds as given. The dedup set grows with the ids accepted (about 11
	// bytes each, dedup.Options), not with the load offered: a short
	// horizon keeps it from dominating a minute at full speed, and is long
	// enough for the resends below, which come within seconds.
	const budgetMiB = 48
	p := serveProc(t, db, rd.Addr(), "--max-inflight-mib", strconv.Itoa(budgetMiB), "--dedup-horizon", "15s")

	const size = 2000 // events per batch, about 400 KB
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	var (
		next   atomic.Int64 // number of the next event
		mu     sync.Mutex
		total  counts // of every batch made
		made   int64  // events
		unsent [][]byte
	)
	newBody := func(n int64) []byte {
		first := next.Add(n) - n
		body, c := overloadEvents(make([]byte, 0, n*220), first, n, base)
		mu.Lock()
		total.add(c)
		made += n
		mu.Unlock()
		return body
	}

	// RSS every 250 ms; every second also the dedup set's size.
	var peakSampled, dedupMax atomic.Int64
	var timeline []string
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	var sampler sync.WaitGroup
	sampler.Go(func() {
		sc := &http.Client{Timeout: 2 * time.Second}
		for i := 0; ; i++ {
			rss, _ := p.memKiB()
			if rss > peakSampled.Load() {
				peakSampled.Store(rss)
			}
			if i%4 == 0 {
				var st struct{ Dedup struct{ Entries int64 } }
				if resp, err := sc.Get(p.url("/v1/ingest/status")); err == nil {
					if raw, err := readAll(resp); err == nil && json.Unmarshal(raw, &st) == nil && st.Dedup.Entries > dedupMax.Load() {
						dedupMax.Store(st.Dedup.Entries)
					}
				}
				if i%40 == 0 {
					timeline = append(timeline, fmt.Sprintf("%ds %d MiB", i/4, rss/1024))
				}
			}
			if !sleepCtx(sampleCtx, 250*time.Millisecond) {
				return
			}
		}
	})
	defer func() { stopSampling(); sampler.Wait() }()

	tr := &http.Transport{MaxIdleConnsPerHost: 1100}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	var (
		acked, n503, attempts atomic.Int64
		badMu                 sync.Mutex
		bad                   []string
	)
	// keep saves a batch cut off by the end of a run for the resend; one
	// cut off in the middle of a request goes first, as it may have been
	// committed and its ids must still be remembered.
	keep := func(body []byte, midRequest bool) {
		mu.Lock()
		if midRequest {
			unsent = append([][]byte{body}, unsent...)
		} else {
			unsent = append(unsent, body)
		}
		mu.Unlock()
	}
	// send posts body until a 200, honouring Retry-After; when ctx ends
	// first the body is kept to be resent.
	send := func(ctx context.Context, body []byte) {
		for {
			attempts.Add(1)
			o := postBatch(ctx, hc, p.url("/v1/events"), body)
			switch {
			case o.status == 200 && o.err == nil:
				acked.Add(int64(bytes.Count(body, []byte("\n"))))
				return
			case ctx.Err() != nil:
				keep(body, true)
				return
			case o.status == 503 && o.retryAfter != "":
				n503.Add(1)
				if !sleepCtx(ctx, retryAfter(o.retryAfter)) {
					keep(body, false)
					return
				}
			default:
				badMu.Lock()
				bad = append(bad, fmt.Sprintf("status %d retry-after %q: %v", o.status, o.retryAfter, o.err))
				badMu.Unlock()
				keep(body, true)
				return
			}
		}
	}
	// resend sends what was left unacknowledged, with four clients.
	resend := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		mu.Lock()
		left := unsent
		unsent = nil
		mu.Unlock()
		work := make(chan []byte)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for body := range work {
					send(ctx, body)
				}
			})
		}
		for _, b := range left {
			work <- b
		}
		close(work)
		wg.Wait()
		if len(unsent) > 0 {
			t.Fatalf("%d batches still unacknowledged after the resend", len(unsent))
		}
		return len(left)
	}
	// run has n clients send new batches back to back for d.
	run := func(n int, d time.Duration) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		began := time.Now()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for ctx.Err() == nil {
					send(ctx, newBody(size))
				}
			})
		}
		wg.Wait()
		return time.Since(began)
	}

	// The sustainable rate: what 16 clients sending back to back get
	// acknowledged, with no 503 (fewer leave the ingestor idle between
	// blocks). Batches cut off at the end are resent at once, well within
	// the dedup horizon.
	const warmClients = 16
	warmFor := run(warmClients, 4*time.Second)
	rate := float64(acked.Load()) / warmFor.Seconds()
	warm503 := n503.Load()
	resend()
	if rate == 0 {
		t.Fatal("nothing acknowledged while measuring the sustainable rate")
	}

	// The overload: enough clients that, each making somewhat less than an
	// attempt a second (a refused batch is resent after its Retry-After of
	// 1 s), they offer about four times that rate or more.
	clients := min(max(int(6*rate/size), 64), 1024)
	ackedBefore, attemptsBefore, n503Before := acked.Load(), attempts.Load(), n503.Load()
	loadFor := run(clients, overloadFor)
	loadEnd := time.Now()
	ackedLoad, attemptsLoad, n503Load := acked.Load()-ackedBefore, attempts.Load()-attemptsBefore, n503.Load()-n503Before
	rssAfterLoad, _ := p.memKiB()
	offered := float64(attemptsLoad*size) / loadFor.Seconds()
	goodput := float64(ackedLoad) / loadFor.Seconds()

	// Recovery: a normal batch, resent every 250 ms until accepted.
	normal := newBody(100)
	var recovered time.Duration
	for {
		o := postBatch(context.Background(), hc, p.url("/v1/events"), normal)
		if o.status == 200 && o.err == nil {
			recovered = time.Since(loadEnd)
			break
		}
		if o.status != 503 {
			t.Fatalf("normal batch after the load: %d %v", o.status, o.err)
		}
		if time.Since(loadEnd) > time.Minute {
			t.Fatal("no normal batch accepted within a minute of the load")
		}
		time.Sleep(250 * time.Millisecond)
	}
	resent := resend()
	_, peak := p.memKiB()
	stopSampling()
	sampler.Wait()

	if len(bad) > 0 {
		t.Errorf("%d answers other than 200 or 503 with Retry-After, e.g. %v", len(bad), bad[:min(3, len(bad))])
	}
	if n503Load == 0 || offered < 2*rate {
		t.Errorf("not overloaded: %d 503s, %.0f events/s offered for %.0f sustainable", n503Load, offered, rate)
	}
	if goodput < rate/2 {
		t.Errorf("collapse: %.0f events/s acknowledged under overload, %.0f before", goodput, rate)
	}
	if recovered > 10*time.Second {
		t.Errorf("a normal batch was accepted only %v after the load stopped", recovered)
	}
	// "About 330 MiB + 4 x budget" (README), read as within 10 %, plus the
	// dedup set at its documented 36 B an id at most.
	docMiB := int64(330 + 4*budgetMiB)
	boundMiB := docMiB*11/10 + dedupMax.Load()*36>>20
	if peak/1024 >= boundMiB {
		t.Errorf("peak RSS %d MiB, over the bound of %d MiB (1.1 x (330 + 4 x %d) + 36 B x %d dedup ids)", peak/1024, boundMiB, budgetMiB, dedupMax.Load())
	}
	got := testenv.QueryString(t, db, "SELECT countIf(duplicate = 0), uniqExact(event_id), count() FROM events")
	if want := fmt.Sprintf("%d\t%d\t", made, made); !strings.HasPrefix(got, want) {
		t.Errorf("events (counted, distinct, rows): %q, want %d counted and distinct", got, made)
	}
	sums := testenv.QueryString(t, db, "SELECT sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM ad_stats_minute")
	if w := fmt.Sprintf("%d\t%d\t%d\t%d", total.imp, total.clk, total.conv, total.spend); sums != w {
		t.Errorf("ad_stats_minute totals %s, want %s", sums, w)
	}
	st := p.ingestStatus()
	t.Logf("sustainable rate %.0f events/s (%d clients back to back, %d-event batches, %d 503s); overload for %v by %d clients: offered %.0f events/s (%.1fx) in %d attempts, %d answered 503 with Retry-After, %.0f events/s acknowledged (%.1fx)",
		rate, warmClients, size, warm503, loadFor.Round(time.Second), clients, offered, offered/rate, attemptsLoad, n503Load, goodput, goodput/rate)
	t.Logf("RSS peak %d MiB (VmHWM; sampled every 250 ms %d MiB, %d MiB when the load stopped); documented 330 + 4 x %d = %d MiB, bound %d MiB with 10 %% and %d dedup ids; RSS every 10 s: %v",
		peak/1024, peakSampled.Load()/1024, rssAfterLoad/1024, budgetMiB, docMiB, boundMiB, dedupMax.Load(), timeline)
	t.Logf("normal batch accepted %v after the load; %d cut-off batches resent after it; %d events, each counted once (%s rows; collector: %d shed, %d duplicates)",
		recovered.Round(time.Millisecond), resent, made, got[strings.LastIndexByte(got, '\t')+1:], st.Collector.Shed, st.Collector.Duplicates)
}
