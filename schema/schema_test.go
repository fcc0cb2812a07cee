package schema_test

import (
	"context"
	"flag"
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
		body := stripQuoted(strings.TrimSpace(string(b)))
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
