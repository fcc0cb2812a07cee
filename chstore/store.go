// Package chstore answers metric questions from ClickHouse's aggregate
// tables. Every sum, group and ranking is computed by ClickHouse (push-down);
// Go only fills empty buckets of a series with zeros.
package chstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
)

// TopKCapacity is the parameter of the top_ads_minute sketch: approximate
// top-N ranks among at most this many candidate ads.
const TopKCapacity = 1000

// Options configures a Store. The zero value works.
type Options struct {
	QueryTimeout time.Duration // bound of one question; default 10 s
	// Cluster, when set, is the cluster the tables live on: questions read
	// the Distributed tables (the same names), and maintenance works on
	// every node's local tables.
	Cluster string
	// NoRollups answers from the two minute cubes only, as before the
	// planner: for comparisons and benchmarks.
	NoRollups bool
	// Hooks, when set, hears each question's plan.
	Hooks Hooks
}

// Hooks observe the planner, e.g. for metrics; calls are synchronous and
// must be quick.
type Hooks interface {
	// OnPlan reports the tables read for one question of kind "metrics",
	// "series" or "top", in plan order.
	OnPlan(kind string, tables []string)
}

// Store implements clickagg.MetricsService on a clickhouse-go/v2 connection.
// A planner picks, per question, the smallest tables that answer it exactly
// (plan.go): the filter cubes for questions without ads, the per-ad
// rollups for questions without countries, formats or devices, the ad cube
// for the rest; whole hours and days from hourly and daily tables, the
// minutes at either end from minute tables.
type Store struct {
	conn driver.Conn
	o    Options
	cov  coverage
	// sketchLoses: approximate top-N answers are slower than exact ones on
	// this server (18.16), so approx is answered exactly.
	sketchOnce  sync.Once
	sketchLoses bool
}

// New returns a Store; conn stays owned by the caller.
func New(conn driver.Conn, o Options) *Store {
	if o.QueryTimeout == 0 {
		o.QueryTimeout = 10 * time.Second
	}
	return &Store{conn: conn, o: o}
}

var _ clickagg.MetricsService = (*Store)(nil)

// sums are the measures of ad_stats_minute; the aliases differ from the
// column names so that WHERE means columns and HAVING/ORDER BY mean sums,
// whatever a server's alias rules.
const sums = "sum(impressions) AS s_imp, sum(clicks) AS s_clk, sum(conversions) AS s_conv, sum(spend_micros) AS s_spend"

// metricAlias maps a metric to its alias in sums.
var metricAlias = map[clickagg.Metric]string{
	clickagg.MetricImpressions: "s_imp",
	clickagg.MetricClicks:      "s_clk",
	clickagg.MetricConversions: "s_conv",
	clickagg.MetricSpend:       "s_spend",
}

// dimExpr is the SQL of each dimension over ad_stats_minute.
var dimExpr = map[clickagg.Dimension]string{
	clickagg.DimCountry:  "toString(country)",
	clickagg.DimAdFormat: "toString(ad_format)",
	clickagg.DimDevice:   "toString(device)",
	clickagg.DimCampaign: "campaign_id",
	clickagg.DimAd:       "ad_id",
	clickagg.DimMinute:   "minute",
	clickagg.DimHour:     "toStartOfHour(minute)",
	clickagg.DimDay:      "toStartOfDay(minute)",
}

func isTime(d clickagg.Dimension) bool {
	return d == clickagg.DimMinute || d == clickagg.DimHour || d == clickagg.DimDay
}

// filterCond renders the filters on the dimensions a table has as AND
// clauses with bound values; nothing from the request is spliced into the
// SQL text.
func filterCond(f clickagg.Filter, has dims) (string, []any) {
	var b strings.Builder
	var args []any
	add := func(d dims, col string, vals []string) {
		if len(vals) == 0 || has&d == 0 {
			return
		}
		if len(vals) == 1 { // 18.16 spends about a millisecond building each IN set
			b.WriteString(" AND " + col + " = ?")
			args = append(args, vals[0])
			return
		}
		set := make([]any, len(vals))
		for i, v := range vals {
			set[i] = v
		}
		b.WriteString(" AND " + col + " IN ?")
		args = append(args, clickhouse.GroupSet{Value: set})
	}
	add(hasCountry, "country", f.Countries)
	add(hasFormat, "ad_format", f.AdFormats)
	add(hasDevice, "device", f.Devices)
	add(hasCampaign, "campaign_id", f.CampaignIDs)
	add(hasAd, "ad_id", f.AdIDs)
	return b.String(), args
}

// planFor plans a question and tells the hooks.
func (s *Store) planFor(ctx context.Context, kind string, r clickagg.Range, f clickagg.Filter, groupBy []clickagg.Dimension) []piece {
	var complete map[string]time.Time
	if !s.o.NoRollups {
		complete = s.cov.get(ctx, s.conn, s.settings(), s.o.QueryTimeout)
	}
	ps := cheapest(r, levels(needsOf(f, groupBy), !s.o.NoRollups), f, complete)
	if s.o.Hooks != nil {
		tables := make([]string, len(ps))
		for i, p := range ps {
			tables[i] = p.table
		}
		s.o.Hooks.OnPlan(kind, tables)
	}
	return ps
}

func (s *Store) query(ctx context.Context, sql string, args []any, scan func(driver.Rows) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.QueryTimeout)
	defer cancel()
	rows, err := s.conn.Query(ctx, sql+s.settings(), args...)
	if err != nil {
		return fmt.Errorf("query clickhouse: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("read clickhouse answer: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read clickhouse answer: %w", err)
	}
	return nil
}

// settings ends every query: on a cluster, read each shard's first
// replica, where inserts go (chclient.Options.ReadSettings).
func (s *Store) settings() string { return chclient.Options{Cluster: s.o.Cluster}.ReadSettings() }

// The two minute cubes. The filter cube drops ad and campaign, so it is
// orders of magnitude smaller than the ad cube and sorted for dimension
// filters.
const (
	adCube     = "ad_stats_minute"
	filterCube = "dim_stats_minute"
)

// Metrics implements clickagg.MetricsService.
func (s *Store) Metrics(ctx context.Context, q clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	order := make([]string, len(q.GroupBy))
	for i, d := range q.GroupBy {
		if _, ok := dimExpr[d]; !ok {
			return nil, &clickagg.ParamError{Param: "group_by", Message: "unknown dimension " + string(d)}
		}
		order[i] = alias(i)
	}
	f := q.Filter.Normalized()
	ps := s.planFor(ctx, "metrics", q.Range, f, q.GroupBy)
	extra := ""
	if len(order) > 0 {
		extra = " GROUP BY " + strings.Join(order, ", ") + " ORDER BY " + strings.Join(order, ", ")
	}
	sql, args := selectSQL(ps, q.GroupBy, f, "", nil, extra)
	res := &clickagg.MetricsResult{Range: q.Range, Rows: []clickagg.MetricsRow{}, Plan: report(ps)}
	strs := make([]string, len(q.GroupBy))
	times := make([]time.Time, len(q.GroupBy))
	dest := make([]any, 0, len(q.GroupBy)+4)
	for i, d := range q.GroupBy {
		if isTime(d) {
			dest = append(dest, &times[i])
		} else {
			dest = append(dest, &strs[i])
		}
	}
	var c clickagg.Counts
	dest = append(dest, &c.Impressions, &c.Clicks, &c.Conversions, &c.SpendMicros)
	err := s.query(ctx, sql, args, func(rows driver.Rows) error {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		row := clickagg.MetricsRow{Counts: c}
		if len(q.GroupBy) > 0 {
			row.Dims = make(map[clickagg.Dimension]string, len(q.GroupBy))
			for i, d := range q.GroupBy {
				if isTime(d) {
					row.Dims[d] = times[i].UTC().Format(time.RFC3339)
				} else {
					row.Dims[d] = strs[i]
				}
			}
		}
		res.Rows = append(res.Rows, row)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// bucketDim is the series bucket of each granularity.
var bucketDim = map[time.Duration]clickagg.Dimension{
	time.Minute:    clickagg.DimMinute,
	time.Hour:      clickagg.DimHour,
	24 * time.Hour: clickagg.DimDay,
}

// Series implements clickagg.MetricsService.
func (s *Store) Series(ctx context.Context, q clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	bucket, ok := bucketDim[q.Granularity]
	if !ok {
		return nil, &clickagg.ParamError{Param: "granularity", Message: "must be 1m, 1h or 1d"}
	}
	f := q.Filter.Normalized()
	f.AdIDs = []string{q.AdID}
	groupBy := []clickagg.Dimension{bucket}
	ps := s.planFor(ctx, "series", q.Range, f, groupBy)
	sql, args := selectSQL(ps, groupBy, f, "", nil, " GROUP BY d00 ORDER BY d00")
	got := map[int64]clickagg.Counts{}
	var t time.Time
	var c clickagg.Counts
	err := s.query(ctx, sql, args, func(rows driver.Rows) error {
		if err := rows.Scan(&t, &c.Impressions, &c.Clicks, &c.Conversions, &c.SpendMicros); err != nil {
			return err
		}
		got[t.Unix()] = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &clickagg.SeriesResult{Range: q.Range, Points: []clickagg.SeriesPoint{}, Plan: report(ps)}
	for b := q.Range.From.UTC().Truncate(q.Granularity); b.Before(q.Range.To); b = b.Add(q.Granularity) {
		res.Points = append(res.Points, clickagg.SeriesPoint{Time: b, Counts: got[b.Unix()]})
	}
	return res, nil
}

// TopAds implements clickagg.MetricsService. Ads whose metric is zero are
// not ranked. Exact mode ranks every ad of the cube. Approx mode ranks only
// the candidates named by the per-minute topK sketches of top_ads_minute
// (each minute's top n ads of its sketch of 1000, fewer over long ranges:
// perMinute), by their exact sums: it equals exact whenever every true
// top-n ad is among some minute's candidates. Where the sketches do not
// cover the range (sketchesCover) approx is ranked exactly.
func (s *Store) TopAds(ctx context.Context, q clickagg.TopQuery) (*clickagg.TopResult, error) {
	by, ok := metricAlias[q.Metric]
	if !ok {
		return nil, &clickagg.ParamError{Param: "metric", Message: "must be impressions, clicks, conversions or spend_micros"}
	}
	var cond string
	var condArgs []any
	if q.Approx {
		sub, subArgs, err := candidates(q)
		if err != nil {
			return nil, err
		}
		if s.sketchesCover(ctx, q.Range) {
			cond, condArgs = " AND ad_id IN ("+sub+")", subArgs
		}
	}
	f := q.Filter.Normalized()
	groupBy := []clickagg.Dimension{clickagg.DimAd}
	ps := s.planFor(ctx, "top", q.Range, f, groupBy)
	sql, args := selectSQL(ps, groupBy, f, cond, condArgs,
		" GROUP BY d00 HAVING "+by+" > 0 ORDER BY "+by+" DESC, d00 ASC LIMIT ?")
	args = append(args, q.N)
	res := &clickagg.TopResult{Range: q.Range, Ads: []clickagg.TopAd{}, Plan: report(ps), Sketches: cond != ""}
	var ad clickagg.TopAd
	err := s.query(ctx, sql, args, func(rows driver.Rows) error {
		if err := rows.Scan(&ad.AdID, &ad.Impressions, &ad.Clicks, &ad.Conversions, &ad.SpendMicros); err != nil {
			return err
		}
		res.Ads = append(res.Ads, ad)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// sketchType maps count metrics to the event type their sketch counts;
// spend is a weight, which 18.16's topK (unweighted) cannot rank.
var sketchType = map[clickagg.Metric]string{
	clickagg.MetricImpressions: "impression",
	clickagg.MetricClicks:      "click",
	clickagg.MetricConversions: "conversion",
}

// candidates is the subquery naming approx mode's candidate ads. It
// finalizes each stored sketch rather than merging them: on 18.16
// topKMerge(N) ignores N and returns 10 ads. (18.16's background merges
// truncate the stored sketches to 10 ads as well; see schema/README.md.)
func candidates(q clickagg.TopQuery) (string, []any, error) {
	typ, ok := sketchType[q.Metric]
	if !ok {
		return "", nil, &clickagg.ParamError{Param: "mode", Message: "approx ranks by event counts; use mode=exact for spend_micros"}
	}
	f := q.Filter
	if len(f.Countries)+len(f.AdFormats)+len(f.Devices)+len(f.CampaignIDs)+len(f.AdIDs) > 0 {
		return "", nil, &clickagg.ParamError{Param: "mode", Message: "approx ranks all traffic of each minute and takes no filters; use mode=exact"}
	}
	if q.N > TopKCapacity {
		return "", nil, &clickagg.ParamError{Param: "n", Message: fmt.Sprintf("approx ranks at most %d ads", TopKCapacity)}
	}
	sub := "SELECT DISTINCT arrayJoin(arraySlice(finalizeAggregation(top_ads), 1, ?)) AS candidate FROM " + schema.Sketches + " WHERE minute >= toDateTime(?) AND minute < toDateTime(?) AND type = ?"
	return sub, []any{perMinute(q), q.Range.From.Unix(), q.Range.To.Unix(), typ}, nil
}

// candidateBudget bounds the candidate ads approx mode unions before
// DISTINCT: modern servers keep all 1000 ads of every sketch, and a week of
// them is ten million strings, past the query timeout.
const candidateBudget = 2_000_000

// perMinute is how many of each minute's sketch approx mode takes: n, or
// fewer when the range has more minutes than candidateBudget/n (never
// fewer than 10, what 18.16's merged sketches keep anyway).
func perMinute(q clickagg.TopQuery) int {
	minutes := max(int(q.Range.To.Sub(q.Range.From)/time.Minute), 1)
	return min(q.N, max(10, candidateBudget/minutes))
}

// sketchSlower reports whether the server is one where ranking from the
// topK sketches is slower than exact ranking (18.16: 516 ms against 189 ms
// for the top 100 of 10 M events; the rollups widen the gap), asked once.
// A server whose version cannot be read is taken to be modern.
func (s *Store) sketchSlower(ctx context.Context) bool {
	s.sketchOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		v, err := chclient.ServerVersion(ctx, s.conn)
		s.sketchLoses = err == nil && !v.AtLeast(19, 0)
	})
	return s.sketchLoses
}

// sketchesCover reports whether approx mode may take its candidates from
// the sketches over r: not where that is slower (sketchSlower), and only
// from when top_ads_minute holds every event (its rollups.complete_from;
// none where the server keeps no sketch view, and the next hour after a
// database migrated on 18.16 gets the view on a newer server).
func (s *Store) sketchesCover(ctx context.Context, r clickagg.Range) bool {
	if s.sketchSlower(ctx) {
		return false
	}
	from, ok := s.cov.get(ctx, s.conn, s.settings(), s.o.QueryTimeout)[schema.Sketches]
	return ok && !r.From.Before(from)
}

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }
