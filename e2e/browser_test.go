package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/server"
)

// The console's tests drive Debian's chromium through chromedp against a
// real server with generated traffic. CLICKAGG_SCREENSHOTS=DIR also saves
// the pages as PNG there (make screenshots).

// browser is one headless chromium with a fresh profile, and what its pages
// logged as errors.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
	// allowed, when it returns true, excuses a logged error (a 401 the
	// page is meant to meet).
	allowed func(string) bool
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	chrome := testenv.Chromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, allowed: func(string) bool { return false }}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level != log.EntryLevelError && ev.Entry.Level != log.EntryLevelWarning {
				return
			}
			msg = "log " + string(ev.Entry.Source) + ": " + ev.Entry.Text + " " + ev.Entry.URL
		default:
			return
		}
		b.mu.Lock()
		b.problems = append(b.problems, msg)
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(b.checkProblems)
	return b
}

// checkProblems fails the test on any console error, exception, CSP
// violation or failed load the pages logged.
func (b *browser) checkProblems() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		if !b.allowed(p) {
			b.t.Errorf("browser: %s", p)
		}
	}
}

// stepTimeout bounds one step, so that a missing element fails the test
// with the page's state rather than at the browser's deadline.
const stepTimeout = time.Minute

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// fail ends the test with what the page shows.
func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	b.t.Fatalf("%s: %v\npage: %s", what, err, text)
}

// refreshes is how many times the dashboard has drawn every panel.
func (b *browser) refreshes() int {
	b.t.Helper()
	return run(b, "refreshes", chromedp.Evaluate[int](`+(document.body.dataset.refreshes || 0)`))
}

// waitDrawn waits until the dashboard has drawn every panel after the
// refresh count after.
func (b *browser) waitDrawn(after int) {
	b.t.Helper()
	run(b, "wait for the panels", chromedp.Poll[chromedp.Void](
		fmt.Sprintf(`document.body.dataset.state === "ready" && +document.body.dataset.refreshes > %d`, after),
		chromedp.WithPollingTimeout(time.Minute)))
}

func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	r := run(b, "read "+sel, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if !r.Exists {
		b.t.Fatalf("%s has no %s", sel, name)
	}
	return r.Value
}

// change sets a control of the dashboard as a person would: a value, then
// the change event.
func (b *browser) change(sel, value string) {
	b.t.Helper()
	b.do("set "+sel, chromedp.WaitReady(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), value),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).dispatchEvent(new Event("change"))`, sel)))
}

// screenshot saves the whole page, or what the window shows when !full,
// under CLICKAGG_SCREENSHOTS, when set.
func (b *browser) screenshot(name string, full bool) {
	b.t.Helper()
	dir := os.Getenv("CLICKAGG_SCREENSHOTS")
	if dir == "" {
		return
	}
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png := run(b, "screenshot", shot)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// getJSON asks the API itself, for the expectations.
func getJSON(t *testing.T, base, path, token string, q url.Values) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %v", path, resp.StatusCode, v, err)
	}
	return v
}

// consoleStack is a server generating live traffic (no late events, so the
// past stays fixed) over one past hour of loaded traffic the pages read.
func consoleStack(t *testing.T, queryToken string) (s *stack, from, to time.Time) {
	t.Helper()
	s = &stack{t: t, db: testenv.Migrated(t), redisAddr: testenv.Redis(t).Addr()}
	s.tune = func(c *server.Config) {
		c.Generate.Load.Rate = 200
		c.Generate.Source.LateShare = -1
		if queryToken != "" {
			c.Auth.QueryTokens = []string{queryToken}
		}
	}
	s.start()
	t.Cleanup(func() { s.stop() })
	from = time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	to = from.Add(time.Hour)
	src := generator.New(generator.Options{Seed: 17, Ads: 300, Start: from, Rate: 6,
		LateShare: -1, DuplicateShare: -1, BadShare: -1})
	const events, batch = 18000, 2000
	for sent := 0; sent < events; sent += batch {
		lines := make([][]byte, batch)
		for i := range lines {
			lines[i] = src.AppendNext(nil)
		}
		if a := s.post(lines); a.Accepted != batch {
			t.Fatalf("loaded %d of %d: %+v", a.Accepted, batch, a)
		}
	}
	return s, from, to
}

// TestBrowserDashboard drives the dashboard in chromium: every panel's
// numbers equal the API's for the same range and filters, filters change
// every panel and the URL, an ad opens its series, the cache panel shows
// both latencies, and nothing is logged as an error (CSP included).
func TestBrowserDashboard(t *testing.T) {
	s, from, to := consoleStack(t, "")
	b := newBrowser(t)
	rng := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	b.do("open the dashboard", chromedp.Navigate(s.url+"/dashboard/?"+rng.Encode()))
	b.waitDrawn(0)

	checkPanels := func(filters url.Values) {
		t.Helper()
		q := url.Values{}
		for k, v := range rng {
			q[k] = v
		}
		for k, v := range filters {
			q[k] = v
		}
		want := getJSON(t, s.url, "/v1/metrics", "", q)["rows"].([]any)[0].(map[string]any)
		for _, m := range []string{"impressions", "clicks", "conversions", "spend_micros"} {
			card := map[string]string{"spend_micros": "spend"}[m]
			if card == "" {
				card = m
			}
			if got := b.attr("#h-"+card, "data-raw"); got != strconv.FormatFloat(want[m].(float64), 'f', -1, 64) {
				t.Errorf("%v: headline %s = %s, API %v", filters, m, got, want[m])
			}
		}
		if got, want := b.attr("#series-chart", "data-total"), strconv.FormatFloat(want["clicks"].(float64), 'f', -1, 64); got != want {
			t.Errorf("%v: the per-minute series sums to %s clicks, the API's total is %s", filters, got, want)
		}
		tq := url.Values{"n": {"20"}, "metric": {"clicks"}, "mode": {"exact"}}
		for k, v := range q {
			tq[k] = v
		}
		var wantAds []string
		for _, a := range getJSON(t, s.url, "/v1/ads/top", "", tq)["ads"].([]any) {
			wantAds = append(wantAds, a.(map[string]any)["ad_id"].(string))
		}
		gotAds := run(b, "top table", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#top tbody tr")].map(r => r.dataset.ad)`))
		if !slices.Equal(gotAds, wantAds) || len(wantAds) == 0 {
			t.Errorf("%v: top ads on the page %v, API %v", filters, gotAds, wantAds)
		}
	}
	checkPanels(nil)
	b.screenshot("dashboard", true)

	// A filter: every panel and the URL follow.
	before := b.refreshes()
	b.do("wait for the countries", chromedp.WaitReady(chromedp.CSS(`#f-country option[value="US"]`)))
	b.change("#f-country", "US")
	b.waitDrawn(before)
	if loc := run(b, "location", chromedp.Location()); !strings.Contains(loc, "country=US") {
		t.Errorf("the URL does not keep the filter: %s", loc)
	}
	checkPanels(url.Values{"country": {"US"}})

	// An ad opens its series, with the filters applied.
	before = b.refreshes()
	ad := b.attr("#top tbody tr:first-child", "data-ad")
	b.do("pick an ad", chromedp.Click(chromedp.CSS("#top tbody tr:first-child")))
	b.waitDrawn(before)
	if got := b.attr("#ad-chart", "data-ad"); got != ad {
		t.Errorf("ad chart shows %q, picked %q", got, ad)
	}
	if loc := run(b, "location", chromedp.Location()); !strings.Contains(loc, "ad="+ad) {
		t.Errorf("the URL does not keep the ad: %s", loc)
	}
	sq := url.Values{"country": {"US"}, "granularity": {"1m"}}
	for k, v := range rng {
		sq[k] = v
	}
	total := 0.0
	for _, p := range getJSON(t, s.url, "/v1/ads/"+ad+"/series", "", sq)["points"].([]any) {
		total += p.(map[string]any)["clicks"].(float64)
	}
	if got := b.attr("#ad-chart", "data-total"); got != strconv.FormatFloat(total, 'f', -1, 64) || total == 0 {
		t.Errorf("ad %s: the page's series sums to %s clicks, the API's to %v", ad, got, total)
	}
	b.screenshot("dashboard-ad", true)

	// The cache panel: both ways timed, drawn with their distribution.
	b.do("run the benchmark", chromedp.Click(chromedp.ID("bench-run")),
		chromedp.WaitReady(chromedp.CSS(`#cache-panel[data-ran="true"]`)))
	for _, way := range []string{"clickhouse", "redis"} {
		p50, err := strconv.ParseFloat(b.attr(`#bench-table tr[data-way="`+way+`"]`, "data-p50"), 64)
		if err != nil || p50 <= 0 {
			t.Errorf("benchmark %s p50 = %v (%v)", way, p50, err)
		}
	}
	if n := run(b, "distribution", chromedp.Evaluate[int](`document.querySelectorAll("#bench-chart canvas").length`)); n == 0 {
		t.Error("the latency distribution is not drawn")
	}

	// Ingest health: the live generator's counters, rejections by reason.
	st := getJSON(t, s.url, "/v1/ingest/status", "", nil)["collector"].(map[string]any)
	waitFor(t, time.Minute, "the generator's malformed events", func() bool {
		st = getJSON(t, s.url, "/v1/ingest/status", "", nil)["collector"].(map[string]any)
		return st["rejected"].(float64) > 0
	})
	before = b.refreshes()
	b.waitDrawn(before)
	accepted, _ := strconv.ParseFloat(b.attr("#ingest-facts", "data-accepted"), 64)
	if accepted < st["accepted"].(float64) {
		t.Errorf("ingest panel: %v accepted, the API said %v before", accepted, st["accepted"])
	}
	if n := run(b, "rejections", chromedp.Evaluate[int](`document.querySelectorAll("#rejected tbody tr[data-reason]").length`)); n == 0 {
		t.Error("ingest panel: no rejection reason shown")
	}
	b.screenshot("dashboard-cache", true)
}

// TestBrowserTokens: with query tokens on, the dashboard asks for one and
// then works, and /docs' "Try it out" answers 200 with it.
func TestBrowserTokens(t *testing.T) {
	const token = "browser-test-token"
	s, from, to := consoleStack(t, token)
	b := newBrowser(t)
	// The page meets the 401 it is there to handle.
	b.allowed = func(p string) bool { return strings.Contains(p, "401") }
	rng := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	b.do("open the dashboard", chromedp.Navigate(s.url+"/dashboard/?"+rng.Encode()),
		chromedp.WaitVisible(chromedp.ID("token-input")))
	b.do("give the token", chromedp.SendKeys(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitDrawn(0)
	q := url.Values{}
	for k, v := range rng {
		q[k] = v
	}
	want := getJSON(t, s.url, "/v1/metrics", token, q)["rows"].([]any)[0].(map[string]any)["clicks"].(float64)
	if got := b.attr("#h-clicks", "data-raw"); got != strconv.FormatFloat(want, 'f', -1, 64) || want == 0 {
		t.Errorf("with a token: headline clicks %s, API %v", got, want)
	}
	tryItOut(t, b, s.url, token)
}

// TestBrowserDocs: Swagger UI at /docs renders the document and "Try it
// out" gets a 200 from /v1/metrics/{country}/{ad_format}.
func TestBrowserDocs(t *testing.T) {
	s, _, _ := consoleStack(t, "")
	b := newBrowser(t)
	tryItOut(t, b, s.url, "")
	b.do("scroll", chromedp.Evaluate[chromedp.Void](`document.querySelector("#operations-metrics-metricsByCountryFormat").scrollIntoView()`))
	b.screenshot("docs", false)
}

// tryItOut opens /docs, authorizes with token when given, and runs the
// one-cell question from its "Try it out" form.
func tryItOut(t *testing.T, b *browser, base, token string) {
	t.Helper()
	const op = "#operations-metrics-metricsByCountryFormat"
	b.do("open the docs", chromedp.Navigate(base+"/docs"), chromedp.WaitVisible(chromedp.CSS(op)))
	if token != "" {
		b.do("authorize", chromedp.Click(chromedp.CSS(".auth-wrapper .authorize")),
			chromedp.WaitVisible(chromedp.CSS(".auth-container input")),
			chromedp.SendKeys(chromedp.CSS(".auth-container input"), token),
			chromedp.Click(chromedp.CSS(".auth-btn-wrapper .authorize")),
			chromedp.Click(chromedp.CSS(".auth-btn-wrapper .btn-done")))
	}
	// The page opens operations ready to try (tryItOutEnabled): no button,
	// and the path's example (US) and the format's first value (banner) in
	// the form.
	b.do("try it out", chromedp.Click(chromedp.CSS(op+" .opblock-summary")),
		chromedp.WaitVisible(chromedp.CSS(op+` tr[data-param-name="country"] input`)))
	if v := run(b, "country", chromedp.Value(chromedp.CSS(op+` tr[data-param-name="country"] input`))); v != "US" {
		t.Fatalf("the form's country is %q, want the example US", v)
	}
	b.do("execute", chromedp.Click(chromedp.CSS(op+" .execute")),
		chromedp.WaitVisible(chromedp.CSS(op+" .live-responses-table tbody .response-col_status")))
	status := run(b, "status", chromedp.Text(chromedp.CSS(op+" .live-responses-table tbody .response-col_status")))
	if !strings.HasPrefix(strings.TrimSpace(status), "200") {
		body := run(b, "body", chromedp.Text(chromedp.CSS(op+" .live-responses-table")))
		t.Errorf("Try it out answered %q: %s", status, body)
	}
}
