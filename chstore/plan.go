package chstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
)

// dims is a set of the non-time dimensions a table keeps.
type dims uint8

const (
	hasCountry dims = 1 << iota
	hasFormat
	hasDevice
	hasCampaign
	hasAd

	starDims = hasCountry | hasFormat | hasDevice
	adDims   = hasCampaign | hasAd
)

// tier is an aggregate table at one time grain.
type tier struct {
	table   string
	timeCol string // minute, hour or day
	grain   time.Duration
	dims    dims
	// rollup: complete only from its rollups.complete_from on.
	rollup bool
	// lead is the dimension the table is sorted by first (0: time first).
	// Unless the filter names it, a time range reads whole partitions of
	// length part.
	lead dims
	part time.Duration
}

// The tables the planner reads. Every one holds the same measures, kept by
// a view from events and covered by reconciliation.
var (
	adCubeTier     = tier{table: adCube, timeCol: "minute", grain: time.Minute, dims: starDims | adDims}
	filterCubeTier = tier{table: filterCube, timeCol: "minute", grain: time.Minute, dims: starDims, lead: hasCountry, part: 24 * time.Hour}
	dimByTimeTier  = tier{table: "dim_stats_minute_by_time", timeCol: "minute", grain: time.Minute, dims: starDims, rollup: true}
	dimHourTier    = tier{table: "dim_stats_hour", timeCol: "hour", grain: time.Hour, dims: starDims, rollup: true}
	adMinuteTier   = tier{table: "ad_totals_minute", timeCol: "minute", grain: time.Minute, dims: adDims, rollup: true, lead: hasAd, part: 24 * time.Hour}
	adHourTier     = tier{table: "ad_totals_hour", timeCol: "hour", grain: time.Hour, dims: adDims, rollup: true}
	adDayTier      = tier{table: "ad_stats_daily", timeCol: "day", grain: 24 * time.Hour, dims: adDims, lead: hasAd, part: 30 * 24 * time.Hour}
)

// piece is a Piece with its tier.
type piece struct {
	tier
	from, to time.Time
}

// needs are what a question asks of a table.
type needs struct {
	dims dims
	// group is the finest time dimension grouped by: 0 (none), a minute,
	// an hour or a day.
	group time.Duration
	// byAd: the question names ads; tables sorted by ad read them
	// cheaply, the others read every ad of the range.
	byAd bool
}

func needsOf(f clickagg.Filter, groupBy []clickagg.Dimension) needs {
	var n needs
	add := func(d clickagg.Dimension) {
		switch d {
		case clickagg.DimCountry:
			n.dims |= hasCountry
		case clickagg.DimAdFormat:
			n.dims |= hasFormat
		case clickagg.DimDevice:
			n.dims |= hasDevice
		case clickagg.DimCampaign:
			n.dims |= hasCampaign
		case clickagg.DimAd:
			n.dims |= hasAd
		case clickagg.DimMinute:
			n.group = time.Minute
		case clickagg.DimHour:
			if n.group == 0 || n.group > time.Hour {
				n.group = time.Hour
			}
		case clickagg.DimDay:
			if n.group == 0 {
				n.group = 24 * time.Hour
			}
		}
	}
	for _, d := range groupBy {
		add(d)
	}
	if len(f.Countries) > 0 {
		add(clickagg.DimCountry)
	}
	if len(f.AdFormats) > 0 {
		add(clickagg.DimAdFormat)
	}
	if len(f.Devices) > 0 {
		add(clickagg.DimDevice)
	}
	if len(f.CampaignIDs) > 0 {
		add(clickagg.DimCampaign)
	}
	if len(f.AdIDs) > 0 {
		add(clickagg.DimAd)
		n.byAd = true
	}
	return n
}

// levels are the tiers that can answer n, largest grain first; the last is
// never a rollup, so that it can answer any range. Without rollups, only the
// minute cubes.
func levels(n needs, rollups bool) []tier {
	var out []tier
	switch {
	case n.dims&^starDims == 0:
		// The edges from the cube sorted by time, or by country when the
		// question names countries (the cost decides).
		out = []tier{dimHourTier, dimByTimeTier, filterCubeTier}
	case n.dims&^adDims == 0 && n.byAd:
		// Sorted by ad: one ad's days, then its minutes.
		out = []tier{adDayTier, adMinuteTier, adCubeTier}
	case n.dims&^adDims == 0:
		// Every ad of the range: the hour rollup, then the minute-first cube
		// for the edges (ad_totals_minute is sorted by ad).
		out = []tier{adDayTier, adHourTier, adCubeTier}
	default:
		return []tier{adCubeTier}
	}
	keep := out[:0]
	for _, t := range out {
		if (n.group == 0 || t.grain <= n.group) && (rollups || t.grain == time.Minute && !t.rollup) {
			keep = append(keep, t)
		}
	}
	return keep
}

// Costs of a plan, in rows: each piece costs a fixed pieceRows (a table
// read and its share of the UNION: about 1.5 ms on 18.16, the time to read
// some 20 000 rows) plus its grains times the rows one grain holds.
const pieceRows = 20_000

// Typical distinct values of a dimension, for rows per grain; a filter
// replaces them by its number of values.
var typical = map[dims]int{hasCountry: 50, hasFormat: 5, hasDevice: 5, hasAd: 1000}

// rowsPerGrain estimates the rows of one grain of a table that keeps d,
// under f. Campaigns follow ads and add no rows.
func rowsPerGrain(d dims, f clickagg.Filter) int {
	n := 1
	for _, dim := range []dims{hasCountry, hasFormat, hasDevice, hasAd} {
		switch vals := pinned(f, dim); {
		case d&dim == 0:
		case len(vals) > 0:
			n *= len(vals)
		default:
			n *= typical[dim]
		}
	}
	return n
}

// rows estimates what reading p under f costs: a table sorted by time
// reads every row of its grains (the filter prunes nothing); one sorted
// by a dimension the filter names reads only the named cells; one sorted
// by a dimension the filter leaves open reads its whole partitions.
func (p piece) rows(f clickagg.Filter) int {
	grains := int(p.to.Sub(p.from) / p.grain)
	switch {
	case p.lead == 0:
		return grains * rowsPerGrain(p.dims, clickagg.Filter{})
	case len(pinned(f, p.lead)) > 0:
		return grains * rowsPerGrain(p.dims, f)
	}
	parts := int(p.to.Add(-time.Nanosecond).Truncate(p.part).Sub(p.from.Truncate(p.part))/p.part) + 1
	return parts * int(p.part/p.grain) * rowsPerGrain(p.dims, clickagg.Filter{})
}

// pinned are f's values of d.
func pinned(f clickagg.Filter, d dims) []string {
	switch d {
	case hasCountry:
		return f.Countries
	case hasFormat:
		return f.AdFormats
	case hasDevice:
		return f.Devices
	case hasCampaign:
		return f.CampaignIDs
	case hasAd:
		return f.AdIDs
	}
	return nil
}

// cheapest plans r with every ordered choice of lv's levels above its base
// (at most three, so at most eight plans) and returns the plan of least
// estimated cost.
func cheapest(r clickagg.Range, lv []tier, f clickagg.Filter, complete map[string]time.Time) []piece {
	if len(lv) == 0 {
		return nil
	}
	upper, base := lv[:len(lv)-1], lv[len(lv)-1]
	var best []piece
	bestCost := 0
	for mask := range 1 << len(upper) {
		var use []tier
		for i, t := range upper {
			if mask&(1<<i) != 0 {
				use = append(use, t)
			}
		}
		ps := plan(r, append(use, base), complete)
		cost := 0
		for _, p := range ps {
			cost += pieceRows + p.rows(f)
		}
		if best == nil || cost < bestCost {
			best, bestCost = ps, cost
		}
	}
	return best
}

// plan covers r with pieces: each level takes the whole grains it can
// (and, for a rollup, those it is complete for), the smaller levels the
// rest on either side. complete holds the rollups' complete_from.
func plan(r clickagg.Range, lv []tier, complete map[string]time.Time) []piece {
	if !r.From.Before(r.To) || len(lv) == 0 {
		return nil
	}
	t, rest := lv[0], lv[1:]
	from, to := ceil(r.From, t.grain), r.To.UTC().Truncate(t.grain)
	if t.rollup {
		cf, ok := complete[t.table]
		if !ok {
			return plan(r, rest, complete)
		}
		if c := ceil(cf, t.grain); c.After(from) {
			from = c
		}
	}
	if len(rest) == 0 { // the base answers everything
		from, to = r.From, r.To
	}
	if !from.Before(to) {
		return plan(r, rest, complete)
	}
	out := plan(clickagg.Range{From: r.From, To: from}, rest, complete)
	out = append(out, piece{t, from, to})
	return append(out, plan(clickagg.Range{From: to, To: r.To}, rest, complete)...)
}

// ceil is t rounded up to a whole grain (UTC).
func ceil(t time.Time, grain time.Duration) time.Time {
	t = t.UTC()
	if c := t.Truncate(grain); c.Before(t) {
		return c.Add(grain)
	}
	return t
}

// report is a plan as answers show it.
func report(ps []piece) []clickagg.PlanPiece {
	out := make([]clickagg.PlanPiece, len(ps))
	for i, p := range ps {
		out[i] = clickagg.PlanPiece{Table: p.table, From: p.from, To: p.to}
	}
	return out
}

// timeCond is the WHERE part selecting [from, to) of p's time column.
func (p piece) timeCond() (string, []any) {
	if p.timeCol == "day" {
		return "day >= toDate(?) AND day < toDate(?)", []any{p.from.Format(time.DateOnly), p.to.Format(time.DateOnly)}
	}
	return p.timeCol + " >= toDateTime(?) AND " + p.timeCol + " < toDateTime(?)", []any{p.from.Unix(), p.to.Unix()}
}

// dimSQL is the expression of d over p's table; every tier gives the same
// type (String, or DateTime('UTC') for time), as UNION ALL needs.
func (p piece) dimSQL(d clickagg.Dimension) string {
	switch d {
	case clickagg.DimMinute:
		return p.timeCol
	case clickagg.DimHour:
		if p.timeCol == "hour" {
			return "hour"
		}
		return "toStartOfHour(" + p.timeCol + ")"
	case clickagg.DimDay:
		if p.timeCol == "day" {
			return "toDateTime(day, 'UTC')"
		}
		return "toStartOfDay(" + p.timeCol + ")"
	}
	return dimExpr[d]
}

// selectSQL is the question over ps: one table read directly, or the
// pieces' rows under UNION ALL summed once (summing each piece first was
// measured slower: the top 100 of 24 h 32 ms against 24). sel are the
// output expressions by dimension (aliased d00, d01, ...); extra is what
// follows the WHERE (GROUP BY, ORDER BY, ...); cond is appended to every
// piece's WHERE with its own arguments.
func selectSQL(ps []piece, sel []clickagg.Dimension, f clickagg.Filter, cond string, condArgs []any, extra string) (string, []any) {
	var args []any
	where := func(p piece) string {
		tc, targs := p.timeCond()
		fc, fargs := filterCond(f, p.dims)
		args = append(append(append(args, targs...), fargs...), condArgs...)
		return " WHERE " + tc + fc + cond
	}
	cols := func(p piece) []string {
		out := make([]string, len(sel))
		for i, d := range sel {
			out[i] = p.dimSQL(d) + " AS " + alias(i)
		}
		return out
	}
	if len(ps) == 1 {
		p := ps[0]
		return "SELECT " + strings.Join(append(cols(p), sums), ", ") + " FROM " + p.table + where(p) + extra, args
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = "SELECT " + strings.Join(append(cols(p), "impressions", "clicks", "conversions", "spend_micros"), ", ") + " FROM " + p.table + where(p)
	}
	outer := make([]string, len(sel))
	for i := range sel {
		outer[i] = alias(i)
	}
	return "SELECT " + strings.Join(append(outer, sums), ", ") + " FROM (" + strings.Join(parts, " UNION ALL ") + ")" + extra, args
}

func alias(i int) string { return fmt.Sprintf("d%02d", i) }

// coverage is when each rollup (and the sketches) became complete, read
// from the rollups table and kept a minute.
type coverage struct {
	mu   sync.Mutex
	at   time.Time
	from map[string]time.Time
}

const coverageTTL = time.Minute

// get returns the rollups' complete_from, read again once a minute (within
// limit); a failed read leaves no rollup complete until the next (answers
// stay exact, from the minute tables).
func (c *coverage) get(ctx context.Context, conn driver.Conn, settings string, limit time.Duration) map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.from != nil && time.Since(c.at) < coverageTTL {
		return c.from
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	from := map[string]time.Time{}
	rows, err := conn.Query(ctx, "SELECT name, min(complete_from) FROM rollups GROUP BY name"+settings)
	if err == nil {
		for rows.Next() {
			var name string
			var t time.Time
			if rows.Scan(&name, &t) == nil {
				from[name] = t.UTC()
			}
		}
		rows.Close()
	}
	c.from, c.at = from, time.Now()
	return from
}
