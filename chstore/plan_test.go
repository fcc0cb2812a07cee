package chstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
)

// TestPlansAgree: random questions (windows, filters, group-bys, series,
// top-N) over two days of events get the same answers through every plan
// the planner may choose: with the rollups complete, complete only from a
// time inside the data, and without them (the minute tables alone, the
// expectation).
func TestPlansAgree(t *testing.T) {
	db := testenv.Migrated(t)
	start := time.Date(2026, 11, 20, 22, 17, 0, 0, time.UTC)
	const span = 50 * time.Hour
	r := rand.New(rand.NewPCG(5, 6))
	var (
		ads       = []string{"ad-1", "ad-2", "ad-3", "ad-4", "ad-5", "ad-6", "ad-7", "ad-8"}
		countries = []string{"US", "KR", "DE", "JP"}
		rows      ingestor.Rows
	)
	for i := range 20000 {
		ad := r.IntN(len(ads))
		ev := clickagg.Event{
			EventID:     fmt.Sprintf("e-%d", i),
			Type:        clickagg.EventType(1 + r.IntN(3)),
			Time:        start.Add(time.Duration(r.Int64N(int64(span)))).Truncate(time.Millisecond),
			AdID:        ads[ad],
			CampaignID:  fmt.Sprintf("c-%d", ad%3),
			AdFormat:    clickagg.AdFormat(1 + ad%5),
			Device:      clickagg.Device(1 + r.IntN(5)),
			PriceMicros: uint64(r.IntN(5000)),
		}
		copy(ev.Country[:], countries[r.IntN(len(countries))])
		rows.Append(&ev, false)
	}
	testenv.Insert(t, db, &rows)

	ctx := context.Background()
	conn := connect(t, db)
	want := chstore.New(conn, chstore.Options{NoRollups: true})
	full := chstore.New(conn, chstore.Options{})
	partial := chstore.New(conn, chstore.Options{})
	mid := start.Add(20*time.Hour + 23*time.Minute)
	chstore.SetCompleteFrom(partial, map[string]time.Time{"ad_totals_minute": mid, "ad_totals_hour": mid, "dim_stats_hour": mid.Add(3 * time.Hour)})

	randRange := func() clickagg.Range {
		from := start.Add(-time.Hour + time.Duration(r.IntN(int(span/time.Minute)))*time.Minute)
		lengths := []time.Duration{time.Minute, 17 * time.Minute, time.Hour, 90 * time.Minute, 5 * time.Hour, 24 * time.Hour, 49 * time.Hour}
		d := lengths[r.IntN(len(lengths))] + time.Duration(r.IntN(3))*time.Minute
		return clickagg.Range{From: from, To: from.Add(d)}
	}
	some := func(vals []string) []string {
		var out []string
		for _, v := range vals {
			if r.IntN(4) == 0 {
				out = append(out, v)
			}
		}
		return out
	}
	randFilter := func(star, ad bool) clickagg.Filter {
		var f clickagg.Filter
		if star {
			f.Countries = some(countries)
			f.AdFormats = some([]string{"banner", "interstitial", "native", "rewarded_video", "video"})
			f.Devices = some([]string{"ios", "android", "web", "ctv", "other"})
		}
		if ad {
			f.CampaignIDs = some([]string{"c-0", "c-1", "c-2"})
			f.AdIDs = some(ads)
		}
		return f
	}
	rollupsRead := map[string]int{}
	note := func(plan []clickagg.PlanPiece) {
		for _, p := range plan {
			rollupsRead[p.Table]++
		}
	}
	same := func(what string, got, exp any) {
		t.Helper()
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("%s:\n got %+v\nwant %+v", what, got, exp)
		}
	}
	dimsAll := clickagg.Dimensions()
	for i := range 150 {
		rng := randRange()
		star, ad := r.IntN(2) == 0, r.IntN(2) == 0
		f := randFilter(star, ad)
		var group []clickagg.Dimension
		for _, d := range dimsAll {
			if r.IntN(5) == 0 && !slices.Contains(group, d) {
				group = append(group, d)
			}
		}
		if len(group) > 3 {
			group = group[:3]
		}
		mq := clickagg.MetricsQuery{Range: rng, Filter: f, GroupBy: group}
		w, err := want.Metrics(ctx, mq)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string]*chstore.Store{"full": full, "partial": partial} {
			g, err := s.Metrics(ctx, mq)
			if err != nil {
				t.Fatalf("%s %+v: %v", name, mq, err)
			}
			note(g.Plan)
			same(fmt.Sprintf("%d metrics %s %+v (plan %+v)", i, name, mq, g.Plan), g.Rows, w.Rows)
		}

		gran := []time.Duration{time.Minute, time.Hour, 24 * time.Hour}[r.IntN(3)]
		sq := clickagg.SeriesQuery{AdID: ads[r.IntN(len(ads))], Range: rng, Filter: randFilter(r.IntN(3) == 0, false), Granularity: gran}
		if rng.To.Sub(rng.From)/gran > 5000 {
			sq.Granularity = time.Hour
		}
		ws, err := want.Series(ctx, sq)
		if err != nil {
			t.Fatal(err)
		}
		tq := clickagg.TopQuery{Range: rng, Filter: randFilter(r.IntN(3) == 0, r.IntN(3) == 0), N: 1 + r.IntN(6),
			Metric: []clickagg.Metric{clickagg.MetricImpressions, clickagg.MetricClicks, clickagg.MetricConversions, clickagg.MetricSpend}[r.IntN(4)]}
		wt, err := want.TopAds(ctx, tq)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string]*chstore.Store{"full": full, "partial": partial} {
			gs, err := s.Series(ctx, sq)
			if err != nil {
				t.Fatal(err)
			}
			note(gs.Plan)
			same(fmt.Sprintf("%d series %s %+v (plan %+v)", i, name, sq, gs.Plan), gs.Points, ws.Points)
			gt, err := s.TopAds(ctx, tq)
			if err != nil {
				t.Fatal(err)
			}
			note(gt.Plan)
			same(fmt.Sprintf("%d top %s %+v (plan %+v)", i, name, tq, gt.Plan), gt.Ads, wt.Ads)
		}
	}
	for _, table := range []string{"ad_totals_minute", "ad_totals_hour", "dim_stats_hour", "dim_stats_minute_by_time", "ad_stats_daily", "ad_stats_minute", "dim_stats_minute"} {
		if rollupsRead[table] == 0 {
			t.Errorf("no plan read %s: the questions do not exercise the planner", table)
		}
	}
	t.Logf("pieces read by table: %v", rollupsRead)
}
