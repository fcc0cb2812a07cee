package queryapi

import (
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/clickagg/clickagg"
)

// The fuzz targets drive each metrics route's whole parsing through the
// app's router and handlers, in process (a fasthttp.RequestCtx, no socket),
// over a service that only records the question it was asked. A 200 must
// carry a question within the documented limits, a 400 must name a
// parameter the request could have meant, anything else is a failure.

var fuzzNow = time.Date(2026, 11, 22, 10, 10, 30, 0, time.UTC)

// recorder is a MetricsService that keeps the questions and answers nothing.
// Of Metrics questions it keeps the first and counts the others: the
// benchmark route asks up to 2001 times.
type recorder struct {
	mu       sync.Mutex
	metrics  []clickagg.MetricsQuery
	nMetrics int
	series   []clickagg.SeriesQuery
	top      []clickagg.TopQuery
}

func (r *recorder) Metrics(_ context.Context, q clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nMetrics == 0 {
		r.metrics = append(r.metrics, q)
	}
	r.nMetrics++
	return &clickagg.MetricsResult{Range: q.Range}, nil
}

func (r *recorder) Series(_ context.Context, q clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.series = append(r.series, q)
	return &clickagg.SeriesResult{Range: q.Range}, nil
}

func (r *recorder) TopAds(_ context.Context, q clickagg.TopQuery) (*clickagg.TopResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.top = append(r.top, q)
	return &clickagg.TopResult{Range: q.Range}, nil
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics, r.nMetrics, r.series, r.top = nil, 0, nil, nil
}

// fuzzApp serves the routes over two recorders with the default limits.
type fuzzApp struct {
	h              fasthttp.RequestHandler
	cached, direct *recorder
	o              Options // the defaults New applies
}

func newFuzzApp() *fuzzApp {
	a := &fuzzApp{cached: &recorder{}, direct: &recorder{}}
	a.o = Options{Metrics: a.cached, Direct: a.direct, Now: func() time.Time { return fuzzNow }}
	a.h = New(a.o).Handler()
	a.o.MaxRange, a.o.MaxTopN = 31*24*time.Hour, 1000
	return a
}

// get answers GET path?query and returns the status and, for a 400, the
// parameter the answer names.
func (a *fuzzApp) get(t *testing.T, path, query string) (int, string) {
	t.Helper()
	a.cached.reset()
	a.direct.reset()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fiber.MethodGet)
	ctx.Request.SetRequestURI(path)
	ctx.Request.URI().SetQueryString(query)
	a.h(&ctx)
	status, body := ctx.Response.StatusCode(), ctx.Response.Body()
	switch status {
	case fiber.StatusOK:
		return status, ""
	case fiber.StatusBadRequest:
		var e struct{ Error, Param string }
		if err := json.Unmarshal(body, &e); err != nil || e.Param == "" || e.Error == "" {
			t.Fatalf("GET %s?%s: 400 without error and param: %s", path, query, body)
		}
		if a.calls() != 0 {
			t.Fatalf("GET %s?%s: 400 after asking the service", path, query)
		}
		return status, e.Param
	}
	t.Fatalf("GET %s?%s: status %d: %s", path, query, status, body)
	return 0, ""
}

func (a *fuzzApp) calls() int {
	n := 0
	for _, r := range []*recorder{a.cached, a.direct} {
		n += r.nMetrics + len(r.series) + len(r.top)
	}
	return n
}

// queryArgs parses query as the server does.
func queryArgs(query string) *fasthttp.Args {
	var args fasthttp.Args
	args.Parse(query)
	return &args
}

// checkParam fails unless the 400's param is one of allowed or a key of
// the query (an unknown parameter is named as given). The key goes through
// JSON as the answer did, so invalid UTF-8 compares equal.
func checkParam(t *testing.T, query, param string, allowed []string) {
	t.Helper()
	if slices.Contains(allowed, param) {
		return
	}
	found := false
	queryArgs(query).VisitAll(func(k, _ []byte) {
		b, _ := json.Marshal(string(k))
		var s string
		json.Unmarshal(b, &s)
		found = found || s == param
	})
	if !found {
		t.Fatalf("?%s: 400 names %q, neither a parameter nor a key of the query", query, param)
	}
}

// checkRange holds a parsed range to the documented limits: whole UTC
// minutes, From before To, at most maxRange; a window (or the default
// 1h) ends with the current minute and spans at most 7 days.
func checkRange(t *testing.T, query string, r clickagg.Range, maxRange time.Duration) {
	t.Helper()
	if r.From.Location() != time.UTC || r.To.Location() != time.UTC {
		t.Fatalf("?%s: range %v not in UTC", query, r)
	}
	if !r.From.Truncate(time.Minute).Equal(r.From) || !r.To.Truncate(time.Minute).Equal(r.To) {
		t.Fatalf("?%s: range %v not on whole minutes", query, r)
	}
	if !r.From.Before(r.To) || r.To.Sub(r.From) > maxRange {
		t.Fatalf("?%s: range %v empty or longer than %s", query, r, maxRange)
	}
	if args := queryArgs(query); !args.Has("from") && !args.Has("to") {
		end := fuzzNow.Truncate(time.Minute).Add(time.Minute)
		if !r.To.Equal(end) || r.To.Sub(r.From) > maxWindow {
			t.Fatalf("?%s: window %v does not end at %v or is longer than %s", query, r, end, maxWindow)
		}
	}
}

// checkFilter holds a parsed filter to its limits: every list sorted and
// without repeats, each value valid for its parameter, at most maxValues.
func checkFilter(t *testing.T, query string, f clickagg.Filter) {
	t.Helper()
	for _, l := range []struct {
		name string
		vals []string
	}{{"country", f.Countries}, {"ad_format", f.AdFormats}, {"device", f.Devices}, {"campaign_id", f.CampaignIDs}, {"ad_id", f.AdIDs}} {
		if len(l.vals) > maxValues {
			t.Fatalf("?%s: %d values of %s", query, len(l.vals), l.name)
		}
		for i, v := range l.vals {
			if i > 0 && l.vals[i-1] >= v {
				t.Fatalf("?%s: %s %q not sorted and unique", query, l.name, l.vals)
			}
			if err := checkFilterValue(l.name, v); err != nil {
				t.Fatalf("?%s: accepted %s: %v", query, l.name, err)
			}
		}
	}
}

// segment escapes s as one path segment, dots too so that "." and ".."
// stay values; an empty one stands for a space so the route still matches.
func segment(s string) string {
	if s == "" {
		s = " "
	}
	return strings.ReplaceAll(url.PathEscape(s), ".", "%2E")
}

// FuzzMetricsOne drives GET /v1/metrics/{country}/{ad_format} and, with
// bench, GET /v1/benchmark/{country}/{ad_format} (the same question plus n).
func FuzzMetricsOne(f *testing.F) {
	for _, s := range []struct {
		country, format, query string
		bench                  bool
	}{
		{"US", "banner", "", false},
		{"US", "banner", "window=5m&device=ios&device=ios&campaign_id=c1", false},
		{"ZZ", "video", "from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z", false},
		{"us", "banner", "", false},
		{"US", "unknown", "country=DE", false},
		{"US", "banner", "window=5m&from=2026-11-22T10:00:00Z", false},
		{"DE", "native", "n=3&window=1h", true},
		{"DE", "native", "n=0", true},
		{"DE", "native", "n=1001&n=1", true},
	} {
		f.Add(s.country, s.format, s.query, s.bench)
	}
	a := newFuzzApp()
	f.Fuzz(func(t *testing.T, country, format, query string, bench bool) {
		route, extra := "/v1/metrics/", []string(nil)
		if bench {
			route, extra = "/v1/benchmark/", []string{"n"}
		}
		status, param := a.get(t, route+segment(country)+"/"+segment(format), query)
		if status == fiber.StatusBadRequest {
			checkParam(t, query, param, append(allowed(nil, extra...), "ad_format"))
			return
		}
		var qs []clickagg.MetricsQuery
		if bench {
			qs = a.direct.metrics
			n := a.direct.nMetrics
			if n < 1 || n > a.o.MaxTopN || a.cached.nMetrics != n+1 {
				t.Fatalf("?%s: benchmark asked %d direct and %d cached questions", query, n, a.cached.nMetrics)
			}
			if !queryArgs(query).Has("n") && n != 50 {
				t.Fatalf("?%s: default n %d, want 50", query, n)
			}
		} else {
			qs = a.cached.metrics
			if a.cached.nMetrics != 1 {
				t.Fatalf("?%s: %d questions, want 1", query, a.cached.nMetrics)
			}
		}
		q := qs[0]
		if !slices.Equal(q.Filter.Countries, []string{country}) {
			t.Fatalf("path country %q asked as %q", country, q.Filter.Countries)
		}
		if !slices.Equal(q.Filter.AdFormats, []string{format}) {
			t.Fatalf("path ad_format %q asked as %q", format, q.Filter.AdFormats)
		}
		if len(q.GroupBy) != 0 {
			t.Fatalf("grouped by %v", q.GroupBy)
		}
		checkRange(t, query, q.Range, a.o.MaxRange)
		checkFilter(t, query, q.Filter)
	})
}

// FuzzMetricsGrouped drives GET /v1/metrics?group_by=...
func FuzzMetricsGrouped(f *testing.F) {
	for _, q := range []string{
		"",
		"group_by=country,ad_format",
		"group_by=+country+,+minute&window=24h&country=US&country=DE&country=US",
		"group_by=country,country",
		"group_by=country,",
		"group_by=a&group_by=b",
		"window=7d",
		"window=8d",
		"window=0m",
		"window=999999m",
		"from=2026-11-01T00:00:00Z&to=2026-12-02T00:00:00Z",
		"from=2026-11-01T00:00:00Z&to=2026-12-02T00:01:00Z",
		"from=2026-11-22T10:00:30Z&to=2026-11-22T11:00:00Z",
		"from=2026-11-22T12:00:00%2B02:00&to=2026-11-22T11:00:00Z",
		"from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:00Z",
		"to=2026-11-22T11:00:00Z",
		"contry=US",
		"campaign_id=&ad_id=x",
		"device=unknown&ad_format=unknown&country=ZZ",
	} {
		f.Add(q)
	}
	a := newFuzzApp()
	f.Fuzz(func(t *testing.T, query string) {
		status, param := a.get(t, "/v1/metrics", query)
		if status == fiber.StatusBadRequest {
			checkParam(t, query, param, allowed(nil, "group_by"))
			return
		}
		if a.cached.nMetrics != 1 {
			t.Fatalf("?%s: %d questions, want 1", query, a.cached.nMetrics)
		}
		q := a.cached.metrics[0]
		for i, d := range q.GroupBy {
			if !slices.Contains(clickagg.Dimensions(), d) || slices.Contains(q.GroupBy[:i], d) {
				t.Fatalf("?%s: group_by %v", query, q.GroupBy)
			}
		}
		checkRange(t, query, q.Range, a.o.MaxRange)
		checkFilter(t, query, q.Filter)
	})
}

// FuzzSeries drives GET /v1/ads/{ad_id}/series.
func FuzzSeries(f *testing.F) {
	for _, s := range []struct{ ad, query string }{
		{"ad-1", ""},
		{"ad-1", "granularity=1h&window=7d"},
		{"ad/1 é", "granularity=1d&from=2026-10-22T10:00:00Z&to=2026-11-22T10:00:00Z"},
		{"ad-1", "granularity=1m&from=2026-10-22T10:00:00Z&to=2026-11-22T10:00:00Z"},
		{"ad-1", "granularity=1m&window=7d"},
		{"ad-1", "granularity=5m"},
		{"ad-1", "ad_id=ad-2"},
		{strings.Repeat("a", 129), ""},
		{"\xff", ""},
	} {
		f.Add(s.ad, s.query)
	}
	a := newFuzzApp()
	f.Fuzz(func(t *testing.T, ad, query string) {
		status, param := a.get(t, "/v1/ads/"+segment(ad)+"/series", query)
		if status == fiber.StatusBadRequest {
			checkParam(t, query, param, append(allowed([]string{"ad_id"}, "granularity"), "ad_id"))
			return
		}
		if len(a.cached.series) != 1 {
			t.Fatalf("?%s: %d questions, want 1", query, len(a.cached.series))
		}
		q := a.cached.series[0]
		if q.AdID != ad && !(ad == "" && q.AdID == " ") {
			t.Fatalf("path ad_id %q asked as %q", ad, q.AdID)
		}
		if err := checkFilterValue("ad_id", q.AdID); err != nil {
			t.Fatalf("accepted ad_id: %v", err)
		}
		if !slices.Contains(slices.Collect(maps.Values(granularities)), q.Granularity) {
			t.Fatalf("?%s: granularity %v", query, q.Granularity)
		}
		if n := q.Range.To.Sub(q.Range.From.Truncate(q.Granularity)) / q.Granularity; n > maxPoints {
			t.Fatalf("?%s: %d points, at most %d", query, n, maxPoints)
		}
		if len(q.Filter.AdIDs) != 0 {
			t.Fatalf("?%s: ad_id filter %q beside the path's", query, q.Filter.AdIDs)
		}
		checkRange(t, query, q.Range, a.o.MaxRange)
		checkFilter(t, query, q.Filter)
	})
}

// FuzzTop drives GET /v1/ads/top.
func FuzzTop(f *testing.F) {
	for _, q := range []string{
		"",
		"n=10&metric=spend_micros&mode=approx",
		"n=1000&metric=impressions",
		"n=1001",
		"n=0",
		"n=-1",
		"n=%2B5",
		"n=99999999999999999999",
		"n=1&n=2",
		"metric=ctr",
		"mode=APPROX",
		"n=&metric=&mode=",
		"ad_id=a&ad_id=b&ad_id=a&campaign_id=c",
	} {
		f.Add(q)
	}
	a := newFuzzApp()
	f.Fuzz(func(t *testing.T, query string) {
		status, param := a.get(t, "/v1/ads/top", query)
		if status == fiber.StatusBadRequest {
			checkParam(t, query, param, allowed(nil, "n", "metric", "mode"))
			return
		}
		if len(a.cached.top) != 1 {
			t.Fatalf("?%s: %d questions, want 1", query, len(a.cached.top))
		}
		q := a.cached.top[0]
		if q.N < 1 || q.N > a.o.MaxTopN {
			t.Fatalf("?%s: n %d outside [1, %d]", query, q.N, a.o.MaxTopN)
		}
		if n := queryArgs(query).Peek("n"); len(n) == 0 && q.N != 100 {
			t.Fatalf("?%s: default n %d, want 100", query, q.N)
		}
		if !slices.Contains([]clickagg.Metric{clickagg.MetricClicks, clickagg.MetricImpressions, clickagg.MetricConversions, clickagg.MetricSpend}, q.Metric) {
			t.Fatalf("?%s: metric %q", query, q.Metric)
		}
		checkRange(t, query, q.Range, a.o.MaxRange)
		checkFilter(t, query, q.Filter)
	})
}
