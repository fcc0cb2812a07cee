package queryapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

const (
	ingestTok = "ingest-secret-1"
	queryTok  = "query-secret-1"
)

// authApp serves fake ingest and status handlers behind o, with GET
// /metrics added after New as the Prometheus route will be.
func authApp(o AuthOptions, now func() time.Time) *fiber.App {
	app := New(Options{
		Ingest:       func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"bytes": len(c.Body())}) },
		IngestStatus: func() any { return fiber.Map{"ok": true} },
		Metrics:      docsNopMetrics{},
		Auth:         o,
		Now:          now,
	})
	app.Get("/metrics", func(c *fiber.Ctx) error { return c.SendString("# metrics\n") })
	return app
}

type answer struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, app *fiber.App, method, path, auth string) answer {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"event_id":"e1"}`)
	}
	req := httptest.NewRequest(method, path, body)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(raw)}
}

func TestAuthOpenWithoutTokens(t *testing.T) {
	app := authApp(AuthOptions{}, nil)
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/events"}, {"GET", "/v1/ingest/status"}, {"GET", "/metrics"}, {"GET", "/healthz"},
	} {
		if a := call(t, app, r.method, r.path, ""); a.status != 200 {
			t.Errorf("%s %s: %d %s", r.method, r.path, a.status, a.body)
		}
	}
}

func TestAuthRefusedAlike(t *testing.T) {
	var counts Refusals
	app := authApp(AuthOptions{IngestTokens: []string{ingestTok}, QueryTokens: []string{queryTok, "query-secret-2"}, Hooks: &counts}, nil)
	cases := []struct{ method, path, auth string }{
		{"POST", "/v1/events", ""},
		{"POST", "/v1/events", "Basic " + ingestTok},
		{"POST", "/v1/events", "Bearer"},
		{"POST", "/v1/events", "Bearer wrong"},
		{"POST", "/v1/events", "Bearer " + ingestTok + "x"},
		{"POST", "/v1/events", "Bearer " + queryTok},
		{"POST", "/V1/Events/", "Bearer " + queryTok}, // routed like /v1/events
		{"GET", "/v1/ingest/status", ""},
		{"GET", "/v1/ingest/status", "Bearer " + ingestTok},
		{"GET", "/metrics", "Bearer " + ingestTok},
		{"GET", "/metrics", "Bearer " + queryTok[:5]},
		{"GET", "/v1/no/such/route", ""},
	}
	for _, tc := range cases {
		a := call(t, app, tc.method, tc.path, tc.auth)
		if a.status != 401 || a.body != `{"error":"unauthorized"}` || a.header.Get("WWW-Authenticate") != `Bearer realm="clickagg"` {
			t.Errorf("%s %s %q: %d %q %q", tc.method, tc.path, tc.auth, a.status, a.body, a.header.Get("WWW-Authenticate"))
		}
	}
	if got := counts.Stats().Unauthorized; got != uint64(len(cases)) {
		t.Errorf("counted %d refusals, want %d", got, len(cases))
	}
}

func TestAuthAccepts(t *testing.T) {
	app := authApp(AuthOptions{IngestTokens: []string{"other", ingestTok}, QueryTokens: []string{queryTok, "query-secret-2"}}, nil)
	for _, tc := range []struct{ method, path, auth string }{
		{"POST", "/v1/events", "Bearer " + ingestTok},
		{"POST", "/v1/events", "bearer  " + ingestTok + " "},
		{"GET", "/v1/ingest/status", "Bearer " + queryTok},
		{"GET", "/v1/ingest/status", "Bearer query-secret-2"},
		{"GET", "/metrics", "Bearer " + queryTok},
		// Open whatever the header says.
		{"GET", "/healthz", ""},
		{"GET", "/readyz", "Bearer wrong"},
		{"GET", "/openapi.json", ""},
		{"GET", "/docs", ""},
		{"GET", "/docs/swagger-ui-bundle.js", "Bearer wrong"},
		{"GET", "/docs/docs.js", ""},
		{"GET", "/dashboard/", ""},
		{"GET", "/dashboard/app.js", "Bearer wrong"},
	} {
		if a := call(t, app, tc.method, tc.path, tc.auth); a.status != 200 {
			t.Errorf("%s %s %q: %d %s", tc.method, tc.path, tc.auth, a.status, a.body)
		}
	}
	// One side guarded leaves the other open.
	app = authApp(AuthOptions{IngestTokens: []string{ingestTok}}, nil)
	if a := call(t, app, "GET", "/v1/ingest/status", ""); a.status != 200 {
		t.Errorf("query side without tokens: %d", a.status)
	}
	if a := call(t, app, "POST", "/v1/events", ""); a.status != 401 {
		t.Errorf("ingest side with tokens: %d", a.status)
	}
}

func TestRouteClass(t *testing.T) {
	for path, want := range map[string]routeKind{
		"/healthz": openRoute, "/readyz/": openRoute, "/docs": openRoute, "/openapi.json": openRoute,
		"/v1/events": ingestRoute, "/V1/EVENTS//": ingestRoute,
		"/metrics": queryRoute, "/v1/metrics": queryRoute, "/v1/ads/top": queryRoute, "/v1/benchmark/US/banner": queryRoute,
		"/v1/ingest/status": queryRoute, "/v1/cache/stats": queryRoute, "/v1/reconcile/status": queryRoute,
		"/docs/swagger-ui.css": openRoute, "/DOCS/Swagger-UI-Bundle.js": openRoute, "/docs/x/": openRoute,
		"/": openRoute, "": openRoute, "/dashboard": openRoute, "/Dashboard/app.js": openRoute, "/dashboard/vendor/uPlot.min.css": openRoute,
		"/dashboardx": queryRoute, "/v1/dashboard/": queryRoute, "/v1/events/x": queryRoute, "/healthz/x": queryRoute,
		"/docsx": queryRoute, "/v1/docs/x": queryRoute, "/openapi.json/x": queryRoute,
	} {
		if got := routeClass(path); got != want {
			t.Errorf("routeClass(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestIngestRateLimit(t *testing.T) {
	clock := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	var counts Refusals
	app := authApp(AuthOptions{IngestTokens: []string{ingestTok, "ingest-secret-2"}, QueryTokens: []string{queryTok}, IngestRate: 0.5, IngestBurst: 2, Hooks: &counts}, now)
	a, b := "Bearer "+ingestTok, "Bearer ingest-secret-2"
	for i := range 2 {
		if r := call(t, app, "POST", "/v1/events", a); r.status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, r.status, r.body)
		}
	}
	r := call(t, app, "POST", "/v1/events", a)
	var body map[string]string
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.status != 429 || r.header.Get("Retry-After") != "2" ||
		body["error"] == "" || body["field"] != "authorization" {
		t.Fatalf("over the burst: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	// Another token has its own bucket; queries are not limited.
	if r := call(t, app, "POST", "/v1/events", b); r.status != 200 {
		t.Errorf("second token: %d", r.status)
	}
	for range 3 {
		if r := call(t, app, "GET", "/v1/ingest/status", "Bearer "+queryTok); r.status != 200 {
			t.Errorf("query: %d", r.status)
		}
	}
	clock = clock.Add(1500 * time.Millisecond)
	if r := call(t, app, "POST", "/v1/events", a); r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Errorf("after 1.5 s: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	clock = clock.Add(500 * time.Millisecond)
	if r := call(t, app, "POST", "/v1/events", a); r.status != 200 {
		t.Errorf("after 2 s: %d %s", r.status, r.body)
	}
	if got := counts.Stats().RateLimited; got != 2 {
		t.Errorf("counted %d, want 2", got)
	}

	// Without ingest tokens the bucket is the client's address.
	app = authApp(AuthOptions{IngestRate: 1}, now)
	if r := call(t, app, "POST", "/v1/events", ""); r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	if r := call(t, app, "POST", "/v1/events", "Bearer anything"); r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Errorf("second from the same address: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
}

func TestKeyedLimiterBounded(t *testing.T) {
	clock := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	l := newKeyedLimiter(1, 1, func() time.Time { return clock })
	l.maxKeys = 100
	for i := range 1000 {
		if d := l.reserve(fmt.Sprint("k", i)); d != 0 {
			t.Fatalf("new key %d waits %v", i, d)
		}
	}
	if len(l.keys) > l.maxKeys {
		t.Fatalf("%d keys, at most %d", len(l.keys), l.maxKeys)
	}
	if d := l.reserve("k999"); d != time.Second {
		t.Errorf("key just used waits %v, want 1s", d)
	}
	// Buckets full again are dropped by the next sweep.
	clock = clock.Add(2 * time.Minute)
	l.reserve("fresh")
	if len(l.keys) != 1 {
		t.Errorf("%d keys after the sweep, want 1", len(l.keys))
	}
}

func TestMaxConcurrent(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var counts Refusals
	app := New(Options{
		Ingest: func(c *fiber.Ctx) error {
			entered <- struct{}{}
			<-release
			return c.JSON(fiber.Map{"accepted": 1})
		},
		IngestStatus: func() any { return fiber.Map{"ok": true} },
		Auth:         AuthOptions{MaxConcurrent: 1, Hooks: &counts},
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		if r := call(t, app, "POST", "/v1/events", ""); r.status != 200 {
			t.Errorf("first: %d %s", r.status, r.body)
		}
	})
	<-entered
	r := call(t, app, "GET", "/v1/ingest/status", "")
	if r.status != 503 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body, `"error"`) {
		t.Errorf("over MaxConcurrent: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if r := call(t, app, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("health while busy: %d", r.status)
	}
	close(release)
	wg.Wait()
	if r := call(t, app, "GET", "/v1/ingest/status", ""); r.status != 200 {
		t.Errorf("after the first finished: %d", r.status)
	}
	if got := counts.Stats().Busy; got != 1 {
		t.Errorf("counted %d, want 1", got)
	}
}

// TestBadParamCounted: range and n over their limits answer 400 naming the
// parameter, and each is counted.
func TestBadParamCounted(t *testing.T) {
	var counts Refusals
	app := New(Options{Metrics: docsNopMetrics{}, Direct: docsNopMetrics{}, MaxRange: time.Hour, MaxTopN: 10, Auth: AuthOptions{Hooks: &counts}})
	for _, tc := range []struct{ path, param string }{
		{"/v1/metrics?from=2026-11-22T10:00:00Z&to=2026-11-22T11:01:00Z", "from"},
		{"/v1/ads/top?n=11", "n"},
		{"/v1/benchmark/US/banner?n=11", "n"},
	} {
		r := call(t, app, "GET", tc.path, "")
		var body map[string]string
		if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.status != 400 || body["param"] != tc.param || body["error"] == "" {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.path, r.status, r.body, tc.param)
		}
	}
	if got := counts.Stats().BadParam; got != 3 {
		t.Errorf("counted %d, want 3", got)
	}
}

// TestAuthStreamedBody: over a real connection, an ingest refused before
// its streamed body is read gets its 401, not a reset, and the next request
// on the connection works.
func TestAuthStreamedBody(t *testing.T) {
	app := authApp(AuthOptions{IngestTokens: []string{ingestTok}}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	t.Cleanup(func() { app.Shutdown() })
	url := "http://" + ln.Addr().String() + "/v1/events"
	for _, tok := range []string{"wrong", ingestTok, "wrong", ingestTok} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(strings.Repeat(`{"event_id":"e1"}`+"\n", 1<<16)))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("token %s: %v", tok, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case tok == "wrong" && resp.StatusCode != 401:
			t.Errorf("wrong token: %d %s", resp.StatusCode, raw)
		case tok == ingestTok && (resp.StatusCode != 200 || string(raw) != fmt.Sprintf(`{"bytes":%d}`, req.ContentLength)):
			t.Errorf("right token: %d %s", resp.StatusCode, raw)
		}
	}
}

func TestAuthOptionsValidate(t *testing.T) {
	for _, o := range []AuthOptions{{IngestRate: -1}, {IngestRate: math.NaN()}, {IngestRate: math.Inf(1)}, {IngestBurst: -1}, {MaxConcurrent: -1}} {
		var ce *clickagg.ConfigError
		if err := o.Validate(); !errors.As(err, &ce) {
			t.Errorf("%+v: %v, want a ConfigError", o, err)
		}
	}
	if err := (AuthOptions{IngestRate: 2.5, MaxConcurrent: DefaultMaxConcurrent}).Validate(); err != nil {
		t.Error(err)
	}
}

// An open prefix does not open what a path climbs out of it to.
func TestAuthOpenPrefixes(t *testing.T) {
	app := authApp(AuthOptions{QueryTokens: []string{queryTok}}, nil)
	for _, path := range []string{"/dashboard/../v1/ingest/status", "/docs/../v1/ingest/status", "/dashboard/%2e%2e/v1/ingest/status", "/docs/..%2fv1/ingest/status"} {
		if a := call(t, app, "GET", path, ""); a.status == 200 {
			t.Errorf("GET %s without a token: %d %s", path, a.status, a.body)
		}
	}
}
