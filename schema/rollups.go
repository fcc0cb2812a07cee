package schema

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg/chclient"
)

// Rollups are the tables kept by views that were added after the first
// release: a view sees only events inserted after it was made, so such a
// table holds every event only from some time on, which the table rollups
// records (complete_from) and the query API respects.
var Rollups = []string{"ad_totals_minute", "ad_totals_hour", "dim_stats_hour", "dim_stats_minute_by_time"}

// RollupsTable records from when each rollup is complete.
const RollupsTable = "rollups"

// rollupMargin is added to the time a rollup is noted when events were
// already stored: events up to the collector's future skew (5 min) ahead of
// their arrival may have arrived before the view, and the next whole hour
// keeps hour tables whole.
const rollupMargin = 6 * time.Minute

// noteRollups gives every table of tables whose view exists and that has
// no row in rollups yet its complete_from: the epoch when events is empty
// (the view has seen every event), else the hour after now plus
// rollupMargin (older events may be missing until `clickagg replay` fills
// them). The view, not the table: the sketches' table stays where a server
// keeps no view for it (Sketches).
func noteRollups(ctx context.Context, conn driver.Conn, t Target, tables []string) error {
	names := []any{RollupsTable}
	for _, n := range tables {
		names = append(names, n+viewSuffix)
	}
	exist, err := chclient.Strings(ctx, conn, "SELECT name FROM system.tables WHERE database = ? AND name IN ?", t.Database, clickhouse.GroupSet{Value: names})
	if err != nil {
		return fmt.Errorf("note rollups: %w", err)
	}
	if !slices.Contains(exist, RollupsTable) {
		return nil
	}
	noted, err := chclient.Strings(ctx, conn, "SELECT DISTINCT name FROM "+RollupsTable)
	if err != nil {
		return fmt.Errorf("note rollups: %w", err)
	}
	missing := slices.DeleteFunc(slices.Clone(tables), func(n string) bool { return !slices.Contains(exist, n+viewSuffix) || slices.Contains(noted, n) })
	if len(missing) == 0 {
		return nil
	}
	var events uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&events); err != nil {
		return fmt.Errorf("note rollups: %w", err)
	}
	from := time.Unix(0, 0).UTC()
	if events > 0 {
		from = time.Now().UTC().Add(rollupMargin).Truncate(time.Hour).Add(time.Hour)
	}
	// A cluster's rollups table is Distributed: written through at once,
	// so that the next reader sees the row.
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	if err := conn.Exec(ctx, "INSERT INTO "+RollupsTable+" (name, complete_from, noted_at) SELECT arrayJoin(?) AS name, toDateTime(?, 'UTC'), now()", missing, from.Unix()); err != nil {
		return fmt.Errorf("note rollups: %w", err)
	}
	return nil
}

// ExtendRollups records that every rollup whose complete_from lies in
// (from, to] holds every event from from on: a replay of [from, to) has
// just corrected it from events. A rollup keyed by hours is read from the
// first whole hour at or after from.
func ExtendRollups(ctx context.Context, conn driver.Conn, from, to time.Time) error {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	err := conn.Exec(ctx, "INSERT INTO "+RollupsTable+" (name, complete_from, noted_at) SELECT name, toDateTime(?, 'UTC'), now() FROM ("+
		"SELECT name, min(complete_from) AS cf FROM "+RollupsTable+" GROUP BY name) WHERE cf > toDateTime(?, 'UTC') AND cf <= toDateTime(?, 'UTC')",
		from.Unix(), from.Unix(), to.Unix())
	if err != nil {
		return fmt.Errorf("extend rollups: %w", err)
	}
	return nil
}
