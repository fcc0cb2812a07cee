package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/schema"
)

var (
	v1816 = chclient.Version{Major: 18, Minor: 16, Patch: 1}
	v2408 = chclient.Version{Major: 24, Minor: 8, Patch: 14}
)

// TestGuard: a migration's first line decides on which servers it runs.
func TestGuard(t *testing.T) {
	for _, tc := range []struct {
		sql     string
		v       chclient.Version
		cond    string
		holds   bool
		stmt    string
		wantErr bool
	}{
		{sql: "DROP TABLE IF EXISTS x", v: v1816, holds: true, stmt: "DROP TABLE IF EXISTS x"},
		{sql: "-- clickagg: server < 19\nDROP TABLE IF EXISTS x\n", v: v1816, cond: "server < 19.0", holds: true, stmt: "DROP TABLE IF EXISTS x"},
		{sql: "-- clickagg: server < 19\nDROP TABLE IF EXISTS x", v: chclient.Version{Major: 19}, cond: "server < 19.0", stmt: "DROP TABLE IF EXISTS x"},
		{sql: "-- clickagg: server < 19\nDROP TABLE IF EXISTS x", v: v2408, cond: "server < 19.0", stmt: "DROP TABLE IF EXISTS x"},
		{sql: "-- clickagg: server >= 24.3\r\nSELECT 1", v: v2408, cond: "server >= 24.3", holds: true, stmt: "SELECT 1"},
		{sql: "-- clickagg: server >= 24.3\nSELECT 1", v: chclient.Version{Major: 24, Minor: 2, Patch: 9}, cond: "server >= 24.3", stmt: "SELECT 1"},
		{sql: "-- a remark, not a guard\nSELECT 1", v: v1816, holds: true, stmt: "-- a remark, not a guard\nSELECT 1"},
		{sql: "-- clickagg: server > 19\nSELECT 1", wantErr: true},
		{sql: "-- clickagg: 18.16\nSELECT 1", wantErr: true},
		{sql: "SELECT 1\n-- clickagg: server < 19", wantErr: true},
		{sql: "--clickagg: server < 19\nSELECT 1", wantErr: true},
		{sql: "SELECT 1\n  -- ClickAgg: server < 19", wantErr: true},
	} {
		cond, holds, stmt, err := schema.Guard(tc.sql, tc.v)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: error %v, want one: %v", tc.sql, err, tc.wantErr)
			continue
		}
		if err == nil && (cond != tc.cond || holds != tc.holds || stmt != tc.stmt) {
			t.Errorf("%q on %s: %q %v %q, want %q %v %q", tc.sql, tc.v, cond, holds, stmt, tc.cond, tc.holds, tc.stmt)
		}
	}
}

// TestSketchViewByServerVersion: 18.16 gets no top_ads_minute_mv and no
// note of the sketches; a fresh database on a modern server (pretended:
// only 18.16 runs here) keeps the view, complete from the epoch; a database
// migrated on 18.16 with events, later migrated on a modern server, gets
// the view back, complete from the next hour.
func TestSketchViewByServerVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	up := func(db testenv.ClickHouseDB, v *chclient.Version) *schema.Migrator {
		t.Helper()
		m, err := schema.NewMigrator(ctx, db.Options())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if v != nil {
			schema.PretendVersion(m, *v)
		}
		if err := m.Up(); err != nil {
			t.Fatal("up: ", err)
		}
		return m
	}
	// notes: the sketches' rows in rollups and their complete_from (Unix).
	state := func(db testenv.ClickHouseDB) (view bool, notes string) {
		t.Helper()
		return hasSketchView(t, db), testenv.QueryString(t, db, "SELECT count(), toUInt32(min(complete_from)) FROM rollups WHERE name = '"+schema.Sketches+"'")
	}

	fresh := testenv.ClickHouse(t)
	m := up(fresh, &v2408)
	if view, notes := state(fresh); !view || notes != "1\t0" {
		t.Errorf("fresh on a modern server: view %v, noted %s; want the view, complete from the epoch", view, notes)
	}
	if err := m.Down(); err != nil {
		t.Fatal("down: ", err)
	}
	if left := testenv.QueryString(t, fresh, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name != '"+schema.MigrationsTable+"'"); left != "0" {
		t.Errorf("%s tables left after down on a modern server", left)
	}

	old := testenv.ClickHouse(t)
	up(old, nil)
	if view, notes := state(old); view || notes != "0\t0" {
		t.Errorf("on 18.16: view %v, noted %s; want neither", view, notes)
	}
	testenv.Exec(t, old, "INSERT INTO events (event_id, type, ts, ad_id, country, ad_format, device, price_micros, received_at) "+
		"SELECT 'e1', 'click', toDateTime('2026-11-22 10:00:00', 'UTC'), 'ad-1', 'KR', 'banner', 'ios', 1000, now()")
	if n := testenv.QueryString(t, old, "SELECT count() FROM "+schema.Sketches); n != "0" {
		t.Errorf("18.16 fed %s sketch rows", n)
	}
	up(old, &v2408)
	up(old, &v2408) // once only
	view, notes := state(old)
	var n, unix int64
	fmt.Sscanf(notes, "%d\t%d", &n, &unix)
	if from := time.Unix(unix, 0); !view || n != 1 || !from.After(time.Now()) || from.Minute() != 0 {
		t.Errorf("upgraded to a modern server: view %v, noted %s; want the view, complete from the next hour", view, notes)
	}
	testenv.Exec(t, old, "INSERT INTO events (event_id, type, ts, ad_id, country, ad_format, device, price_micros, received_at) "+
		"SELECT 'e2', 'click', toDateTime('2026-11-22 10:00:00', 'UTC'), 'ad-1', 'KR', 'banner', 'ios', 1000, now()")
	if n := testenv.QueryString(t, old, "SELECT count() FROM "+schema.Sketches); n != "1" {
		t.Errorf("the view made again fed %s sketch rows, want 1", n)
	}
}

func hasSketchView(t *testing.T, db testenv.ClickHouseDB) bool {
	t.Helper()
	return testenv.QueryString(t, db, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '"+schema.SketchView+"'") == "1"
}
