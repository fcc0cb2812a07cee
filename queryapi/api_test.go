package queryapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/queryapi"
	"github.com/clickagg/clickagg/services"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// t0 is the fixture's first minute; the API's clock stands at t0+10m30s.
var (
	t0  = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	now = t0.Add(10*time.Minute + 30*time.Second)
)

type env struct {
	url   string
	db    testenv.ClickHouseDB
	redis *services.Redis
	rdb   *redis.Client
	cache *cache.Cache
	store *chstore.Store
}

// setup migrates a fresh database, loads events through the ingestor and
// serves the API over the real store and a real Redis cache.
func setup(t *testing.T, events []clickagg.Event) *env {
	t.Helper()
	db := testenv.Migrated(t)
	load(t, db, events)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := chclient.OpenNative(ctx, db.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	store := chstore.New(conn, chstore.Options{})
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	clock := func() time.Time { return now }
	c := cache.New(rdb, store, cache.Options{Now: clock})
	app := queryapi.New(queryapi.Options{
		Metrics: c, Direct: store, Now: clock,
		CacheStats: func() any { return c.Stats() },
		Checks: []queryapi.Check{
			{Name: "clickhouse", Critical: true, Probe: store.Ping},
			{Name: "redis", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	t.Cleanup(func() { app.Shutdown() })
	return &env{url: "http://" + ln.Addr().String(), db: db, redis: r, rdb: rdb, cache: c, store: store}
}

func load(t *testing.T, db testenv.ClickHouseDB, events []clickagg.Event) {
	t.Helper()
	var rows ingestor.Rows
	rows.SetReceived(now)
	for i := range events {
		rows.Append(&events[i], false)
	}
	testenv.Insert(t, db, &rows)
}

// get fetches path and decodes the JSON answer into a generic map.
func (e *env) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: status %d, body %q: %v", path, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, m
}

func ev(id string, typ clickagg.EventType, at time.Time, ad, campaign, country string, f clickagg.AdFormat, d clickagg.Device, price uint64) clickagg.Event {
	return clickagg.Event{EventID: id, Type: typ, Time: at, AdID: ad, CampaignID: campaign,
		Country: [2]byte{country[0], country[1]}, AdFormat: f, Device: d, PriceMicros: price}
}

func at(min, sec, ms int) time.Time {
	return t0.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second + time.Duration(ms)*time.Millisecond)
}

const (
	imp  = clickagg.Impression
	clk  = clickagg.Click
	conv = clickagg.Conversion
)

// fixture: hand-written events whose answers are worked out in the tests.
func fixture() []clickagg.Event {
	B, RV := clickagg.FormatBanner, clickagg.FormatRewardedVideo
	return []clickagg.Event{
		// a1: US banner ios
		ev("1", imp, at(0, 0, 0), "a1", "c1", "US", B, clickagg.DeviceIOS, 1000),
		ev("2", imp, at(0, 59, 999), "a1", "c1", "US", B, clickagg.DeviceIOS, 1000), // last ms of 10:00
		ev("3", clk, at(1, 0, 0), "a1", "c1", "US", B, clickagg.DeviceIOS, 500000),  // first ms of 10:01
		ev("4", imp, at(1, 30, 0), "a1", "c1", "US", B, clickagg.DeviceIOS, 1000),
		ev("5", conv, at(5, 10, 0), "a1", "c1", "US", B, clickagg.DeviceIOS, 2000000),
		// a2: KR rewarded video android, one event in the current minute
		ev("6", imp, at(0, 30, 0), "a2", "c1", "KR", RV, clickagg.DeviceAndroid, 15000),
		ev("7", imp, at(0, 31, 0), "a2", "c1", "KR", RV, clickagg.DeviceAndroid, 15000),
		ev("8", clk, at(3, 0, 0), "a2", "c1", "KR", RV, clickagg.DeviceAndroid, 200000),
		ev("9", clk, at(3, 1, 0), "a2", "c1", "KR", RV, clickagg.DeviceAndroid, 200000),
		ev("10", imp, at(10, 5, 0), "a2", "c1", "KR", RV, clickagg.DeviceAndroid, 15000),
		// a3: US rewarded video web; ties a2 on clicks
		ev("11", clk, at(2, 0, 0), "a3", "c2", "US", RV, clickagg.DeviceWeb, 300000),
		ev("12", clk, at(2, 10, 0), "a3", "c2", "US", RV, clickagg.DeviceWeb, 300000),
		ev("13", imp, at(2, 20, 0), "a3", "c2", "US", RV, clickagg.DeviceWeb, 12000),
		// b'1\: an id that needs escaping, one second before t0
		ev("14", imp, t0.Add(-time.Second), `b'1\`, "c2", "US", B, clickagg.DeviceCTV, 1500),
	}
}

func num(m map[string]any, k string) float64 {
	f, _ := m[k].(float64)
	return f
}

// counts renders the count fields of an answer as "imp clk conv spend".
func counts(m map[string]any) string {
	return fmt.Sprintf("%v %v %v %v", num(m, "impressions"), num(m, "clicks"), num(m, "conversions"), num(m, "spend_micros"))
}

const (
	from0  = "from=2026-11-22T10:00:00Z"
	to11   = "to=2026-11-22T10:11:00Z"
	range0 = from0 + "&" + to11
)

func TestMetricsOne(t *testing.T) {
	e := setup(t, fixture())
	status, m := e.get(t, "/v1/metrics/US/banner?"+range0)
	if status != 200 || counts(m) != "3 1 1 2.503e+06" || m["country"] != "US" || m["ad_format"] != "banner" ||
		m["from"] != "2026-11-22T10:00:00Z" || m["to"] != "2026-11-22T10:11:00Z" {
		t.Fatalf("%d %v", status, m)
	}
	if num(m, "ctr") != 1.0/3 || num(m, "cvr") != 1 || fmt.Sprintf("%.4f", num(m, "ecpm")) != "834.3333" {
		t.Errorf("ratios %v %v %v", m["ctr"], m["cvr"], m["ecpm"])
	}
	// One more minute back takes in b'1\ at 09:59:59.
	if _, m := e.get(t, "/v1/metrics/US/banner?from=2026-11-22T09:59:00Z&"+to11); counts(m) != "4 1 1 2.5045e+06" {
		t.Errorf("from 09:59: %v", m)
	}
	// window=15m ends with the current minute 10:10 and holds a2's 10:10:05.
	if _, m := e.get(t, "/v1/metrics/KR/rewarded_video?window=15m"); counts(m) != "3 2 0 445000" || m["from"] != "2026-11-22T09:56:00Z" || m["cached"] != false {
		t.Errorf("window: %v", m)
	}
	if _, m := e.get(t, "/v1/metrics/KR/rewarded_video?window=10m"); counts(m) != "1 2 0 415000" {
		t.Errorf("window 10m starts at 10:01: %v", m)
	}
	// Filters stack: a device that never saw a banner in the US gives zeros.
	if _, m := e.get(t, "/v1/metrics/US/banner?"+range0+"&device=android"); counts(m) != "0 0 0 0" || num(m, "ctr") != 0 || num(m, "ecpm") != 0 {
		t.Errorf("filtered to nothing: %v", m)
	}
	if _, m := e.get(t, "/v1/metrics/US/rewarded_video?"+range0+"&campaign_id=c2&campaign_id=c9"); counts(m) != "1 2 0 612000" {
		t.Errorf("campaign filter: %v", m)
	}
	// Empty range.
	if _, m := e.get(t, "/v1/metrics/US/banner?from=2026-11-22T11:00:00Z&to=2026-11-22T11:05:00Z"); counts(m) != "0 0 0 0" {
		t.Errorf("empty range: %v", m)
	}
}

func rowsOf(t *testing.T, m map[string]any, keys ...string) string {
	t.Helper()
	var out []string
	rows, _ := m["rows"].([]any)
	for _, r := range rows {
		row := r.(map[string]any)
		var ks []string
		for _, k := range keys {
			ks = append(ks, fmt.Sprint(row[k]))
		}
		out = append(out, strings.Join(ks, "/")+": "+counts(row))
	}
	return strings.Join(out, "; ")
}

func TestMetricsGrouped(t *testing.T) {
	e := setup(t, fixture())
	for _, tc := range []struct{ query, keys, want string }{
		{"group_by=country,ad_format&" + range0, "country,ad_format",
			"KR/rewarded_video: 3 2 0 445000; US/banner: 3 1 1 2.503e+06; US/rewarded_video: 1 2 0 612000"},
		{"group_by=ad_id&from=2026-11-22T09:59:00Z&to=2026-11-22T10:03:00Z&country=US", "ad_id",
			`a1: 3 1 0 503000; a3: 1 2 0 612000; b'1\: 1 0 0 1500`},
		{"group_by=minute&ad_id=a1&" + from0 + "&to=2026-11-22T10:06:00Z", "minute",
			"2026-11-22T10:00:00Z: 2 0 0 2000; 2026-11-22T10:01:00Z: 1 1 0 501000; 2026-11-22T10:05:00Z: 0 0 1 2e+06"},
		{"group_by=hour,device&" + range0 + "&device=ios&device=web", "hour,device",
			"2026-11-22T10:00:00Z/ios: 3 1 1 2.503e+06; 2026-11-22T10:00:00Z/web: 1 2 0 612000"},
		{"group_by=day&from=2026-11-22T09:00:00Z&" + to11, "day", "2026-11-22T00:00:00Z: 8 5 1 3.5615e+06"},
		{"group_by=campaign_id&from=2026-11-22T12:00:00Z&to=2026-11-22T12:01:00Z", "campaign_id", ""},
		{range0, "", ": 7 5 1 3.56e+06"},
	} {
		status, m := e.get(t, "/v1/metrics?"+tc.query)
		if status != 200 {
			t.Errorf("%s: %d %v", tc.query, status, m)
			continue
		}
		var keys []string
		if tc.keys != "" {
			keys = strings.Split(tc.keys, ",")
		}
		if got := rowsOf(t, m, keys...); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.query, got, tc.want)
		}
	}
}

func points(m map[string]any) string {
	var out []string
	for _, p := range m["points"].([]any) {
		pt := p.(map[string]any)
		out = append(out, strings.TrimPrefix(fmt.Sprint(pt["time"]), "2026-11-22T")+" "+counts(pt))
	}
	return strings.Join(out, "; ")
}

func TestSeries(t *testing.T) {
	e := setup(t, fixture())
	_, m := e.get(t, "/v1/ads/a1/series?"+from0+"&to=2026-11-22T10:06:00Z")
	want := "10:00:00Z 2 0 0 2000; 10:01:00Z 1 1 0 501000; 10:02:00Z 0 0 0 0; 10:03:00Z 0 0 0 0; 10:04:00Z 0 0 0 0; 10:05:00Z 0 0 1 2e+06"
	if got := points(m); got != want || m["ad_id"] != "a1" || m["granularity"] != "1m" {
		t.Errorf("1m series:\n got %s\nwant %s (%v)", got, want, m)
	}
	if _, m := e.get(t, "/v1/ads/a1/series?"+from0+"&to=2026-11-22T10:03:00Z&device=android"); points(m) != "10:00:00Z 0 0 0 0; 10:01:00Z 0 0 0 0; 10:02:00Z 0 0 0 0" {
		t.Errorf("filtered series: %s", points(m))
	}
	// window=3h from 10:10:30 starts at 07:11; hourly buckets start at 07:00.
	if _, m := e.get(t, "/v1/ads/a2/series?granularity=1h&window=3h"); points(m) != "07:00:00Z 0 0 0 0; 08:00:00Z 0 0 0 0; 09:00:00Z 0 0 0 0; 10:00:00Z 3 2 0 445000" {
		t.Errorf("1h series: %s", points(m))
	}
	if _, m := e.get(t, "/v1/ads/a2/series?granularity=1d&window=2d"); points(m) != "2026-11-20T00:00:00Z 0 0 0 0; 2026-11-21T00:00:00Z 0 0 0 0; 00:00:00Z 3 2 0 445000" {
		t.Errorf("1d series: %s", points(m))
	}
	// An id with a quote and a backslash is bound, not spliced.
	if _, m := e.get(t, "/v1/ads/"+url.PathEscape(`b'1\`)+"/series?from=2026-11-22T09:59:00Z&to=2026-11-22T10:01:00Z"); points(m) != "09:59:00Z 1 0 0 1500; 10:00:00Z 0 0 0 0" {
		t.Errorf("escaped id: %v", m)
	}
}

func ads(m map[string]any) string {
	var out []string
	for _, a := range m["ads"].([]any) {
		ad := a.(map[string]any)
		out = append(out, fmt.Sprintf("%v:%v=%s", ad["rank"], ad["ad_id"], counts(ad)))
	}
	return strings.Join(out, " ")
}

func TestTop(t *testing.T) {
	e := setup(t, fixture())
	for _, mode := range []string{"exact", "approx"} {
		for _, tc := range []struct{ query, want string }{
			// a2 and a3 tie on 2 clicks: ad_id breaks it.
			{"metric=clicks&n=2&" + range0, "1:a2=3 2 0 445000 2:a3=1 2 0 612000"},
			{"n=3&" + range0, "1:a2=3 2 0 445000 2:a3=1 2 0 612000 3:a1=3 1 1 2.503e+06"},
			{"metric=impressions&n=3&" + range0, "1:a1=3 1 1 2.503e+06 2:a2=3 2 0 445000 3:a3=1 2 0 612000"},
			{"metric=conversions&n=5&" + range0, "1:a1=3 1 1 2.503e+06"},
			{"metric=clicks&window=5m", ""}, // 10:06-10:10 holds no click: ads without any are not ranked
		} {
			status, m := e.get(t, "/v1/ads/top?mode="+mode+"&"+tc.query)
			// Sketches are never read for exact, nor for approx where the
			// server keeps none (18.16: chstore's tests cover both).
			if sk, ok := m["sketches"].(bool); status != 200 || m["mode"] != mode || !ok || mode == "exact" && sk {
				t.Errorf("%s %s: %d %v", mode, tc.query, status, m)
				continue
			}
			if got := ads(m); got != tc.want {
				t.Errorf("%s %s:\n got %s\nwant %s", mode, tc.query, got, tc.want)
			}
		}
	}
	if _, m := e.get(t, "/v1/ads/top?metric=clicks&n=5&country=US&"+range0); ads(m) != "1:a3=1 2 0 612000 2:a1=3 1 1 2.503e+06" {
		t.Errorf("filtered: %v", m)
	}
	if _, m := e.get(t, "/v1/ads/top?metric=spend_micros&n=1&"+range0); ads(m) != "1:a1=3 1 1 2.503e+06" {
		t.Errorf("spend: %v", m)
	}
	for _, q := range []string{"mode=approx&metric=spend_micros", "mode=approx&campaign_id=c1", "mode=approx&country=US"} {
		if status, m := e.get(t, "/v1/ads/top?"+q); status != 400 || m["param"] != "mode" {
			t.Errorf("%s: %d %v", q, status, m)
		}
	}
}

func TestValidation(t *testing.T) {
	e := setup(t, nil)
	for _, tc := range []struct{ path, param string }{
		{"/v1/metrics/US/banner?window=0m", "window"},
		{"/v1/metrics/US/banner?window=8d", "window"},
		{"/v1/metrics/US/banner?window=169h", "window"},
		{"/v1/metrics/US/banner?window=5x", "window"},
		{"/v1/metrics/US/banner?window=5m&from=2026-11-22T10:00:00Z", "window"},
		{"/v1/metrics/US/banner?window=5m&window=6m", "window"},
		{"/v1/metrics/US/banner?from=2026-11-22T10:05:00Z&to=2026-11-22T10:00:00Z", "from"},
		{"/v1/metrics/US/banner?from=2026-11-22T10:00:00Z&to=2026-11-22T10:00:00Z", "from"},
		{"/v1/metrics/US/banner?from=2026-11-22T10:00:30Z&to=2026-11-22T10:05:00Z", "from"},
		{"/v1/metrics/US/banner?from=2026-11-22T10:00:00Z&to=2026-11-22T10:05:00.5Z", "to"},
		{"/v1/metrics/US/banner?from=2026-11-22T10:00:00Z", "to"},
		{"/v1/metrics/US/banner?to=2026-11-22T10:00:00Z", "from"},
		{"/v1/metrics/US/banner?from=yesterday&to=2026-11-22T10:00:00Z", "from"},
		{"/v1/metrics/US/banner?from=2025-01-01T00:00:00Z&to=2026-11-22T10:00:00Z", "from"},
		{"/v1/metrics/USA/banner", "country"},
		{"/v1/metrics/US/popup", "ad_format"},
		{"/v1/metrics/US/banner?country=KR", "country"},
		{"/v1/metrics/US/banner?contry=KR", "contry"},
		{"/v1/metrics/US/banner?device=fridge", "device"},
		{"/v1/metrics?group_by=country,planet", "group_by"},
		{"/v1/metrics?group_by=country,country", "group_by"},
		{"/v1/metrics?country=" + url.QueryEscape("US' OR 1=1 --"), "country"},
		{"/v1/metrics?ad_format=" + url.QueryEscape("banner') OR ('1'='1"), "ad_format"},
		{"/v1/metrics?campaign_id=", "campaign_id"},
		{"/v1/metrics?ad_id=" + strings.Repeat("x", 129), "ad_id"},
		{"/v1/ads/top?n=0", "n"},
		{"/v1/ads/top?n=1001", "n"},
		{"/v1/ads/top?n=ten", "n"},
		{"/v1/ads/top?metric=views", "metric"},
		{"/v1/ads/top?mode=guess", "mode"},
		{"/v1/ads/a1/series?granularity=5m", "granularity"},
		{"/v1/ads/a1/series?granularity=1m&from=2026-10-22T10:00:00Z&to=2026-11-22T10:00:00Z", "granularity"},
		{"/v1/ads/a1/series?ad_id=a2", "ad_id"},
		{"/v1/benchmark/US/banner?n=0", "n"},
	} {
		status, m := e.get(t, tc.path)
		if status != 400 || m["param"] != tc.param || m["error"] == "" {
			t.Errorf("%s: %d %v, want 400 naming %q", tc.path, status, m, tc.param)
		}
	}
	// Injection through free-text filters is bound, answers zeros, and
	// leaves the tables alone.
	for _, q := range []string{"ad_id=" + url.QueryEscape("x' OR '1'='1"), "campaign_id=" + url.QueryEscape(`\'; DROP TABLE events; --`)} {
		if status, m := e.get(t, "/v1/metrics?"+q); status != 200 || rowsOf(t, m) != ": 0 0 0 0" {
			t.Errorf("%s: %d %v", q, status, m)
		}
	}
	if got := testenv.QueryString(t, e.db, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'"); got != "1" {
		t.Errorf("events table gone: %s", got)
	}
}

func TestCacheAside(t *testing.T) {
	e := setup(t, fixture())
	past := "/v1/metrics/US/banner?" + from0 + "&to=2026-11-22T10:06:00Z"
	current := "/v1/metrics/US/banner?window=5m"
	for _, path := range []string{past, current} {
		_, first := e.get(t, path)
		_, second := e.get(t, path)
		if first["cached"] != false || second["cached"] != true || counts(first) != counts(second) {
			t.Errorf("%s: first %v second %v", path, first, second)
		}
	}
	ctx := context.Background()
	ttl := func(r clickagg.Range) time.Duration {
		key := e.cache.Key(clickagg.MetricsQuery{Range: r, Filter: clickagg.Filter{Countries: []string{"US"}, AdFormats: []string{"banner"}}})
		d, err := e.rdb.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := ttl(clickagg.Range{From: t0, To: at(6, 0, 0)}); d < 59*time.Minute || d > time.Hour {
		t.Errorf("past range TTL %v, want about 1h", d)
	}
	if d := ttl(clickagg.Range{From: at(6, 0, 0), To: at(11, 0, 0)}); d <= 0 || d > 5*time.Second {
		t.Errorf("current range TTL %v, want at most 5s", d)
	}
	// Cache-Control: no-cache asks ClickHouse and leaves the cache alone.
	req, _ := http.NewRequest(http.MethodGet, e.url+past, nil)
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var nc map[string]any
	json.NewDecoder(resp.Body).Decode(&nc)
	resp.Body.Close()
	if nc["cached"] != false || counts(nc) != "3 1 1 2.503e+06" {
		t.Errorf("no-cache: %v", nc)
	}
	_, stats := e.get(t, "/v1/cache/stats")
	if num(stats, "hits") != 2 || num(stats, "misses") != 2 {
		t.Errorf("cache stats %v", stats)
	}

	// Redis down: answers stay right, from ClickHouse; readiness degrades.
	if err := e.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	_, m := e.get(t, past)
	if m["cached"] != false || counts(m) != "3 1 1 2.503e+06" {
		t.Errorf("redis down: %v", m)
	}
	status, ready := e.get(t, "/readyz")
	if status != 200 || ready["status"] != "degraded" {
		t.Errorf("readyz with redis down: %d %v", status, ready)
	}
	if _, stats := e.get(t, "/v1/cache/stats"); num(stats, "errors") == 0 {
		t.Errorf("redis errors not counted: %v", stats)
	}
	if err := e.redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.get(t, past)
	if _, m := e.get(t, past); m["cached"] != true {
		t.Errorf("hits did not resume: %v", m)
	}
	if status, ready := e.get(t, "/readyz"); status != 200 || ready["status"] != "ready" {
		t.Errorf("readyz: %d %v", status, ready)
	}
}

func TestBenchmarkEndpoint(t *testing.T) {
	e := setup(t, fixture())
	status, m := e.get(t, "/v1/benchmark/US/banner?n=20&"+range0)
	if status != 200 || num(m, "samples") != 20 || num(m, "redis_hits") != 20 {
		t.Fatalf("%d %v", status, m)
	}
	for _, side := range []string{"clickhouse", "redis"} {
		l := m[side].(map[string]any)
		if !(num(l, "p50_ms") > 0 && num(l, "p50_ms") <= num(l, "p95_ms") && num(l, "p95_ms") <= num(l, "p99_ms") && num(l, "mean_ms") > 0) {
			t.Errorf("%s: %v", side, l)
		}
	}
	if num(m, "speedup_p50") <= 0 {
		t.Errorf("speedup %v", m["speedup_p50"])
	}
}
