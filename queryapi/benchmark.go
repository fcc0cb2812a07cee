package queryapi

import (
	"context"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

// latency summarises one side of the benchmark.
type latency struct {
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	Mean float64 `json:"mean_ms"`
	// Samples is every run's latency, fastest first: the distribution the
	// dashboard draws.
	Samples []float64 `json:"samples_ms"`
}

func summarize(d []time.Duration) latency {
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d)) + 0.5)
		return ms(d[min(max(i-1, 0), len(d)-1)])
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	samples := make([]float64, len(d))
	for i, x := range d {
		samples[i] = ms(x)
	}
	return latency{P50: at(0.50), P95: at(0.95), P99: at(0.99), Mean: ms(sum / time.Duration(len(d))), Samples: samples}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchmark is GET /v1/benchmark/{country}/{ad_format}: the question of
// /v1/metrics/{country}/{ad_format} asked n times of ClickHouse directly
// and n times through the cache (after one call that fills it), in process,
// so the figures leave out HTTP.
func (a *api) benchmark(c *fiber.Ctx) error {
	q, err := a.oneQuery(c, "n")
	if err != nil {
		return err
	}
	p, _ := newParams(c, allowed([]string{"country", "ad_format"}, "n")...)
	n, err := p.intParam("n", 50, 1, a.o.MaxTopN)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	direct, err := timeCalls(ctx, a.o.Direct, q, n)
	if err != nil {
		return err
	}
	// Redis itself, not the cache's in-process copy.
	ctx = clickagg.WithoutLocalCache(ctx)
	if _, err := a.o.Metrics.Metrics(ctx, q); err != nil {
		return err
	}
	cached, err := timeCalls(ctx, a.o.Metrics, q, n)
	if err != nil {
		return err
	}
	hits := 0
	for _, c := range cached.cached {
		if c {
			hits++
		}
	}
	ch, rd := summarize(direct.d), summarize(cached.d)
	speedup := 0.0
	if rd.P50 > 0 {
		speedup = ch.P50 / rd.P50
	}
	return c.JSON(fiber.Map{
		"country": q.Filter.Countries[0], "ad_format": q.Filter.AdFormats[0],
		"from": q.Range.From, "to": q.Range.To, "samples": n,
		"clickhouse": ch, "redis": rd, "redis_hits": hits, "speedup_p50": speedup,
	})
}

type timings struct {
	d      []time.Duration
	cached []bool
}

func timeCalls(ctx context.Context, svc clickagg.MetricsService, q clickagg.MetricsQuery, n int) (timings, error) {
	t := timings{d: make([]time.Duration, n), cached: make([]bool, n)}
	for i := range n {
		start := time.Now()
		res, err := svc.Metrics(ctx, q)
		if err != nil {
			return t, err
		}
		t.d[i], t.cached[i] = time.Since(start), res.Cached
	}
	return t, nil
}
