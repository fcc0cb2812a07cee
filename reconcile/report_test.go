package reconcile_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/reconcile"
)

func TestParseRange(t *testing.T) {
	rng, err := reconcile.ParseRange("2026-11-22T10:00:00+09:00", "2026-11-22T02:00:00Z")
	if err != nil || rng.From != time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC) || rng.To != time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC) {
		t.Fatalf("%+v %v", rng, err)
	}
	for _, c := range []struct{ from, to, want string }{
		{"2026-11-22T10:00:30Z", "2026-11-22T11:00:00Z", `from "2026-11-22T10:00:30Z": not a whole minute`},
		{"2026-11-22T10:00:00Z", "2026-11-22T11:00:00.5Z", `to "2026-11-22T11:00:00.5Z": not a whole minute`},
		{"2026-11-22 10:00", "2026-11-22T11:00:00Z", "want RFC 3339"},
		{"", "2026-11-22T11:00:00Z", "want RFC 3339"},
		{"2026-11-22T11:00:00Z", "2026-11-22T11:00:00Z", "from must be before to"},
	} {
		if _, err := reconcile.ParseRange(c.from, c.to); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseRange(%q, %q): %v, want %q", c.from, c.to, err, c.want)
		}
	}
}

// Run refuses ranges that are not whole minutes before touching ClickHouse.
func TestRunChecksRange(t *testing.T) {
	r := reconcile.New(nil, reconcile.Options{})
	from := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, rng := range []clickagg.Range{{From: from.Add(time.Second), To: from.Add(time.Hour)}, {From: from, To: from}} {
		rep, err := r.Run(context.Background(), rng, true)
		if err == nil || rep.Err == "" || rep.Fixed {
			t.Errorf("Run(%v): %+v, %v", rng, rep, err)
		}
	}
}

func sampleReport() reconcile.Report {
	from := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return reconcile.Report{
		Range:      clickagg.Range{From: from, To: from.Add(time.Hour)},
		StartedAt:  from.Add(2 * time.Hour),
		FinishedAt: from.Add(2*time.Hour + 1500*time.Millisecond),
		Tables: []reconcile.TableReport{
			{Table: "dim_stats_minute", From: from, To: from.Add(time.Hour), Keys: []string{"minute", "country", "ad_format", "device"}, Rows: 3,
				Diffs: []reconcile.Diff{
					{Table: "dim_stats_minute", Key: map[string]string{"minute": "2026-11-22T10:01:00Z", "country": "KR", "ad_format": "banner", "device": "ios"},
						Aggregate: clickagg.Counts{Impressions: 10, Clicks: 2, SpendMicros: 500}, Truth: clickagg.Counts{Impressions: 9, Clicks: 2, SpendMicros: 450}},
					{Table: "dim_stats_minute", Key: map[string]string{"minute": "2026-11-22T10:02:00Z", "country": "US", "ad_format": "video", "device": "web"},
						Truth: clickagg.Counts{Conversions: 1}},
				}},
			{Table: "ad_stats_daily", Keys: []string{"day", "ad_id", "campaign_id"}, Diffs: []reconcile.Diff{}, Note: "skipped: no whole UTC day in the range"},
		},
	}
}

func TestWriteSummary(t *testing.T) {
	rep := sampleReport()
	var b strings.Builder
	if err := rep.WriteSummary(&b, 1); err != nil {
		t.Fatal(err)
	}
	want := `2026-11-22T10:00:00Z to 2026-11-22T11:00:00Z: 3 differing rows, not fixed (1.5s)
dim_stats_minute: 3 differing rows (counts: aggregate → truth where they differ)
  minute                country  ad_format  device  impressions  clicks  conversions  spend_micros
  2026-11-22T10:01:00Z  KR       banner     ios     10 → 9       2       0            500 → 450
  ... and 2 more
ad_stats_daily: skipped: no whole UTC day in the range
`
	if b.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", b.String(), want)
	}
	if rep.Differences() != 3 || !rep.Unfixed() {
		t.Errorf("differences %d, unfixed %v", rep.Differences(), rep.Unfixed())
	}
	if c := rep.Tables[0].Diffs[0].Correction(); c != (clickagg.Counts{Impressions: -1, SpendMicros: -50}) {
		t.Errorf("correction %+v", c)
	}
}

// The JSON is snake case throughout, range included, and reads back.
func TestReportJSON(t *testing.T) {
	rep := sampleReport()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"range":{"from":"2026-11-22T10:00:00Z","to":"2026-11-22T11:00:00Z"}`, `"started_at":`, `"fixed":false`,
		`"keys":["minute","country","ad_format","device"]`, `"aggregate":{"impressions":10,"clicks":2,"conversions":0,"spend_micros":500}`,
		`"note":"skipped: no whole UTC day in the range"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), `"From"`) || strings.Contains(string(b), `"err"`) {
		t.Errorf("JSON: %s", b)
	}
	var back reconcile.Report
	if err := json.Unmarshal(b, &back); err != nil || back.Range != rep.Range || back.Differences() != 3 || len(back.Tables[0].Diffs) != 2 {
		t.Errorf("read back: %+v %v", back, err)
	}
	// Through a pointer, as the API encodes Last().
	if pb, _ := json.Marshal(&rep); string(pb) != string(b) {
		t.Errorf("pointer JSON differs:\n%s\n%s", pb, b)
	}
}
