package schema

import (
	"context"
	"fmt"
	"regexp"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Why clickagg's materialized views name no DEFINER and no SQL SECURITY,
// on any server: since 24.2 ClickHouse can record a view's definer, and
// documents DEFINER = CURRENT_USER, SQL SECURITY DEFINER as a materialized
// view's default, which would tie every INSERT into events to the user who
// migrated (gone or renamed: ingest stops). But the server setting
// ignore_empty_sql_security_in_create_view_query, true by default from its
// introduction (24.2-24.3 backports) to today, makes a view created without
// the clause keep an empty SQL security: no definer, the inserting user's
// own rights, as on 18.16. Pinning DEFINER would create the dependency, and
// SQL SECURITY NONE needs the ALLOW SQL SECURITY NONE grant and is
// deprecated. A server configured with that setting false records the
// migrating user; Definers finds such views so serve can say so.

// definerRE finds the definer in a view's CREATE statement as system.tables
// shows it on modern servers.
var definerRE = regexp.MustCompile("DEFINER = (`[^`]+`|[^\\s]+) SQL SECURITY DEFINER")

// definerOf is the definer user a CREATE statement names, or "".
func definerOf(createQuery string) string {
	m := definerRE.FindStringSubmatch(createQuery)
	if m == nil {
		return ""
	}
	return m[1]
}

// Definers lists the materialized views of conn's database that run as a
// definer user (view → user). Empty on 18.16 and on modern servers with
// their default settings.
func Definers(ctx context.Context, conn driver.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'")
	if err != nil {
		return nil, fmt.Errorf("view definers: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, create string
		if err := rows.Scan(&name, &create); err != nil {
			return nil, fmt.Errorf("view definers: %w", err)
		}
		if d := definerOf(create); d != "" {
			out[name] = d
		}
	}
	return out, rows.Err()
}
