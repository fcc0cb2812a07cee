package reconcile_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/schema"
)

func replay(t *testing.T, r *reconcile.Reconciler, rng clickagg.Range) reconcile.Report {
	t.Helper()
	rep, err := r.Replay(context.Background(), rng)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Fixed || rep.Err != "" {
		t.Fatalf("replay report %+v", rep)
	}
	return rep
}

// Replay twice gives the same tables, equal to the truth; it backfills a
// table emptied after the events came, and rebuilds the topK sketches
// (their view made as on a modern server).
func TestReplay(t *testing.T) {
	db := testenv.Migrated(t)
	keepSketches(t, db.Options())
	load(t, db)
	mutate(t, db, "dim_stats_minute", "1") // as if the table came after the events
	// A bogus sketch that the rebuild must drop.
	testenv.Exec(t, db, "INSERT INTO top_ads_minute (minute, type, top_ads) SELECT toDateTime('2026-11-22 00:01:00', 'UTC'), 'impression', "+
		"topKState(1000)(toString('ad-bogus')) FROM numbers(10000)")
	var changed []clickagg.Range
	r := open(t, db, reconcile.Options{OnFixed: func(rng clickagg.Range) { changed = append(changed, rng) }})

	// A range of minutes inside the 22nd: the minute tables are rebuilt for
	// it, the sketches for the whole day.
	rng := clickagg.Range{From: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 22, 0, 10, 0, 0, time.UTC)}
	rep := replay(t, r, rng)
	if got := rep.Table("dim_stats_minute").Rows; got == 0 {
		t.Fatal("replay found dim_stats_minute complete after it was emptied")
	}
	if !slices.Equal(rep.Rebuilt, []string{"2026-11-22"}) || rep.NoSketches || len(changed) != 1 ||
		changed[0] != (clickagg.Range{From: rng.From, To: rng.From.AddDate(0, 0, 1)}) {
		t.Fatalf("rebuilt %v, OnFixed %v", rep.Rebuilt, changed)
	}
	dim := dump(t, db, "dim_stats_minute")
	for k := range truth("dim_stats_minute") {
		if m := strings.Split(k, "|")[0]; (m >= "2026-11-22") != (dim[k] != clickagg.Counts{}) {
			t.Errorf("dim_stats_minute %s after replay of the 22nd: %+v", k, dim[k])
		}
	}

	// Both whole days, twice.
	replay(t, r, wholeRange)
	first := map[string]table{}
	for _, tbl := range summing {
		first[tbl] = dump(t, db, tbl)
		checkEqual(t, tbl+" after replay", first[tbl], truth(tbl))
	}
	sketches := topAds(t, db)
	rep = replay(t, r, wholeRange)
	if rep.Differences() != 0 || !slices.Equal(rep.Rebuilt, []string{"2026-11-21", "2026-11-22"}) {
		t.Fatalf("second replay: %d differences, rebuilt %v", rep.Differences(), rep.Rebuilt)
	}
	for _, tbl := range summing {
		checkEqual(t, tbl+" after the second replay", dump(t, db, tbl), first[tbl])
	}
	if again := topAds(t, db); !slices.Equal(again, sketches) {
		t.Errorf("top_ads_minute differs between replays: %d rows, then %d", len(sketches), len(again))
	}

	// One sketch row per minute and type (the view's rows, one per insert,
	// were dropped), and ad-0 leads every minute's impressions.
	want := map[string]bool{}
	for i := range nEvents {
		ev := event(i)
		want[ev.Time.Truncate(time.Minute).Format(time.DateTime)+"\t"+ev.Type.String()] = true
	}
	if len(sketches) != len(want) {
		t.Errorf("%d sketch rows, want %d (one per minute and type)", len(sketches), len(want))
	}
	for _, s := range sketches {
		f := strings.Split(s, "\t")
		if !want[f[0]+"\t"+f[1]] {
			t.Errorf("unexpected sketch row %s", s)
		}
		if strings.Contains(s, "ad-bogus") {
			t.Errorf("bogus sketch survived the rebuild: %s", s)
		}
		if f[1] == "impression" && f[2] != "ad-0" {
			t.Errorf("minute %s: top impression ad %s, want ad-0 (%s)", f[0], f[2], topOf(f[0]))
		}
	}
}

// TestReplayWithoutSketches: on 18.16 there is no sketch view; replay
// corrects the summing tables, says so of the sketches and leaves their
// table alone.
func TestReplayWithoutSketches(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	mutate(t, db, "ad_stats_minute", "1")
	testenv.Exec(t, db, "INSERT INTO top_ads_minute (minute, type, top_ads) SELECT toDateTime('2026-11-22 00:01:00', 'UTC'), 'impression', "+
		"topKState(1000)(toString('ad-left')) FROM numbers(10)")
	rep := replay(t, open(t, db, reconcile.Options{}), wholeRange)
	if !rep.NoSketches || len(rep.Rebuilt) != 0 {
		t.Errorf("replay without the view: no sketches %v, rebuilt %v", rep.NoSketches, rep.Rebuilt)
	}
	for _, tbl := range summing {
		checkEqual(t, tbl+" after replay", dump(t, db, tbl), truth(tbl))
	}
	if got := topAds(t, db); len(got) != 1 || !strings.Contains(got[0], "ad-left") {
		t.Errorf("top_ads_minute after replay without its view: %q, want the row left alone", got)
	}
}

// topAds lists top_ads_minute: minute, type, the sketch's first ad for
// impressions (other types have ties, ranked in any order), all its ads.
func topAds(t *testing.T, db testenv.ClickHouseDB) []string {
	t.Helper()
	out := testenv.QueryString(t, db, "SELECT minute, type, if(type = 'impression', finalizeAggregation(top_ads)[1], ''), arraySort(finalizeAggregation(top_ads)) FROM top_ads_minute ORDER BY minute, type")
	return strings.Split(out, "\n")
}

// topOf is the impression counts per ad in a minute, for messages.
func topOf(minute string) string {
	n := map[string]int{}
	for i := range nEvents {
		if ev := event(i); ev.Type == clickagg.Impression && ev.Time.Truncate(time.Minute).Format(time.DateTime) == minute {
			n[ev.AdID]++
		}
	}
	var b strings.Builder
	for ad, c := range n {
		b.WriteString(ad + "=" + strconv.Itoa(c) + " ")
	}
	return b.String()
}

// TestReplayFillsRollups: a database upgraded to the rollups while it held
// events has them noted complete only from the next hour on, and empty
// before; a replay from the events' start to past that fills them, and they
// are then complete from the replay's start.
func TestReplayFillsRollups(t *testing.T) {
	db := testenv.ClickHouse(t)
	m, err := schema.NewMigrator(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Steps(14); err != nil { // before the rollups
		t.Fatal(err)
	}
	load(t, db)
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	completeFrom := func(name string) string {
		return testenv.QueryString(t, db, "SELECT toString(min(complete_from)) FROM rollups WHERE name = '"+name+"'")
	}
	for _, name := range schema.Rollups {
		if cf, err := time.Parse(time.DateTime, completeFrom(name)); err != nil || cf.Before(time.Now()) {
			t.Fatalf("%s complete from %v (%v), want the next hour: it saw none of the events", name, cf, err)
		}
		if n := testenv.QueryString(t, db, "SELECT count() FROM "+name); n != "0" {
			t.Fatalf("%s holds %s rows before the replay", name, n)
		}
	}
	// A replay that ends before complete_from leaves a gap: nothing moves.
	replay(t, open(t, db, reconcile.Options{}), wholeRange)
	if cf := completeFrom("ad_totals_hour"); cf == "2026-11-21 00:00:00" {
		t.Fatal("a replay short of complete_from moved it")
	}
	// One up to past complete_from fills them.
	replay(t, open(t, db, reconcile.Options{}), clickagg.Range{From: wholeRange.From, To: time.Now().UTC().Truncate(time.Hour).Add(2 * time.Hour)})
	for _, name := range schema.Rollups {
		if got := completeFrom(name); got != "2026-11-21 00:00:00" {
			t.Errorf("%s complete from %s after the replay, want its start", name, got)
		}
		checkEqual(t, name, dump(t, db, name), truth(name))
	}
}
