package prom

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/ingestor"
)

func scrape(t *testing.T, e *Exporter) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// Refusals by the API's middleware and by the collector share one family;
// query routes' refusals stay out of the ingest counters.
func TestRefusedMerged(t *testing.T) {
	src := &Sources{Collector: func() collector.Stats {
		return collector.Stats{Requests: 10, Accepted: 7, Shed: 2, ByReason: map[string]int64{"bad_enum": 1}}
	}}
	e := New(src)
	e.OnRefused("ingest", "unauthorized")
	e.OnRefused("ingest", "unauthorized")
	e.OnRefused("query", "unauthorized")
	e.OnFlush(ingestor.FlushInfo{Rows: 100, Duration: time.Millisecond})
	e.OnFlush(ingestor.FlushInfo{Rows: 100, Err: errors.New("down")})
	e.OnRequest("/v1/events", "POST", 503, time.Millisecond)
	text := scrape(t, e)
	for _, want := range []string{
		`clickagg_ingest_requests_refused_total{reason="unauthorized"} 2`,
		`clickagg_ingest_requests_refused_total{reason="shed"} 2`,
		`clickagg_ingest_events_total{outcome="accepted"} 7`,
		`clickagg_ingest_rejected_events_total{reason="bad_enum"} 1`,
		`clickagg_ingest_flush_duration_seconds_count{result="error"} 1`,
		`clickagg_ingest_block_rows_count 2`,
		`clickagg_http_request_duration_seconds_count{code="503",method="POST",route="/v1/events"} 1`,
		"\ngo_gc_heap_live_bytes ", // soakwatch's leak signal
		"\ngo_memstats_heap_inuse_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s", want)
		}
	}
	// Sources left nil export nothing rather than zeros that look real.
	if strings.Contains(text, "clickagg_cache_hit_ratio") || strings.Contains(text, "clickagg_kafka_lag_messages") {
		t.Error("metrics of absent sources exported")
	}
}

// Each table of each plan is counted by kind of question.
func TestPlansCounted(t *testing.T) {
	e := New(&Sources{})
	e.OnPlan("top", []string{"ad_stats_minute", "ad_totals_hour", "ad_stats_minute"})
	e.OnPlan("metrics", []string{"dim_stats_minute"})
	text := scrape(t, e)
	for _, want := range []string{
		`clickagg_query_plan_pieces_total{kind="top",table="ad_stats_minute"} 2`,
		`clickagg_query_plan_pieces_total{kind="top",table="ad_totals_hour"} 1`,
		`clickagg_query_plan_pieces_total{kind="metrics",table="dim_stats_minute"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s", want)
		}
	}
}
