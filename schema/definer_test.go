package schema

import (
	"io/fs"
	"strings"
	"testing"
)

// The view DDL is the same on every server: no DEFINER and no SQL SECURITY
// (see definer.go), so no view depends on the user who migrated.
func TestViewsNameNoDefiner(t *testing.T) {
	files, err := fs.Glob(migrations, "migrations/*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	views := 0
	for _, f := range files {
		b, err := fs.ReadFile(migrations, f)
		if err != nil {
			t.Fatal(err)
		}
		sql := strings.ToUpper(string(b))
		if !strings.Contains(sql, "CREATE MATERIALIZED VIEW") {
			continue
		}
		views++
		if strings.Contains(sql, "DEFINER") || strings.Contains(sql, "SQL SECURITY") {
			t.Errorf("%s names a definer or SQL security", f)
		}
	}
	if views < 5 {
		t.Errorf("%d materialized views in the migrations", views)
	}
}

// definerOf reads the definer from system.tables' text as 24.x writes it
// for a view created with (or given) one.
func TestDefinerOf(t *testing.T) {
	for create, want := range map[string]string{
		"CREATE MATERIALIZED VIEW clickagg.ad_stats_minute_mv TO clickagg.ad_stats_minute (`minute` DateTime('UTC')) DEFINER = clickagg SQL SECURITY DEFINER AS SELECT 1": "clickagg",
		"CREATE MATERIALIZED VIEW db.mv TO db.t (`x` Int32) DEFINER = `user.with.dots` SQL SECURITY DEFINER AS SELECT x FROM db.s":                                        "`user.with.dots`",
		"CREATE MATERIALIZED VIEW db.mv TO db.t (`x` Int32) SQL SECURITY NONE AS SELECT x FROM db.s":                                                                      "",
		"CREATE MATERIALIZED VIEW db.mv TO db.t (`x` Int32) AS SELECT x FROM db.s":                                                                                        "",
	} {
		if got := definerOf(create); got != want {
			t.Errorf("definerOf(%q) = %q, want %q", create, got, want)
		}
	}
}
