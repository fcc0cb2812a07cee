// Command querybench measures the query API over HTTP: endpoints 1, 2 and 4
// cached and uncached, and the same question answered from raw events and
// from the aggregates straight in ClickHouse (the push-down ratio). With
// --load it first posts a deterministic generated data set to the collector.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/clickagg/clickagg/generator"
)

func main() {
	var (
		target   = flag.String("target", "http://127.0.0.1:8080", "clickagg API base URL")
		chHTTP   = flag.String("clickhouse-http", "http://127.0.0.1:8123", "ClickHouse HTTP URL, for the raw-events comparison")
		database = flag.String("database", "clickagg", "ClickHouse database")
		load     = flag.Int("load", 0, "events to post to the collector first (0: use what is there)")
		span     = flag.Duration("span", 24*time.Hour, "event-time span of loaded events, ending now")
		seed     = flag.Uint64("seed", 1, "generator seed")
		ads      = flag.Int("ads", 10000, "distinct ads of the loaded events")
		n        = flag.Int("n", 200, "requests per case")
		windows  = flag.String("windows", "24h,7d", "windows to measure")
		only     = flag.String("only", "", "measure only this: api or pushdown")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *load > 0 {
		if err := loadEvents(ctx, *target, *load, *span, *seed, *ads); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("| case | window | cache | p50 ms | p95 ms | p99 ms | mean ms | answered from cache |\n|---|---|---|---|---|---|---|---|\n")
	hot, err := hottestAd(ctx, *target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hottest ad:", err)
		os.Exit(1)
	}
	for _, w := range strings.Split(*windows, ",") {
		cases := []struct{ name, path string }{
			{"1 metrics/US/banner", "/v1/metrics/US/banner?window=" + w},
			{"2 metrics group_by=country,ad_format", "/v1/metrics?group_by=country,ad_format&window=" + w},
			{"4 ads/top n=100 clicks", "/v1/ads/top?n=100&metric=clicks&window=" + w},
			{"4 ads/top n=100 clicks approx", "/v1/ads/top?n=100&metric=clicks&mode=approx&window=" + w},
			{"5 ads/{hot ad}/series granularity=1m", "/v1/ads/" + url.PathEscape(hot) + "/series?granularity=1m&window=" + w},
		}
		if *only == "pushdown" {
			cases = nil
		}
		for _, c := range cases {
			for _, cached := range []bool{false, true} {
				h, hits, err := timeAPI(ctx, *target+c.path, *n, cached)
				if err != nil {
					fmt.Fprintln(os.Stderr, c.path, err)
					os.Exit(1)
				}
				mode := "uncached"
				if cached {
					mode = "cached"
				}
				fmt.Printf("| %s | %s | %s | %s | %d/%d |\n", c.name, w, mode, row(h), hits, *n)
			}
		}
		if *only == "api" {
			continue
		}
		raw, agg, err := pushDown(ctx, *chHTTP, *database, w, *n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "push-down:", err)
			os.Exit(1)
		}
		fmt.Printf("| SQL: endpoint 1 from raw `events` | %s | - | %s | - |\n", w, row(raw))
		fmt.Printf("| SQL: endpoint 1 from `dim_stats_minute` (what the API reads) | %s | - | %s | - |\n", w, row(agg))
		fmt.Printf("| push-down ratio (raw p50 / aggregate p50) | %s | - | %.1fx | | | | |\n", w,
			float64(raw.ValueAtQuantile(50))/float64(max(agg.ValueAtQuantile(50), 1)))
	}
}

// hottestAd is the ad with the most impressions over the last 24 h.
func hottestAd(ctx context.Context, target string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target+"/v1/ads/top?n=1&metric=impressions&window=24h", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Ads []struct {
			AdID string `json:"ad_id"`
		} `json:"ads"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Ads) == 0 {
		return "", fmt.Errorf("no top ad (status %d, %v)", resp.StatusCode, err)
	}
	return body.Ads[0].AdID, nil
}

func row(h *hdrhistogram.Histogram) string {
	ms := func(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }
	return fmt.Sprintf("%s | %s | %s | %s", ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(95)), ms(h.ValueAtQuantile(99)), ms(int64(h.Mean())))
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// timeAPI sends n sequential GETs and records their latency in µs.
func timeAPI(ctx context.Context, u string, n int, cached bool) (*hdrhistogram.Histogram, int, error) {
	h := newHist()
	hits := 0
	do := func() (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if !cached {
			req.Header.Set("Cache-Control", "no-cache")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var body struct {
			Cached bool   `json:"cached"`
			Error  string `json:"error"`
		}
		raw, _ := io.ReadAll(resp.Body)
		json.Unmarshal(raw, &body)
		if resp.StatusCode != 200 {
			return false, fmt.Errorf("status %d: %s", resp.StatusCode, body.Error)
		}
		return body.Cached, nil
	}
	if _, err := do(); err != nil { // warm: connections, caches, marks
		return nil, 0, err
	}
	for range n {
		start := time.Now()
		c, err := do()
		if err != nil {
			return nil, 0, err
		}
		h.RecordValue(time.Since(start).Microseconds())
		if c {
			hits++
		}
	}
	return h, hits, nil
}

// pushDown times endpoint 1's question straight in ClickHouse, over raw
// events and over the filter cube the API reads for it.
func pushDown(ctx context.Context, chURL, db, window string, n int) (raw, agg *hdrhistogram.Histogram, err error) {
	d, err := time.ParseDuration(strings.Replace(window, "d", "h", 1))
	if err != nil {
		return nil, nil, err
	}
	if strings.HasSuffix(window, "d") {
		d *= 24
	}
	secs := int64(d / time.Second)
	queries := []string{
		fmt.Sprintf("SELECT countIf(type = 'impression'), countIf(type = 'click'), countIf(type = 'conversion'), sum(price_micros) FROM events "+
			"WHERE ts >= toStartOfMinute(now()) - %d + 60 AND country = 'US' AND ad_format = 'banner'", secs),
		fmt.Sprintf("SELECT sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM dim_stats_minute "+
			"WHERE minute >= toStartOfMinute(now()) - %d + 60 AND country = 'US' AND ad_format = 'banner'", secs),
	}
	hs := []*hdrhistogram.Histogram{newHist(), newHist()}
	for i, q := range queries {
		u := chURL + "/?database=" + url.QueryEscape(db)
		for j := 0; j <= n/4; j++ { // raw scans are slow: a quarter of the samples
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(q))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, nil, err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return nil, nil, fmt.Errorf("clickhouse: %s", body)
			}
			if j > 0 {
				hs[i].RecordValue(time.Since(start).Microseconds())
			}
		}
	}
	return hs[0], hs[1], nil
}

// loadEvents posts count generated events whose times spread over span.
func loadEvents(ctx context.Context, target string, count int, span time.Duration, seed uint64, ads int) error {
	rate := max(int(float64(count)/span.Seconds()), 1)
	src := generator.New(generator.Options{Seed: seed, Ads: ads, Start: time.Now().Add(-span), Rate: rate, DuplicateShare: -1, LateShare: -1, BadShare: -1})
	const batch = 5000
	bodies := make(chan []byte, 16)
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range bodies {
				for {
					resp, err := http.Post(target+"/v1/events", "application/x-ndjson", bytes.NewReader(b))
					if err != nil {
						failed.Add(1)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusServiceUnavailable {
						time.Sleep(time.Second)
						continue
					}
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
					break
				}
				sent.Add(int64(bytes.Count(b, []byte{'\n'})))
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var line []byte
	for i := 0; i < count && ctx.Err() == nil; i += batch {
		var b []byte
		for range min(batch, count-i) {
			line = src.AppendNext(line[:0])
			b = append(append(b, line...), '\n')
		}
		select {
		case bodies <- b:
		case <-tick.C:
			bodies <- b
			fmt.Fprintf(os.Stderr, "loaded %d events, %.0f/s\n", sent.Load(), float64(sent.Load())/time.Since(start).Seconds())
		}
	}
	close(bodies)
	wg.Wait()
	fmt.Fprintf(os.Stderr, "loaded %d events in %s (%.0f/s), %d failed requests\n", sent.Load(), time.Since(start).Round(time.Millisecond), float64(sent.Load())/time.Since(start).Seconds(), failed.Load())
	if failed.Load() > 0 {
		return fmt.Errorf("%d requests failed", failed.Load())
	}
	return ctx.Err()
}
