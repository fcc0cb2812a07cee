package schema

import (
	"fmt"
	"regexp"
	"strings"
)

// LocalSuffix names a table's per-node part on a cluster: events_local holds
// the rows of one shard (replicated within it), events is the Distributed
// table over every shard's events_local. Analysts and the API read the plain
// names, the same SQL on one server and on a cluster.
const LocalSuffix = "_local"

// Target is where migrations run: one server (Cluster empty) or every node
// of a cluster, in Database.
type Target struct {
	Cluster  string
	Database string
}

// shardingKeys are the Distributed tables' sharding keys, used only for rows
// inserted through them (clickagg inserts into the local tables of the
// shard it picks): events by event_id, as the ingestor splits them, so that
// every copy of an event lives on one shard; the rest anywhere.
var shardingKeys = map[string]string{
	"events":           "cityHash64(event_id)",
	"recent_event_ids": "fingerprint",
}

var (
	createTableRE = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+) (\(.*\)) ENGINE = (\w+)(.*)$`)
	createViewRE  = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\s+(.*)$`)
	fromRE        = regexp.MustCompile(`\bFROM (\w+)\b`)
	dropRE        = regexp.MustCompile(`^DROP TABLE IF EXISTS (\w+)$`)
	commentRE     = regexp.MustCompile(`\s+COMMENT\s+'(?:[^'\\]|\\.)*'`)
)

// Render returns the statements that apply one migration statement to t:
// the statement itself on one server. On a cluster, every statement runs ON
// CLUSTER with names qualified by the database, and
//   - a table becomes NAME_local with the Replicated form of its engine
//     (ZooKeeper path per shard, database and table; replica from the
//     macro), plus the Distributed table NAME over it;
//   - a materialized view reads and writes the local tables, so it fires
//     on the replica that takes an insert and its rows replicate with the
//     target's part;
//   - a drop drops both parts.
//
// Any other statement is refused: a migration the renderer does not know
// must not run half-translated on a cluster.
func Render(stmt string, t Target) ([]string, error) {
	stmt = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stmt), ";"))
	if t.Cluster == "" {
		return []string{stmt}, nil
	}
	on := " ON CLUSTER " + t.Cluster
	q := func(name string) string { return t.Database + "." + name }
	if m := createTableRE.FindStringSubmatch(stmt); m != nil {
		name, cols, engine, rest := m[1], m[2], m[3], m[4]
		args, rest, err := engineArgs(rest)
		if err != nil {
			return nil, fmt.Errorf("migration for %s: %w", name, err)
		}
		local := name + LocalSuffix
		replicated := fmt.Sprintf("Replicated%s('/clickhouse/tables/{shard}/%s/%s', '{replica}'", engine, t.Database, local)
		if args != "" {
			replicated += ", " + args
		}
		replicated += ")"
		dist := "Distributed(" + t.Cluster + ", " + t.Database + ", " + local
		if key, ok := shardingKeys[name]; ok {
			dist += ", " + key
		} else {
			dist += ", rand()"
		}
		dist += ")"
		// The local table without column comments: 18.16 refuses a second
		// replica of a table with comments ("Table structure in ZooKeeper is
		// too different from local table structure"). The Distributed table,
		// the one people read, keeps them.
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q(local) + on + " " + commentRE.ReplaceAllString(cols, "") + " ENGINE = " + replicated + rest,
			"CREATE TABLE IF NOT EXISTS " + q(name) + on + " " + cols + " ENGINE = " + dist,
		}, nil
	}
	if m := createViewRE.FindStringSubmatch(stmt); m != nil {
		sel := m[3]
		from := fromRE.FindStringSubmatchIndex(sel)
		if from == nil || len(fromRE.FindAllString(sel, -1)) != 1 {
			return nil, fmt.Errorf("migration for %s: a view must read one table (FROM name)", m[1])
		}
		sel = sel[:from[2]] + q(sel[from[2]:from[3]]+LocalSuffix) + sel[from[3]:]
		return []string{"CREATE MATERIALIZED VIEW IF NOT EXISTS " + q(m[1]) + on + " TO " + q(m[2]+LocalSuffix) + " AS " + sel}, nil
	}
	if m := dropRE.FindStringSubmatch(stmt); m != nil {
		// A view's name_local does not exist: IF EXISTS makes the pair safe.
		return []string{
			"DROP TABLE IF EXISTS " + q(m[1]) + on,
			"DROP TABLE IF EXISTS " + q(m[1]+LocalSuffix) + on,
		}, nil
	}
	return nil, fmt.Errorf("migration %.60q: not a CREATE TABLE, CREATE MATERIALIZED VIEW or DROP TABLE that schema.Render knows for a cluster", stmt)
}

// engineArgs splits the parenthesised engine arguments, if any, from what
// follows them (PARTITION BY, ORDER BY, ...).
func engineArgs(rest string) (args, after string, err error) {
	if !strings.HasPrefix(rest, "(") {
		return "", rest, nil
	}
	depth := 0
	for i, r := range rest {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return rest[1:i], rest[i+1:], nil
			}
		}
	}
	return "", "", fmt.Errorf("unbalanced parentheses in the engine")
}
