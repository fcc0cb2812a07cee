package queryapi

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

var (
	timeParams   = []string{"window", "from", "to"}
	filterParams = []string{"country", "ad_format", "device", "campaign_id", "ad_id"}
)

// allowed lists the time and filter parameters less the ones a path fixes,
// plus extra ones.
func allowed(exceptFilters []string, extra ...string) []string {
	out := slices.Clone(timeParams)
	for _, f := range filterParams {
		if !slices.Contains(exceptFilters, f) {
			out = append(out, f)
		}
	}
	return append(out, extra...)
}

func without(all []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// countsJSON is Counts with the derived ratios, as every endpoint shows them.
type countsJSON struct {
	clickagg.Counts
	CTR  float64 `json:"ctr"`
	CVR  float64 `json:"cvr"`
	ECPM float64 `json:"ecpm"`
}

func withRatios(c clickagg.Counts) countsJSON {
	return countsJSON{Counts: c, CTR: c.CTR(), CVR: c.CVR(), ECPM: c.ECPM()}
}

type rangeJSON struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// svc is the service a request asks: the cache, or the store directly
// when the request says Cache-Control: no-cache (benchmarks, debugging).
func (a *api) svc(c *fiber.Ctx) clickagg.MetricsService {
	if a.o.Direct != nil && strings.Contains(c.Get(fiber.HeaderCacheControl), "no-cache") {
		return a.o.Direct
	}
	return a.o.Metrics
}

// query parses what every metrics endpoint shares.
func (a *api) query(c *fiber.Ctx, fixed []string, extra ...string) (*params, clickagg.Range, clickagg.Filter, error) {
	p, err := newParams(c, allowed(fixed, extra...)...)
	if err != nil {
		return nil, clickagg.Range{}, clickagg.Filter{}, err
	}
	r, err := p.timeRange(a.o.Now(), a.o.MaxRange)
	if err != nil {
		return nil, r, clickagg.Filter{}, err
	}
	f, err := p.filter(without(filterParams, fixed...)...)
	return p, r, f, err
}

// metricsOne is GET /v1/metrics/{country}/{ad_format}.
func (a *api) metricsOne(c *fiber.Ctx) error {
	q, err := a.oneQuery(c)
	if err != nil {
		return err
	}
	res, err := a.svc(c).Metrics(c.UserContext(), q)
	if err != nil {
		return err
	}
	var counts clickagg.Counts
	if len(res.Rows) > 0 {
		counts = res.Rows[0].Counts
	}
	return c.JSON(struct {
		Country  string `json:"country"`
		AdFormat string `json:"ad_format"`
		rangeJSON
		countsJSON
		Cached bool                 `json:"cached"`
		Plan   []clickagg.PlanPiece `json:"plan,omitempty"`
	}{q.Filter.Countries[0], q.Filter.AdFormats[0], rangeJSON{q.Range.From, q.Range.To}, withRatios(counts), res.Cached, res.Plan})
}

// oneQuery is the question of GET /v1/metrics/{country}/{ad_format}, shared
// with the benchmark endpoint.
func (a *api) oneQuery(c *fiber.Ctx, extra ...string) (clickagg.MetricsQuery, error) {
	country, err := pathValue(c, "country")
	if err != nil {
		return clickagg.MetricsQuery{}, err
	}
	format, err := pathValue(c, "ad_format")
	if err != nil {
		return clickagg.MetricsQuery{}, err
	}
	_, r, f, err := a.query(c, []string{"country", "ad_format"}, extra...)
	if err != nil {
		return clickagg.MetricsQuery{}, err
	}
	f.Countries, f.AdFormats = []string{country}, []string{format}
	return clickagg.MetricsQuery{Range: r, Filter: f}, nil
}

// metricsGrouped is GET /v1/metrics?group_by=...
func (a *api) metricsGrouped(c *fiber.Ctx) error {
	p, r, f, err := a.query(c, nil, "group_by")
	if err != nil {
		return err
	}
	dims, err := p.groupBy()
	if err != nil {
		return err
	}
	res, err := a.svc(c).Metrics(c.UserContext(), clickagg.MetricsQuery{Range: r, Filter: f, GroupBy: dims})
	if err != nil {
		return err
	}
	rows := make([]map[string]any, len(res.Rows))
	for i, row := range res.Rows {
		m := map[string]any{
			"impressions": row.Impressions, "clicks": row.Clicks, "conversions": row.Conversions,
			"spend_micros": row.SpendMicros, "ctr": row.CTR(), "cvr": row.CVR(), "ecpm": row.ECPM(),
		}
		for d, v := range row.Dims {
			m[string(d)] = v
		}
		rows[i] = m
	}
	if dims == nil {
		dims = []clickagg.Dimension{}
	}
	return c.JSON(withPlan(fiber.Map{"from": r.From, "to": r.To, "group_by": dims, "rows": rows, "cached": res.Cached}, res.Plan))
}

var granularities = map[string]time.Duration{"1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour}

// maxPoints bounds the buckets of one series.
const maxPoints = 7 * 24 * 60

// series is GET /v1/ads/{ad_id}/series.
func (a *api) series(c *fiber.Ctx) error {
	ad, err := pathValue(c, "ad_id")
	if err != nil {
		return err
	}
	p, r, f, err := a.query(c, []string{"ad_id"}, "granularity")
	if err != nil {
		return err
	}
	g, err := p.choice("granularity", "1m", "1m", "1h", "1d")
	if err != nil {
		return err
	}
	step := granularities[g]
	if n := r.To.Sub(r.From.Truncate(step)) / step; n > maxPoints {
		return paramErr("granularity", "%d points; at most %d, use a coarser granularity", n, maxPoints)
	}
	res, err := a.svc(c).Series(c.UserContext(), clickagg.SeriesQuery{AdID: ad, Range: r, Filter: f, Granularity: step})
	if err != nil {
		return err
	}
	type point struct {
		Time time.Time `json:"time"`
		countsJSON
	}
	points := make([]point, len(res.Points))
	for i, pt := range res.Points {
		points[i] = point{pt.Time, withRatios(pt.Counts)}
	}
	return c.JSON(withPlan(fiber.Map{"ad_id": ad, "granularity": g, "from": r.From, "to": r.To, "points": points, "cached": res.Cached}, res.Plan))
}

// top is GET /v1/ads/top.
func (a *api) top(c *fiber.Ctx) error {
	p, r, f, err := a.query(c, nil, "n", "metric", "mode")
	if err != nil {
		return err
	}
	n, err := p.intParam("n", 100, 1, a.o.MaxTopN)
	if err != nil {
		return err
	}
	metric, err := p.choice("metric", "clicks", "clicks", "impressions", "conversions", "spend_micros")
	if err != nil {
		return err
	}
	mode, err := p.choice("mode", "exact", "exact", "approx")
	if err != nil {
		return err
	}
	res, err := a.svc(c).TopAds(c.UserContext(), clickagg.TopQuery{Range: r, Filter: f, N: n, Metric: clickagg.Metric(metric), Approx: mode == "approx"})
	if err != nil {
		return err
	}
	type ranked struct {
		Rank int    `json:"rank"`
		AdID string `json:"ad_id"`
		countsJSON
	}
	ads := make([]ranked, len(res.Ads))
	for i, ad := range res.Ads {
		ads[i] = ranked{i + 1, ad.AdID, withRatios(ad.Counts)}
	}
	return c.JSON(withPlan(fiber.Map{"from": r.From, "to": r.To, "metric": metric, "mode": mode, "sketches": res.Sketches, "n": n, "ads": ads, "cached": res.Cached}, res.Plan))
}

// errorStatus maps errors to answers: a ParamError is the caller's 400, a
// ServiceError and Fiber's own errors have their status, a timed-out
// question is 503; 0 for anything else (500).
func errorStatus(err error) (int, fiber.Map) {
	var pe *clickagg.ParamError
	var se *clickagg.ServiceError
	var fe *fiber.Error
	switch {
	case errors.As(err, &pe):
		return fiber.StatusBadRequest, fiber.Map{"error": pe.Message, "param": pe.Param}
	case errors.As(err, &se):
		return se.Status, fiber.Map{"error": se.Message}
	case errors.Is(err, context.DeadlineExceeded):
		return fiber.StatusServiceUnavailable, fiber.Map{"error": "query timed out"}
	case errors.As(err, &fe):
		// Fiber's and fasthttp's own: 404, 405, 413, their texts.
		return fe.Code, fiber.Map{"error": fe.Message}
	}
	return 0, nil
}

// withPlan adds the plan ClickHouse's answer came with, if any.
func withPlan(m fiber.Map, plan []clickagg.PlanPiece) fiber.Map {
	if len(plan) > 0 {
		m["plan"] = plan
	}
	return m
}
