package clickagg

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MetricsService answers metric questions. The ClickHouse store implements
// it over the aggregate tables; the Redis cache wraps another one.
type MetricsService interface {
	Metrics(ctx context.Context, q MetricsQuery) (*MetricsResult, error)
	Series(ctx context.Context, q SeriesQuery) (*SeriesResult, error)
	TopAds(ctx context.Context, q TopQuery) (*TopResult, error)
}

// Dimension is what metrics can be grouped by.
type Dimension string

// Dimensions. Minute, hour and day bucket the event time (UTC).
const (
	DimCountry  Dimension = "country"
	DimAdFormat Dimension = "ad_format"
	DimDevice   Dimension = "device"
	DimCampaign Dimension = "campaign_id"
	DimAd       Dimension = "ad_id"
	DimMinute   Dimension = "minute"
	DimHour     Dimension = "hour"
	DimDay      Dimension = "day"
)

// Dimensions lists every Dimension in canonical order.
func Dimensions() []Dimension {
	return []Dimension{DimCountry, DimAdFormat, DimDevice, DimCampaign, DimAd, DimMinute, DimHour, DimDay}
}

// Metric is a count that ads can be ranked by.
type Metric string

// Metrics.
const (
	MetricImpressions Metric = "impressions"
	MetricClicks      Metric = "clicks"
	MetricConversions Metric = "conversions"
	MetricSpend       Metric = "spend_micros"
)

// Range is a half-open span of whole minutes [From, To), in UTC.
type Range struct {
	From time.Time
	To   time.Time
}

// Filter keeps the events that match every non-empty list (values of one
// list are alternatives).
type Filter struct {
	Countries   []string
	AdFormats   []string
	Devices     []string
	CampaignIDs []string
	AdIDs       []string
}

// Normalized returns f with every list sorted and without repeats, so that
// equal filters have equal keys.
func (f Filter) Normalized() Filter {
	norm := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		s = slices.Clone(s)
		slices.Sort(s)
		return slices.Compact(s)
	}
	return Filter{norm(f.Countries), norm(f.AdFormats), norm(f.Devices), norm(f.CampaignIDs), norm(f.AdIDs)}
}

// MetricsQuery asks for counts over a range, optionally grouped.
type MetricsQuery struct {
	Range   Range
	Filter  Filter
	GroupBy []Dimension // empty: a single total row
}

// SeriesQuery asks for one ad's counts per time bucket.
type SeriesQuery struct {
	AdID        string
	Range       Range
	Filter      Filter
	Granularity time.Duration // time.Minute, time.Hour or 24 * time.Hour
}

// TopQuery asks for the N ads with the highest Metric.
type TopQuery struct {
	Range  Range
	Filter Filter
	N      int
	Metric Metric
	Approx bool // rank from the topK sketch instead of exact sums
}

// Counts are the additive measures of a set of events.
type Counts struct {
	Impressions int64 `json:"impressions"`
	Clicks      int64 `json:"clicks"`
	Conversions int64 `json:"conversions"`
	SpendMicros int64 `json:"spend_micros"`
}

// CTR is clicks per impression, 0 without impressions.
func (c Counts) CTR() float64 { return ratio(c.Clicks, c.Impressions) }

// CVR is conversions per click, 0 without clicks.
func (c Counts) CVR() float64 { return ratio(c.Conversions, c.Clicks) }

// ECPM is the spend per thousand impressions in currency units, 0 without
// impressions.
func (c Counts) ECPM() float64 { return ratio(c.SpendMicros, c.Impressions) / 1e6 * 1000 }

// Get returns the value of m.
func (c Counts) Get(m Metric) int64 {
	switch m {
	case MetricImpressions:
		return c.Impressions
	case MetricClicks:
		return c.Clicks
	case MetricConversions:
		return c.Conversions
	case MetricSpend:
		return c.SpendMicros
	}
	return 0
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// MetricsRow is one group of a MetricsResult: the values of the grouped
// dimensions (times as RFC 3339) and the counts.
type MetricsRow struct {
	Dims map[Dimension]string `json:"dims,omitempty"`
	Counts
}

// MetricsResult answers a MetricsQuery. Cached says the answer came from the
// cache rather than from ClickHouse.
type MetricsResult struct {
	Range  Range        `json:"range"`
	Rows   []MetricsRow `json:"rows"`
	Plan   []PlanPiece  `json:"plan,omitempty"`
	Cached bool         `json:"-"`
}

// PlanPiece is one table read to answer a question, over [From, To): the
// pieces of a plan cover the question's range once.
type PlanPiece struct {
	Table string    `json:"table"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
}

// SeriesPoint is one bucket of a series.
type SeriesPoint struct {
	Time time.Time `json:"time"`
	Counts
}

// SeriesResult answers a SeriesQuery, one point per bucket, gaps as zeros.
type SeriesResult struct {
	Range  Range         `json:"range"`
	Points []SeriesPoint `json:"points"`
	Plan   []PlanPiece   `json:"plan,omitempty"`
	Cached bool          `json:"-"`
}

// TopAd is one ranked ad.
type TopAd struct {
	AdID string `json:"ad_id"`
	Counts
}

// TopResult answers a TopQuery, best first, ties broken by ad id.
type TopResult struct {
	Range Range       `json:"range"`
	Ads   []TopAd     `json:"ads"`
	Plan  []PlanPiece `json:"plan,omitempty"`
	// Sketches: the candidates came from the topK sketches (approx, where
	// the server keeps them and they cover the range); else every ad was
	// ranked exactly.
	Sketches bool `json:"sketches"`
	Cached   bool `json:"-"`
}

// Key is a canonical text of the query for cache keys: equal questions have
// equal keys.
func (q MetricsQuery) Key() string {
	b := keyStart("metrics", q.Range, q.Filter)
	b.WriteString("|g=")
	for i, d := range q.GroupBy {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(d))
	}
	return b.String()
}

// Key is a canonical text of the query for cache keys.
func (q SeriesQuery) Key() string {
	b := keyStart("series", q.Range, q.Filter)
	b.WriteString("|ad=" + strconv.Quote(q.AdID) + "|gran=" + q.Granularity.String())
	return b.String()
}

// Key is a canonical text of the query for cache keys.
func (q TopQuery) Key() string {
	b := keyStart("top", q.Range, q.Filter)
	b.WriteString("|n=" + strconv.Itoa(q.N) + "|m=" + string(q.Metric) + "|approx=" + strconv.FormatBool(q.Approx))
	return b.String()
}

func keyStart(kind string, r Range, f Filter) *strings.Builder {
	var b strings.Builder
	b.WriteString(kind)
	b.WriteString("|" + strconv.FormatInt(r.From.Unix(), 10) + "-" + strconv.FormatInt(r.To.Unix(), 10))
	f = f.Normalized()
	for _, l := range []struct {
		name string
		vals []string
	}{{"country", f.Countries}, {"ad_format", f.AdFormats}, {"device", f.Devices}, {"campaign_id", f.CampaignIDs}, {"ad_id", f.AdIDs}} {
		if len(l.vals) == 0 {
			continue
		}
		b.WriteString("|" + l.name + "=")
		for i, v := range l.vals {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(v)) // quoting keeps "a,b" apart from "a","b"
		}
	}
	return &b
}

// ParamError is a question that cannot be answered as asked; the API
// answers it with 400 naming the parameter.
type ParamError struct {
	Param   string `json:"param"`
	Message string `json:"error"`
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Message }

type localCacheKey struct{}

// WithoutLocalCache asks a caching MetricsService to answer from its shared
// store (Redis) even when it keeps a copy in process: the benchmark route
// measures Redis against ClickHouse, as the seeds did.
func WithoutLocalCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, localCacheKey{}, true)
}

// LocalCacheAllowed reports whether ctx permits in-process cached answers.
func LocalCacheAllowed(ctx context.Context) bool { return ctx.Value(localCacheKey{}) == nil }
