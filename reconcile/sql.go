package reconcile

import (
	"strconv"
	"strings"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chstore"
)

// column is a key column of an aggregate table: its ClickHouse type and its
// value computed from a deduplicated event (the e_* columns of deduped).
type column struct {
	name, typ, expr string
}

func (c column) isTime() bool { return c.name == "minute" || c.name == "hour" || c.name == "day" }

var (
	minuteCol   = column{"minute", "DateTime('UTC')", "toStartOfMinute(e_ts)"}
	hourCol     = column{"hour", "DateTime('UTC')", "toStartOfHour(e_ts)"}
	dayCol      = column{"day", "Date", "toDate(e_ts)"}
	adCol       = column{"ad_id", "String", "e_ad_id"}
	campaignCol = column{"campaign_id", "String", "e_campaign_id"}
	countryCol  = column{"country", "FixedString(2)", "e_country"}
	formatCol   = column{"ad_format", clickagg.AdFormatSQL, "e_ad_format"}
	deviceCol   = column{"device", clickagg.DeviceSQL, "e_device"}
)

// table is a SummingMergeTree aggregate of events with the measures
// impressions, clicks, conversions and spend_micros.
type table struct {
	name  string
	keys  []column      // in ORDER BY of the report
	grain time.Duration // of the time key: only whole grains are compared; 0 is a minute
}

func (t table) daily() bool { return t.grain == 24*time.Hour }

// tables are the summing aggregates, in report order. Their materialized
// views are in schema/migrations; the key expressions here must match them.
var tables = []table{
	{name: "ad_stats_minute", keys: []column{minuteCol, adCol, campaignCol, countryCol, formatCol, deviceCol}},
	{name: "dim_stats_minute", keys: []column{minuteCol, countryCol, formatCol, deviceCol}},
	{name: "ad_stats_daily", keys: []column{dayCol, adCol, campaignCol}, grain: 24 * time.Hour},
	{name: "ad_totals_minute", keys: []column{minuteCol, adCol, campaignCol}},
	{name: "ad_totals_hour", keys: []column{hourCol, adCol, campaignCol}, grain: time.Hour},
	{name: "dim_stats_hour", keys: []column{hourCol, countryCol, formatCol, deviceCol}, grain: time.Hour},
	{name: "dim_stats_minute_by_time", keys: []column{minuteCol, countryCol, formatCol, deviceCol}},
}

func (t table) keyNames() []string {
	names := make([]string, len(t.keys))
	for i, c := range t.keys {
		names[i] = c.name
	}
	return names
}

// deduped is one row per event_id among the events with ts in [?, ?): the
// copy accepted first (duplicate = 0 before 1, then the earliest
// received_at), whatever the collector's flag said, since two copies may
// both carry duplicate = 0 (a resend to another instance). argMin over
// tuples keeps the chosen copy's fields together; 18.16 accepts tuples in
// both arguments.
//
// tupleElement rather than e.1: one function, read alike by 18.16 and by
// modern servers' analyzer, which resolves a dotted name as an identifier
// first.
func deduped(suffix string) string {
	return "SELECT tupleElement(e, 1) AS e_ts, tupleElement(e, 2) AS e_type, tupleElement(e, 3) AS e_ad_id, " +
		"tupleElement(e, 4) AS e_campaign_id, tupleElement(e, 5) AS e_country, tupleElement(e, 6) AS e_ad_format, " +
		"tupleElement(e, 7) AS e_device, tupleElement(e, 8) AS e_price_micros FROM (" +
		"SELECT argMin((ts, type, ad_id, campaign_id, country, ad_format, device, price_micros), (duplicate, received_at)) AS e " +
		"FROM events" + suffix + " WHERE ts >= toDateTime(?) AND ts < toDateTime(?) GROUP BY event_id)"
}

// truthCounts are the measures over deduped, as the views compute them.
const truthCounts = "toInt64(countIf(e_type = 'impression')) AS t1, toInt64(countIf(e_type = 'click')) AS t2, " +
	"toInt64(countIf(e_type = 'conversion')) AS t3, toInt64(sum(e_price_micros)) AS t4"

// diffSQL compares truth (deduplicated events) with the table per key and
// keeps the keys where any measure differs, with both sides' values. Both
// UNION ALL branches have the same types column by column: 18.16 looks for
// a common supertype and finds none between an Enum and a String or Int64
// and UInt64, so the truth keys are cast to the table's column types. Every
// column of both branches has its own alias: modern servers' analyzer
// takes four unnamed toInt64(0) for one column.
// suffix ends the tables' names (a shard's local tables). Arguments: see
// args.
func (t table) diffSQL(suffix string) string {
	keys := strings.Join(t.keyNames(), ", ")
	truthKeys := make([]string, len(t.keys))
	for i, c := range t.keys {
		truthKeys[i] = "CAST(" + c.expr + " AS " + c.typ + ") AS " + c.name
	}
	timeKey := t.keys[0].name
	return "SELECT " + keys + ", " +
		"sum(t1) AS truth_imp, sum(t2) AS truth_clk, sum(t3) AS truth_conv, sum(t4) AS truth_spend, " +
		"sum(a1) AS agg_imp, sum(a2) AS agg_clk, sum(a3) AS agg_conv, sum(a4) AS agg_spend FROM (" +
		"SELECT " + strings.Join(truthKeys, ", ") + ", " + truthCounts +
		", toInt64(0) AS a1, toInt64(0) AS a2, toInt64(0) AS a3, toInt64(0) AS a4" +
		" FROM (" + deduped(suffix) + ") GROUP BY " + keys +
		" UNION ALL SELECT " + keys + ", toInt64(0) AS t1, toInt64(0) AS t2, toInt64(0) AS t3, toInt64(0) AS t4, " +
		"sum(impressions) AS a1, sum(clicks) AS a2, sum(conversions) AS a3, sum(spend_micros) AS a4 FROM " + t.name + suffix +
		" WHERE " + timeKey + " >= " + t.bound() + " AND " + timeKey + " < " + t.bound() + " GROUP BY " + keys +
		") GROUP BY " + keys +
		" HAVING truth_imp != agg_imp OR truth_clk != agg_clk OR truth_conv != agg_conv OR truth_spend != agg_spend"
}

// reportSQL lists the differing keys in key order.
func (t table) reportSQL(suffix string) string {
	return t.diffSQL(suffix) + " ORDER BY " + strings.Join(t.keyNames(), ", ")
}

// correctSQL writes truth − aggregate of every differing key as one row per
// key; SummingMergeTree adds it to the key's rows (counts are Int64, so
// negative rows are fine), and the next comparison sees no difference.
func (t table) correctSQL(suffix string) string {
	keys := strings.Join(t.keyNames(), ", ")
	return "INSERT INTO " + t.name + suffix + " (" + keys + ", impressions, clicks, conversions, spend_micros) SELECT " + keys +
		", truth_imp - agg_imp, truth_clk - agg_clk, truth_conv - agg_conv, truth_spend - agg_spend FROM (" + t.diffSQL(suffix) + ")"
}

func (t table) bound() string {
	if t.daily() {
		return "toDate(?)"
	}
	return "toDateTime(?)"
}

// args are the bound values of diffSQL for [from, to): the events' range,
// then the table's. Days go as text: toDate of a number is read as days or
// seconds depending on its size.
func (t table) args(from, to time.Time) []any {
	if t.daily() {
		return []any{from.Unix(), to.Unix(), from.Format(time.DateOnly), to.Format(time.DateOnly)}
	}
	return []any{from.Unix(), to.Unix(), from.Unix(), to.Unix()}
}

// topAdsSQL refills top_ads_minute from deduplicated events of [?, ?), as
// top_ads_minute_mv does from new blocks.
func topAdsSQL(suffix string) string {
	return "INSERT INTO top_ads_minute" + suffix + " (minute, type, top_ads) SELECT CAST(toStartOfMinute(e_ts) AS DateTime('UTC')) AS minute, " +
		"e_type AS type, topKState(" + strconv.Itoa(chstore.TopKCapacity) + ")(e_ad_id) AS top_ads FROM (" + deduped(suffix) + ") GROUP BY minute, type"
}

// partition is the top_ads_minute partition (toYYYYMMDD) of day.
func partition(day time.Time) string { return day.Format("20060102") }
