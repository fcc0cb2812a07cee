package reconcile_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The test traffic: nEvents events 200 ms apart from 23:55 on 21 November
// to 00:05 on the 22nd (two days, ten minutes), seven ads of three
// campaigns, three countries, formats and devices. ad-0 holds at least 30%
// of the impressions, so it tops every minute's impression sketch.
const nEvents = 3000

var (
	start = time.Date(2026, 11, 21, 23, 55, 0, 0, time.UTC)
	// wholeRange covers both days entirely.
	wholeRange = clickagg.Range{From: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)}
)

// slipped is the event stored a second time with duplicate = 0: a resend
// that reached another collector instance.
const slipped = 1234

func event(i int) clickagg.Event {
	ad := i % 7
	if i%10 < 3 {
		ad = 0
	}
	countries := []string{"US", "KR", "DE"}
	c := countries[(i/7)%3]
	return clickagg.Event{
		EventID:     "ev-" + strconv.Itoa(i),
		Type:        []clickagg.EventType{clickagg.Impression, clickagg.Impression, clickagg.Impression, clickagg.Click, clickagg.Conversion}[i%5],
		Time:        start.Add(time.Duration(i)*200*time.Millisecond + time.Duration(i%7)*time.Millisecond),
		AdID:        "ad-" + strconv.Itoa(ad),
		CampaignID:  "c" + strconv.Itoa(ad%3),
		Country:     [2]byte{c[0], c[1]},
		AdFormat:    []clickagg.AdFormat{clickagg.FormatBanner, clickagg.FormatVideo, clickagg.FormatNative}[(i/3)%3],
		Device:      []clickagg.Device{clickagg.DeviceIOS, clickagg.DeviceAndroid, clickagg.DeviceWeb}[(i/11)%3],
		PriceMicros: uint64(1000 + i%500),
	}
}

// load stores the test traffic through the ingestor: every event once,
// then resends of events 0..99 marked duplicate (the collector recognised
// them) and the slipped resend of event 1234 not marked.
func load(t *testing.T, db testenv.ClickHouseDB) {
	t.Helper()
	var rows ingestor.Rows
	rows.SetReceived(start)
	for i := range nEvents {
		ev := event(i)
		rows.Append(&ev, false)
	}
	rows.SetReceived(start.Add(time.Hour))
	for i := range 100 {
		ev := event(i)
		rows.Append(&ev, true)
	}
	rows.SetReceived(start.Add(2 * time.Hour))
	ev := event(slipped)
	rows.Append(&ev, false)
	testenv.Insert(t, db, &rows)
}

// row is one key of an aggregate table: column → value, as in Diff.Key.
type row map[string]string

// keyCols are the key columns of each table, as reconcile reports them.
var keyCols = map[string][]string{
	"ad_stats_minute":          {"minute", "ad_id", "campaign_id", "country", "ad_format", "device"},
	"dim_stats_minute":         {"minute", "country", "ad_format", "device"},
	"ad_stats_daily":           {"day", "ad_id", "campaign_id"},
	"ad_totals_minute":         {"minute", "ad_id", "campaign_id"},
	"ad_totals_hour":           {"hour", "ad_id", "campaign_id"},
	"dim_stats_hour":           {"hour", "country", "ad_format", "device"},
	"dim_stats_minute_by_time": {"minute", "country", "ad_format", "device"},
}

func keyString(table string, r row) string {
	parts := make([]string, 0, 6)
	for _, c := range keyCols[table] {
		parts = append(parts, r[c])
	}
	return strings.Join(parts, "|")
}

// table is the expected content of one aggregate table: key → counts.
type table map[string]clickagg.Counts

// rowOf is the key of ev in table.
func rowOf(tbl string, ev clickagg.Event) row {
	all := row{
		"minute":      ev.Time.Truncate(time.Minute).Format(time.RFC3339),
		"hour":        ev.Time.Truncate(time.Hour).Format(time.RFC3339),
		"day":         ev.Time.Format(time.DateOnly),
		"ad_id":       ev.AdID,
		"campaign_id": ev.CampaignID,
		"country":     string(ev.Country[:]),
		"ad_format":   ev.AdFormat.String(),
		"device":      ev.Device.String(),
	}
	r := row{}
	for _, c := range keyCols[tbl] {
		r[c] = all[c]
	}
	return r
}

func countsOf(ev clickagg.Event) clickagg.Counts {
	c := clickagg.Counts{SpendMicros: int64(ev.PriceMicros)}
	switch ev.Type {
	case clickagg.Impression:
		c.Impressions = 1
	case clickagg.Click:
		c.Clicks = 1
	case clickagg.Conversion:
		c.Conversions = 1
	}
	return c
}

func add(a, b clickagg.Counts) clickagg.Counts {
	return clickagg.Counts{Impressions: a.Impressions + b.Impressions, Clicks: a.Clicks + b.Clicks,
		Conversions: a.Conversions + b.Conversions, SpendMicros: a.SpendMicros + b.SpendMicros}
}

// truth is every table as the test traffic should make it, each event
// counted once.
func truth(tbl string) table {
	want := table{}
	for i := range nEvents {
		ev := event(i)
		k := keyString(tbl, rowOf(tbl, ev))
		want[k] = add(want[k], countsOf(ev))
	}
	return want
}

// dump reads a table's content over wholeRange, keys rendered as in Diff.Key.
func dump(t *testing.T, db testenv.ClickHouseDB, tbl string) table {
	t.Helper()
	cols := keyCols[tbl]
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = "toString(" + c + ")"
	}
	keys := strings.Join(cols, ", ")
	out := testenv.QueryString(t, db, "SELECT "+strings.Join(sel, ", ")+", sum(impressions) AS i, sum(clicks) AS c, sum(conversions) AS v, sum(spend_micros) AS s FROM "+tbl+
		" GROUP BY "+keys+" HAVING i != 0 OR c != 0 OR v != 0 OR s != 0 ORDER BY "+keys)
	got := table{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		r := row{}
		for i, c := range cols {
			r[c] = f[i]
			if c == "minute" || c == "hour" {
				m, err := time.Parse(time.DateTime, f[i])
				if err != nil {
					t.Fatal(err)
				}
				r[c] = m.Format(time.RFC3339)
			}
		}
		n := make([]int64, 4)
		for j := range n {
			n[j], _ = strconv.ParseInt(f[len(cols)+j], 10, 64)
		}
		got[keyString(tbl, r)] = clickagg.Counts{Impressions: n[0], Clicks: n[1], Conversions: n[2], SpendMicros: n[3]}
	}
	return got
}

// checkEqual fails t unless got and want hold the same keys and counts.
func checkEqual(t *testing.T, what string, got, want table) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("%s %s: got %+v, want %+v", what, k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s %s: got %+v, want no row", what, k, got[k])
		}
	}
}

// diff is what a report should say about one key.
type diff struct{ agg, truth clickagg.Counts }

// expectedDiffs are the keys where agg and want differ.
func expectedDiffs(agg, want table) map[string]diff {
	d := map[string]diff{}
	for k, c := range want {
		if agg[k] != c {
			d[k] = diff{agg[k], c}
		}
	}
	for k, c := range agg {
		if _, ok := want[k]; !ok && c != (clickagg.Counts{}) {
			d[k] = diff{c, clickagg.Counts{}}
		}
	}
	return d
}

// checkReport fails t unless rep's diffs of tbl are exactly want.
func checkReport(t *testing.T, rep reconcile.Report, tbl string, want map[string]diff) {
	t.Helper()
	tr := rep.Table(tbl)
	if tr == nil {
		t.Fatalf("report has no %s", tbl)
	}
	if tr.Rows != int64(len(want)) || len(tr.Diffs) != len(want) {
		t.Errorf("%s: %d differing rows (%d listed), want %d", tbl, tr.Rows, len(tr.Diffs), len(want))
	}
	seen := map[string]bool{}
	for _, d := range tr.Diffs {
		k := keyString(tbl, d.Key)
		seen[k] = true
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("%s %s: reported %+v → %+v, want no difference", tbl, k, d.Aggregate, d.Truth)
		case d.Aggregate != w.agg || d.Truth != w.truth:
			t.Errorf("%s %s: reported %+v → %+v, want %+v → %+v", tbl, k, d.Aggregate, d.Truth, w.agg, w.truth)
		}
		if d.Table != tbl {
			t.Errorf("diff of %s says table %q", tbl, d.Table)
		}
	}
	for k, w := range want {
		if !seen[k] {
			t.Errorf("%s %s: not reported, want %+v → %+v", tbl, k, w.agg, w.truth)
		}
	}
}

func open(t *testing.T, db testenv.ClickHouseDB, o reconcile.Options) *reconcile.Reconciler {
	t.Helper()
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return reconcile.New(conn, o)
}

// keepSketches gives o's database the sketch view of a server from 19 on
// (18.16 keeps none), so that replay rebuilds the sketches as it does there.
func keepSketches(t *testing.T, o chclient.Options) {
	t.Helper()
	ctx := context.Background()
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := schema.CreateSketchView(ctx, conn, schema.Target{Cluster: o.Cluster, Database: o.Database}); err != nil {
		t.Fatal(err)
	}
}

// mutate runs an ALTER ... DELETE and waits for it: mutations run in the
// background, on 18.16 as on 24.x.
func mutate(t *testing.T, db testenv.ClickHouseDB, tbl, where string) {
	t.Helper()
	testenv.Exec(t, db, "ALTER TABLE "+tbl+" DELETE WHERE "+where)
	deadline := time.Now().Add(time.Minute)
	for {
		q := fmt.Sprintf("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = '%s' AND is_done = 0", tbl)
		if testenv.QueryString(t, db, q) == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mutation of %s not done after a minute", tbl)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func run(t *testing.T, r *reconcile.Reconciler, rng clickagg.Range, fix bool) reconcile.Report {
	t.Helper()
	rep, err := r.Run(context.Background(), rng, fix)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Err != "" || rep.Fixed != fix || !rep.Range.From.Equal(rng.From) || rep.FinishedAt.Before(rep.StartedAt) {
		t.Fatalf("report %+v", rep)
	}
	return rep
}
