// Package chstore answers metric questions from ClickHouse's aggregate
// tables. Every sum, group and ranking is computed by ClickHouse (push-down);
// Go only fills empty buckets of a series with zeros.
package chstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
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
}

// Store implements clickagg.MetricsService on a clickhouse-go/v2 connection.
// Metrics reads the filter cube dim_stats_minute unless the question names
// ads or campaigns; series and top-N read the ad cube ad_stats_minute.
type Store struct {
	conn driver.Conn
	o    Options
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

// where renders the range and filter as a WHERE clause with bound values;
// nothing from the request is spliced into the SQL text.
func where(r clickagg.Range, f clickagg.Filter, withAd bool) (string, []any) {
	var b strings.Builder
	b.WriteString("minute >= toDateTime(?) AND minute < toDateTime(?)")
	args := []any{r.From.Unix(), r.To.Unix()}
	add := func(col string, vals []string) {
		if len(vals) == 0 {
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
	add("country", f.Countries)
	add("ad_format", f.AdFormats)
	add("device", f.Devices)
	if withAd {
		add("campaign_id", f.CampaignIDs)
		add("ad_id", f.AdIDs)
	}
	return b.String(), args
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

// Tables of the two cubes. The filter cube drops ad and campaign, so it is
// orders of magnitude smaller than the ad cube and sorted for dimension
// filters; questions that need neither ad nor campaign read it.
const (
	adCube     = "ad_stats_minute"
	filterCube = "dim_stats_minute"
)

// cube picks the smallest table that holds every dimension q needs.
func cube(q clickagg.MetricsQuery) string {
	if len(q.Filter.CampaignIDs) > 0 || len(q.Filter.AdIDs) > 0 {
		return adCube
	}
	for _, d := range q.GroupBy {
		if d == clickagg.DimAd || d == clickagg.DimCampaign {
			return adCube
		}
	}
	return filterCube
}

// Metrics implements clickagg.MetricsService.
func (s *Store) Metrics(ctx context.Context, q clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	cond, args := where(q.Range, q.Filter.Normalized(), true)
	sel := make([]string, 0, len(q.GroupBy)+1)
	order := make([]string, 0, len(q.GroupBy))
	for i, d := range q.GroupBy {
		expr, ok := dimExpr[d]
		if !ok {
			return nil, &clickagg.ParamError{Param: "group_by", Message: "unknown dimension " + string(d)}
		}
		alias := fmt.Sprintf("d%d", i)
		sel = append(sel, expr+" AS "+alias)
		order = append(order, alias)
	}
	sql := "SELECT " + strings.Join(append(sel, sums), ", ") + " FROM " + cube(q) + " WHERE " + cond
	if len(order) > 0 {
		sql += " GROUP BY " + strings.Join(order, ", ") + " ORDER BY " + strings.Join(order, ", ")
	}
	res := &clickagg.MetricsResult{Range: q.Range, Rows: []clickagg.MetricsRow{}}
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

// bucketExpr is the series bucket of each granularity.
var bucketExpr = map[time.Duration]string{
	time.Minute:    "minute",
	time.Hour:      "toStartOfHour(minute)",
	24 * time.Hour: "toStartOfDay(minute)",
}

// Series implements clickagg.MetricsService.
func (s *Store) Series(ctx context.Context, q clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	bucket, ok := bucketExpr[q.Granularity]
	if !ok {
		return nil, &clickagg.ParamError{Param: "granularity", Message: "must be 1m, 1h or 1d"}
	}
	f := q.Filter.Normalized()
	f.AdIDs = []string{q.AdID}
	cond, args := where(q.Range, f, true)
	sql := "SELECT " + bucket + " AS t, " + sums + " FROM ad_stats_minute WHERE " + cond + " GROUP BY t ORDER BY t"
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
	res := &clickagg.SeriesResult{Range: q.Range, Points: []clickagg.SeriesPoint{}}
	for b := q.Range.From.UTC().Truncate(q.Granularity); b.Before(q.Range.To); b = b.Add(q.Granularity) {
		res.Points = append(res.Points, clickagg.SeriesPoint{Time: b, Counts: got[b.Unix()]})
	}
	return res, nil
}

// TopAds implements clickagg.MetricsService. Ads whose metric is zero are
// not ranked. Exact mode ranks every ad of the cube. Approx mode ranks only
// the candidates named by the per-minute topK sketches of top_ads_minute
// (each minute's top n ads of its sketch of 1000, fewer over long ranges:
// perMinute; 10 on 18.16 once parts merge), by their exact sums: it equals
// exact whenever every true top-n ad is among some minute's candidates.
func (s *Store) TopAds(ctx context.Context, q clickagg.TopQuery) (*clickagg.TopResult, error) {
	alias, ok := metricAlias[q.Metric]
	if !ok {
		return nil, &clickagg.ParamError{Param: "metric", Message: "must be impressions, clicks, conversions or spend_micros"}
	}
	cond, args := where(q.Range, q.Filter.Normalized(), true)
	if q.Approx {
		sub, subArgs, err := candidates(q)
		if err != nil {
			return nil, err
		}
		cond += " AND ad_id IN (" + sub + ")"
		args = append(args, subArgs...)
	}
	sql := "SELECT ad_id, " + sums + " FROM ad_stats_minute WHERE " + cond +
		" GROUP BY ad_id HAVING " + alias + " > 0 ORDER BY " + alias + " DESC, ad_id ASC LIMIT ?"
	args = append(args, q.N)
	res := &clickagg.TopResult{Range: q.Range, Ads: []clickagg.TopAd{}}
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
	cond, args := where(q.Range, clickagg.Filter{}, false)
	sub := "SELECT DISTINCT arrayJoin(arraySlice(finalizeAggregation(top_ads), 1, ?)) AS candidate FROM top_ads_minute WHERE " + cond + " AND type = ?"
	return sub, append(append([]any{perMinute(q)}, args...), typ), nil
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

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }
