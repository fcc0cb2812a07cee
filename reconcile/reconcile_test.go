package reconcile_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

var summing = []string{"ad_stats_minute", "dim_stats_minute", "ad_stats_daily", "ad_totals_minute", "ad_totals_hour", "dim_stats_hour", "dim_stats_minute_by_time"}

// The resend that slipped past the collector is in every aggregate twice;
// truth counts it once. Fixing removes it, and the next run finds nothing.
func TestRunFindsSlippedResend(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	var fixed []clickagg.Range
	r := open(t, db, reconcile.Options{OnFixed: func(rng clickagg.Range) { fixed = append(fixed, rng) }})

	rep := run(t, r, wholeRange, false)
	extra := countsOf(event(slipped))
	for _, tbl := range summing {
		want := truth(tbl)
		k := keyString(tbl, rowOf(tbl, event(slipped)))
		checkReport(t, rep, tbl, map[string]diff{k: {add(want[k], extra), want[k]}})
	}
	if !rep.Unfixed() || rep.Differences() != int64(len(summing)) || len(fixed) != 0 {
		t.Fatalf("unfixed %v, %d differences, OnFixed %v", rep.Unfixed(), rep.Differences(), fixed)
	}

	rep = run(t, r, wholeRange, true)
	if rep.Differences() != int64(len(summing)) || rep.Unfixed() || len(fixed) != 1 || fixed[0] != wholeRange {
		t.Fatalf("fix: %d differences, unfixed %v, OnFixed %v", rep.Differences(), rep.Unfixed(), fixed)
	}
	if rep = run(t, r, wholeRange, false); rep.Differences() != 0 {
		t.Fatalf("after fix: %+v", rep.Tables)
	}
	for _, tbl := range summing {
		checkEqual(t, tbl, dump(t, db, tbl), truth(tbl))
	}
	if rep = run(t, r, wholeRange, true); len(fixed) != 1 {
		t.Errorf("a fix with nothing to correct called OnFixed: %v", fixed)
	}
}

// Stray and deleted aggregate rows are reported exactly, key by key, and
// corrected.
func TestRunReportsCorruption(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	r := open(t, db, reconcile.Options{})
	run(t, r, wholeRange, true) // the slipped resend out of the way

	agg := map[string]table{}
	for _, tbl := range summing {
		agg[tbl] = maps.Clone(truth(tbl))
	}
	stray := func(tbl string, k row, c clickagg.Counts, values string) {
		testenv.Exec(t, db, "INSERT INTO "+tbl+" ("+strings.Join(keyCols[tbl], ", ")+", impressions, clicks, conversions, spend_micros) SELECT "+values)
		agg[tbl][keyString(tbl, k)] = add(agg[tbl][keyString(tbl, k)], c)
	}
	remove := func(tbl, where string, match func(row) bool) {
		mutate(t, db, tbl, where)
		for i := range nEvents {
			if k := rowOf(tbl, event(i)); match(k) {
				delete(agg[tbl], keyString(tbl, k))
			}
		}
	}

	// ad_stats_minute: a made-up key, extra counts on a real key, and all rows
	// of one ad in one minute gone.
	stray("ad_stats_minute", row{"minute": "2026-11-22T00:03:00Z", "ad_id": "ad-stray", "campaign_id": "c-stray", "country": "FR", "ad_format": "video", "device": "ctv"},
		clickagg.Counts{Impressions: 5, Clicks: 4, Conversions: 3, SpendMicros: 2},
		"toDateTime('2026-11-22 00:03:00', 'UTC'), 'ad-stray', 'c-stray', 'FR', 'video', 'ctv', 5, 4, 3, 2")
	hit := rowOf("ad_stats_minute", event(100))
	stray("ad_stats_minute", hit, clickagg.Counts{Impressions: 1, SpendMicros: -70},
		"toDateTime('"+minuteSQL(hit["minute"])+"', 'UTC'), '"+hit["ad_id"]+"', '"+hit["campaign_id"]+"', '"+hit["country"]+"', '"+hit["ad_format"]+"', '"+hit["device"]+"', 1, 0, 0, -70")
	remove("ad_stats_minute", "ad_id = 'ad-3' AND minute = toDateTime('2026-11-21 23:58:00', 'UTC')",
		func(k row) bool { return k["ad_id"] == "ad-3" && k["minute"] == "2026-11-21T23:58:00Z" })

	// dim_stats_minute: one country's minute gone, a stray row.
	remove("dim_stats_minute", "country = 'DE' AND minute = toDateTime('2026-11-22 00:01:00', 'UTC')",
		func(k row) bool { return k["country"] == "DE" && k["minute"] == "2026-11-22T00:01:00Z" })
	stray("dim_stats_minute", row{"minute": "2026-11-21T23:59:00Z", "country": "KR", "ad_format": "banner", "device": "ios"},
		clickagg.Counts{Clicks: -2}, "toDateTime('2026-11-21 23:59:00', 'UTC'), 'KR', 'banner', 'ios', 0, -2, 0, 0")

	// ad_stats_daily: a stray ad, one ad's day gone.
	stray("ad_stats_daily", row{"day": "2026-11-21", "ad_id": "ad-stray", "campaign_id": "c9"},
		clickagg.Counts{Impressions: 7}, "toDate('2026-11-21'), 'ad-stray', 'c9', 7, 0, 0, 0")
	remove("ad_stats_daily", "ad_id = 'ad-5' AND day = toDate('2026-11-22')",
		func(k row) bool { return k["ad_id"] == "ad-5" && k["day"] == "2026-11-22" })

	// The rollups: a stray ad and one ad's minute gone; a stray hour and one
	// ad's hour gone; one country's hour gone and a stray row.
	stray("ad_totals_minute", row{"minute": "2026-11-22T00:03:00Z", "ad_id": "ad-stray", "campaign_id": "c-stray"},
		clickagg.Counts{Impressions: 2}, "toDateTime('2026-11-22 00:03:00', 'UTC'), 'ad-stray', 'c-stray', 2, 0, 0, 0")
	remove("ad_totals_minute", "ad_id = 'ad-3' AND minute = toDateTime('2026-11-21 23:58:00', 'UTC')",
		func(k row) bool { return k["ad_id"] == "ad-3" && k["minute"] == "2026-11-21T23:58:00Z" })
	stray("ad_totals_hour", row{"hour": "2026-11-21T22:00:00Z", "ad_id": "ad-stray", "campaign_id": "c-stray"},
		clickagg.Counts{Clicks: 3}, "toDateTime('2026-11-21 22:00:00', 'UTC'), 'ad-stray', 'c-stray', 0, 3, 0, 0")
	remove("ad_totals_hour", "ad_id = 'ad-5' AND hour = toDateTime('2026-11-21 23:00:00', 'UTC')",
		func(k row) bool { return k["ad_id"] == "ad-5" && k["hour"] == "2026-11-21T23:00:00Z" })
	remove("dim_stats_hour", "country = 'DE' AND hour = toDateTime('2026-11-22 00:00:00', 'UTC')",
		func(k row) bool { return k["country"] == "DE" && k["hour"] == "2026-11-22T00:00:00Z" })
	stray("dim_stats_hour", row{"hour": "2026-11-21T23:00:00Z", "country": "KR", "ad_format": "banner", "device": "ios"},
		clickagg.Counts{Conversions: 1}, "toDateTime('2026-11-21 23:00:00', 'UTC'), 'KR', 'banner', 'ios', 0, 0, 1, 0")
	remove("dim_stats_minute_by_time", "country = 'DE' AND minute = toDateTime('2026-11-22 00:01:00', 'UTC')",
		func(k row) bool { return k["country"] == "DE" && k["minute"] == "2026-11-22T00:01:00Z" })
	stray("dim_stats_minute_by_time", row{"minute": "2026-11-21T23:59:00Z", "country": "KR", "ad_format": "banner", "device": "ios"},
		clickagg.Counts{Clicks: -2}, "toDateTime('2026-11-21 23:59:00', 'UTC'), 'KR', 'banner', 'ios', 0, -2, 0, 0")

	rep := run(t, r, wholeRange, false)
	for _, tbl := range summing {
		want := expectedDiffs(agg[tbl], truth(tbl))
		if len(want) < 2 {
			t.Fatalf("%s: corruption left %d differences; the test is broken", tbl, len(want))
		}
		checkReport(t, rep, tbl, want)
	}

	// A narrower range reports only its own minutes: the changes at 23:55 and
	// 00:03 are outside, the deleted 23:58 inside; ad_stats_daily has no
	// whole day.
	part := clickagg.Range{From: time.Date(2026, 11, 21, 23, 57, 0, 0, time.UTC), To: time.Date(2026, 11, 22, 0, 2, 0, 0, time.UTC)}
	rep = run(t, r, part, false)
	want := expectedDiffs(agg["ad_stats_minute"], truth("ad_stats_minute"))
	for k := range want {
		if m, _ := time.Parse(time.RFC3339, strings.Split(k, "|")[0]); m.Before(part.From) || !m.Before(part.To) {
			delete(want, k)
		}
	}
	if len(want) != 18 {
		t.Fatalf("%d differences expected in the narrow range, want the 18 deleted keys", len(want))
	}
	checkReport(t, rep, "ad_stats_minute", want)
	for _, tbl := range []string{"ad_stats_daily", "ad_totals_hour", "dim_stats_hour"} {
		if d := rep.Table(tbl); d.Note == "" || d.Rows != 0 {
			t.Errorf("%s without a whole grain in the range: %+v", tbl, d)
		}
	}

	rep = run(t, r, wholeRange, true)
	if rep = run(t, r, wholeRange, false); rep.Differences() != 0 {
		t.Fatalf("after fix: %+v", rep.Tables)
	}
	for _, tbl := range summing {
		checkEqual(t, tbl, dump(t, db, tbl), truth(tbl))
	}
}

// MaxRows bounds the listed rows, not the count.
func TestMaxRows(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	mutate(t, db, "dim_stats_minute", "1")
	rep := run(t, open(t, db, reconcile.Options{MaxRows: 5}), wholeRange, false)
	tr := rep.Table("dim_stats_minute")
	if want := int64(len(truth("dim_stats_minute"))); tr.Rows != want || len(tr.Diffs) != 5 {
		t.Fatalf("%d rows, %d listed; want %d, 5", tr.Rows, len(tr.Diffs), want)
	}
	if first := tr.Diffs[0].Key["minute"]; first != "2026-11-21T23:55:00Z" {
		t.Errorf("diffs not in key order: first minute %s", first)
	}
}

// minuteSQL turns an RFC 3339 minute into ClickHouse's DateTime text.
func minuteSQL(s string) string {
	m, _ := time.Parse(time.RFC3339, s)
	return m.Format(time.DateTime)
}
