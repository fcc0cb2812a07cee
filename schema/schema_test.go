package schema_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/schema"
)

var update = flag.Bool("update", false, "rewrite testdata/schema.golden")

func TestMain(m *testing.M) { testenv.Main(m) }

// describe renders the user tables of the database for the golden file.
func describe(t *testing.T, db testenv.ClickHouseDB) string {
	t.Helper()
	q := func(sql string) string { return testenv.QueryString(t, db, sql) }
	tables := q("SELECT name, engine, partition_key, sorting_key FROM system.tables " +
		"WHERE database = currentDatabase() AND name != '" + schema.MigrationsTable + "' ORDER BY name")
	cols := q("SELECT table, name, type, comment FROM system.columns " +
		"WHERE database = currentDatabase() AND table != '" + schema.MigrationsTable + "'") // system.columns lists tables by name and columns in order; 18.16 has no position column
	return "# tables: name engine partition_key sorting_key\n" + tables + "\n# columns: table name type comment\n" + cols + "\n"
}

func TestMigrations(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := schema.NewMigrator(ctx, db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	latest, err := schema.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := m.Version(); err != nil || v != 0 || dirty {
		t.Fatalf("fresh version = %d %v %v", v, dirty, err)
	}
	if err := m.Up(); err != nil {
		t.Fatal("up: ", err)
	}
	if v, dirty, err := m.Version(); err != nil || v != latest || dirty {
		t.Fatalf("after up: version %d dirty %v err %v, want %d", v, dirty, err, latest)
	}
	got := describe(t, db)
	golden := filepath.Join("testdata", "schema.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("schema differs from %s (go test ./schema -update to accept):\n%s", golden, got)
	}
	// Go's enum values and the SQL types must agree, or the ingestor's blocks
	// would be refused or, worse, mislabelled.
	for col, typ := range map[string]string{"type": clickagg.EventTypeSQL, "ad_format": clickagg.AdFormatSQL, "device": clickagg.DeviceSQL} {
		if got := testenv.QueryString(t, db, "SELECT type FROM system.columns WHERE database = currentDatabase() AND table = 'events' AND name = '"+col+"'"); strings.ReplaceAll(got, `\'`, `'`) != typ {
			t.Errorf("events.%s is %s, Go says %s", col, got, typ)
		}
	}

	// 18.16 keeps no sketch view (000024); reverting 000024 makes it again.
	if hasSketchView(t, db) {
		t.Error("top_ads_minute_mv on 18.16 after up")
	}
	if err := m.Steps(-int(latest - 23)); err != nil {
		t.Fatal("down to 23: ", err)
	}
	if !hasSketchView(t, db) {
		t.Error("no top_ads_minute_mv after reverting 000024")
	}
	if err := m.Up(); err != nil {
		t.Fatal("up from 23: ", err)
	}
	if hasSketchView(t, db) {
		t.Error("top_ads_minute_mv on 18.16 after up from 23")
	}

	if err := m.Down(); err != nil {
		t.Fatal("down: ", err)
	}
	if v, _, err := m.Version(); err != nil || v != 0 {
		t.Fatalf("after down: version %d err %v", v, err)
	}
	if left := testenv.QueryString(t, db, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name != '"+schema.MigrationsTable+"'"); left != "0" {
		t.Fatalf("%s tables left after down", left)
	}
	if err := m.Up(); err != nil {
		t.Fatal("up again: ", err)
	}
	if again := describe(t, db); again != got {
		t.Errorf("second up differs:\n%s", again)
	}
	if err := m.Up(); err != nil {
		t.Fatal("idempotent up: ", err)
	}
}

func TestMigrationsAreSingleStatements(t *testing.T) {
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	ups, downs := 0, 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("migrations", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, _, stmt, err := schema.Guard(string(b), chclient.Version{Major: 18, Minor: 16, Patch: 1})
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
		body := stripQuoted(stmt)
		if strings.Contains(strings.TrimSuffix(body, ";"), ";") {
			t.Errorf("%s: more than one statement", e.Name())
		}
		switch {
		case strings.HasSuffix(e.Name(), ".up.sql"):
			ups++
		case strings.HasSuffix(e.Name(), ".down.sql"):
			downs++
		}
		// SQL that 18.16 lacks (PLATFORM.md); modern-only SQL must be gated.
		for _, bad := range []string{"TTL ", "IPv4", "DateTime64", "SimpleAggregateFunction", "POPULATE", "JSONExtract", "toStartOfInterval", "LowCardinality"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s uses %q, which ClickHouse 18.16 lacks", e.Name(), bad)
			}
		}
	}
	if ups == 0 || ups != downs {
		t.Errorf("%d up and %d down migrations", ups, downs)
	}
}

// stripQuoted removes single-quoted literals (comments, enum names) so that
// the checks above look at SQL only.
func stripQuoted(s string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && in:
			i++
		case s[i] == '\'':
			in = !in
		case !in:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// On 18.16 no view has a definer.
func TestDefinersOn1816(t *testing.T) {
	db := testenv.Migrated(t)
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := schema.Definers(context.Background(), conn)
	if err != nil || len(got) != 0 {
		t.Errorf("definers %v, %v; want none", got, err)
	}
}

// TestClusterDDL: the statements every migration becomes on a cluster, as
// text (testdata/cluster_ddl.golden; -update rewrites it).
func TestClusterDDL(t *testing.T) {
	var b strings.Builder
	for _, dir := range []string{"up", "down"} {
		files, err := filepath.Glob(filepath.Join("migrations", "*."+dir+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			sql, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cond, _, stmt, err := schema.Guard(string(sql), chclient.Version{})
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			stmts, err := schema.Render(stmt, schema.Target{Cluster: "clickagg", Database: "clickagg"})
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if cond != "" {
				cond = " (only on " + cond + ")"
			}
			fmt.Fprintf(&b, "-- %s%s\n%s;\n\n", filepath.Base(f), cond, strings.Join(stmts, ";\n"))
		}
	}
	golden := filepath.Join("testdata", "cluster_ddl.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("cluster DDL differs from %s (go test ./schema -update to accept):\n%s", golden, b.String())
	}
	// One server: every statement as written.
	if got, err := schema.Render("DROP TABLE IF EXISTS events;", schema.Target{Database: "x"}); err != nil || len(got) != 1 || got[0] != "DROP TABLE IF EXISTS events" {
		t.Errorf("one server: %q %v", got, err)
	}
	if _, err := schema.Render("ALTER TABLE events ADD COLUMN x UInt8", schema.Target{Cluster: "c", Database: "x"}); err == nil {
		t.Error("an ALTER was rendered for a cluster without a rule for it")
	}
}

// TestMigrationsOnCluster: the same migrations on a real 2 x 2 cluster:
// every node gets the local replicated tables, the Distributed ones and the
// views (testdata/schema_cluster.golden); an event inserted into a shard's
// local table reaches its replica and the aggregates, read through the
// Distributed tables from any node; the cluster has one version, and down
// leaves nothing on any node.
func TestMigrationsOnCluster(t *testing.T) {
	db := testenv.Cluster(t)
	nodes := db.Cluster.Nodes
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := chclient.Options{HTTP: nodes[0].HTTPURL(), Native: nodes[0].NativeAddr(), Database: db.Database, Cluster: db.Cluster.Name}
	m, err := schema.NewMigrator(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	latest, _ := schema.Latest()
	if err := m.Up(); err != nil {
		t.Fatal("up: ", err)
	}
	got := describe(t, db.Node(nodes[0]))
	for _, n := range nodes[1:] {
		if other := describe(t, db.Node(n)); other != got {
			t.Errorf("%s's schema differs from %s's:\n%s", n.Node.Name(), nodes[0].Node.Name(), other)
		}
	}
	golden := filepath.Join("testdata", "schema_cluster.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(golden); err != nil || got != string(want) {
		t.Errorf("cluster schema differs from %s (go test ./schema -update to accept): %v\n%s", golden, err, got)
	}

	// One event on each shard, through its first replica's local table.
	for i, s := range []int{1, 2} {
		node := db.Cluster.Shard(s)[0]
		testenv.Exec(t, db.Node(node), fmt.Sprintf("INSERT INTO events_local (event_id, type, ts, ad_id, country, ad_format, device, price_micros, received_at) "+
			"SELECT 'e%d', 'click', toDateTime('2026-11-22 10:00:00', 'UTC'), 'ad-1', 'KR', 'banner', 'ios', 1000, now()", i))
	}
	for _, n := range nodes {
		node := db.Node(n)
		deadline := time.Now().Add(30 * time.Second)
		for testenv.QueryString(t, node, "SELECT count() FROM events_local") != "1" || testenv.QueryString(t, node, "SELECT sum(clicks) FROM ad_stats_minute_local") != "1" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the shard's event or its aggregate not there in 30 s", n.Node.Name())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Every replica has its shard's event: any node reads both.
	for _, n := range nodes {
		node := db.Node(n)
		if got := testenv.QueryString(t, node, "SELECT count(), uniqExact(event_id) FROM events"); got != "2\t2" {
			t.Errorf("%s: events through Distributed: %s, want both", n.Node.Name(), got)
		}
		if got := testenv.QueryString(t, node, "SELECT sum(clicks), sum(spend_micros) FROM ad_stats_minute"); got != "2\t2000" {
			t.Errorf("%s: ad_stats_minute through Distributed: %s", n.Node.Name(), got)
		}
	}
	// One version for the cluster, read on a node that did not migrate.
	far := o
	far.HTTP, far.Native = nodes[3].HTTPURL(), nodes[3].NativeAddr()
	m2, err := schema.NewMigrator(ctx, far)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v, dirty, err := m2.Version()
		if err == nil && v == latest && !dirty {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("version on %s: %d %v %v, want %d", nodes[3].Node.Name(), v, dirty, err, latest)
		}
	}
	// 18.16 nodes keep no sketch view; migrated on a modern server
	// (pretended) every node gets it back.
	if hasSketchView(t, db.Node(nodes[0])) {
		t.Error("top_ads_minute_mv on an 18.16 cluster")
	}
	m3, err := schema.NewMigrator(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	schema.PretendVersion(m3, v2408)
	if err := m3.Up(); err != nil {
		t.Fatal("up on a modern server: ", err)
	}
	for _, n := range nodes {
		if !hasSketchView(t, db.Node(n)) {
			t.Errorf("%s: no top_ads_minute_mv after up on a modern server", n.Node.Name())
		}
	}
	if err := m.Down(); err != nil {
		t.Fatal("down: ", err)
	}
	for _, n := range nodes {
		if left := testenv.QueryString(t, db.Node(n), "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name != '"+schema.MigrationsTable+"'"); left != "0" {
			t.Errorf("%s: %s tables left after down", n.Node.Name(), left)
		}
	}
}
