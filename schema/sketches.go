package schema

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang-migrate/migrate/v4/source"
)

// Sketches is the table of per-minute topK sketches of ads, kept by
// SketchView only on servers where the view pays: on 18.16 it costs a
// tenth of ingest throughput (benchmarks/README.md) and chstore ranks
// exactly there anyway, so migration 000024 drops it on those (its guard).
// A server from 19 on has it, made again on a database migrated on an
// older one (Migrator.sketchView); like a rollup, the table then holds every
// event only from its rollups.complete_from on.
const (
	Sketches   = "top_ads_minute"
	SketchView = Sketches + viewSuffix
)

// viewSuffix names the view that keeps a table.
const viewSuffix = "_mv"

// The migrations that made SketchView and that drop it where their guard
// holds.
const (
	sketchViewMade    = "000007_top_ads_minute_mv.up.sql"
	sketchViewDropped = "000024_top_ads_minute_mv_before_19.up.sql"
)

// embedded reads an embedded migration: its version, guard and statement.
func embedded(name string) (uint, *guard, string, error) {
	m, err := source.Parse(name)
	if err != nil {
		return 0, nil, "", fmt.Errorf("migration %s: %w", name, err)
	}
	b, err := migrations.ReadFile("migrations/" + name)
	if err != nil {
		return 0, nil, "", fmt.Errorf("migration %s: %w", name, err)
	}
	g, stmt, err := splitGuard(string(b))
	return m.Version, g, stmt, err
}

// Exists reports whether conn's database has a table or view called name.
func Exists(ctx context.Context, conn driver.Conn, name string) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", name).Scan(&n); err != nil {
		return false, fmt.Errorf("look for %s: %w", name, err)
	}
	return n > 0, nil
}

// CreateSketchView makes SketchView on t as its first migration did. It
// does not look at the server's version: Migrator.sketchView does, and
// tests use it to give an 18.16 database the schema of a newer server.
func CreateSketchView(ctx context.Context, conn driver.Conn, t Target) error {
	_, _, stmt, err := embedded(sketchViewMade)
	if err == nil {
		err = apply(ctx, conn, stmt, t)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", SketchView, err)
	}
	return nil
}

// sketchView reports whether this server keeps SketchView (000024's guard,
// which drops it, does not hold here) and, when it does, makes the view
// again if the applied migrations dropped it: the database was migrated
// on an older server. noteRollups then notes the sketches complete from
// the next hour, as a rollup added to a database with events.
func (m *Migrator) sketchView(ctx context.Context) (bool, error) {
	dropped, g, _, err := embedded(sketchViewDropped)
	if err != nil {
		return false, err
	}
	sv, err := m.drv.serverVersion()
	if err != nil {
		return false, fmt.Errorf("sketch view: %w", err)
	}
	if g.holds(sv) {
		return false, nil
	}
	v, dirty, err := m.Version()
	if err != nil || dirty || v < dropped {
		return true, err
	}
	if ok, err := Exists(ctx, m.drv.conn, SketchView); err != nil || ok {
		return true, err
	}
	return true, CreateSketchView(ctx, m.drv.conn, m.drv.target)
}
