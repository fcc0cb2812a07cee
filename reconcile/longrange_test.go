package reconcile_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

// oneDay passes statements to a connection and fails the test for an
// INSERT whose range (its first two arguments) is more than one UTC day:
// modern servers refuse an INSERT block over max_partitions_per_insert_block
// (100) daily partitions after writing part of it. failAt, when set, makes
// that INSERT fail instead of running, as a server or network error would.
type oneDay struct {
	driver.Conn
	t *testing.T

	mu      sync.Mutex
	inserts int
	failAt  int
}

var errInjected = errors.New("injected failure")

func (c *oneDay) Exec(ctx context.Context, query string, args ...any) error {
	// The rollups' one-row note has no range.
	if strings.HasPrefix(query, "INSERT") && !strings.HasPrefix(query, "INSERT INTO rollups") {
		c.mu.Lock()
		c.inserts++
		n := c.inserts
		c.mu.Unlock()
		if len(args) < 2 {
			c.t.Errorf("INSERT without a range: %.80s", query)
		} else if from, to := argTime(c.t, args[0]), argTime(c.t, args[1]); to.Sub(from) > 24*time.Hour || !from.Truncate(24*time.Hour).Equal(to.Add(-time.Nanosecond).Truncate(24*time.Hour)) {
			c.t.Errorf("INSERT over %s to %s: more than one UTC day (%.60s)", from, to, query)
		}
		if n == c.failAt {
			return errInjected
		}
	}
	return c.Conn.Exec(ctx, query, args...)
}

// argTime reads a bound range argument: unix seconds or a YYYY-MM-DD day.
func argTime(t *testing.T, a any) time.Time {
	switch v := a.(type) {
	case int64:
		return time.Unix(v, 0).UTC()
	case string:
		d, err := time.Parse(time.DateOnly, v)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Fatalf("range argument %T %v", a, a)
	return time.Time{}
}

// TestLongRange: reconciliation and replay over 101 days (more than the
// 100 partitions modern servers take in one INSERT) work a day at a time,
// end exact, are idempotent, and a run that fails half way is finished by
// running again.
func TestLongRange(t *testing.T) {
	db := testenv.Migrated(t)
	keepSketches(t, db.Options())
	const days = 101
	first := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	rng := clickagg.Range{From: first, To: first.AddDate(0, 0, days)}
	var rows ingestor.Rows
	rows.SetReceived(first)
	want := map[string]table{"ad_stats_minute": {}, "dim_stats_minute": {}, "ad_stats_daily": {}}
	for i := range days * 3 {
		ev := event(i)
		ev.EventID = "long-" + strconv.Itoa(i)
		// Three events a day: just after midnight, at noon, just before the next.
		ev.Time = first.AddDate(0, 0, i/3).Add([]time.Duration{time.Minute, 12 * time.Hour, 24*time.Hour - time.Minute}[i%3])
		rows.Append(&ev, false)
		for tbl, w := range want {
			k := keyString(tbl, rowOf(tbl, ev))
			w[k] = add(w[k], countsOf(ev))
		}
	}
	testenv.Insert(t, db, &rows)
	for tbl := range want {
		checkEqual(t, tbl+" as ingested", dump(t, db, tbl), want[tbl])
		mutate(t, db, tbl, "1") // as if the aggregates were lost
	}

	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &oneDay{Conn: conn, t: t, failAt: 150}
	r := reconcile.New(c, reconcile.Options{})

	// Fails at the 150th correction: the days before it are corrected.
	if _, err := r.Run(context.Background(), rng, true); !errors.Is(err, errInjected) {
		t.Fatalf("run with a failing INSERT: %v", err)
	}
	if n := len(dump(t, db, "dim_stats_minute")); n == 0 || n >= len(want["dim_stats_minute"]) {
		t.Errorf("after the failed run dim_stats_minute has %d of %d rows, want some", n, len(want["dim_stats_minute"]))
	}
	// Running again finishes the job; once more finds nothing.
	rep := run(t, r, rng, true)
	if rep.Differences() == 0 {
		t.Error("the second run found nothing left to correct")
	}
	for tbl := range want {
		checkEqual(t, tbl+" after reconcile", dump(t, db, tbl), want[tbl])
	}
	if rep := run(t, r, rng, false); rep.Differences() != 0 {
		t.Errorf("after the fix: %d differing rows", rep.Differences())
	}
	if tr := rep.Table("ad_stats_daily"); !tr.From.Equal(rng.From) || !tr.To.Equal(rng.To) {
		t.Errorf("ad_stats_daily compared %s to %s, want the range's whole days", tr.From, tr.To)
	}

	// Replay: the same tables, every day's sketches rebuilt.
	c.failAt = 0
	rep, err = r.Replay(context.Background(), rng)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differences() != 0 || len(rep.Rebuilt) != days {
		t.Errorf("replay: %d differing rows, %d days rebuilt, want 0 and %d", rep.Differences(), len(rep.Rebuilt), days)
	}
	for tbl := range want {
		checkEqual(t, tbl+" after replay", dump(t, db, tbl), want[tbl])
	}
	if got := testenv.QueryString(t, db, "SELECT uniqExact(toDate(minute)), sum(length(finalizeAggregation(top_ads))) FROM top_ads_minute"); got != strconv.Itoa(days)+"\t"+strconv.Itoa(days*3) {
		t.Errorf("top_ads_minute after replay: %s days and ads, want %d and %d", got, days, days*3)
	}
}
