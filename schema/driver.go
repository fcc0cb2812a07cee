package schema

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang-migrate/migrate/v4/database"

	"github.com/clickagg/clickagg/chclient"
)

// MigrationsTable records applied versions, as golang-migrate's own
// clickhouse driver does (latest row by sequence wins).
const MigrationsTable = "schema_migrations"

// statementTimeout bounds one migration statement.
const statementTimeout = 10 * time.Minute

func init() {
	// Lets the migrate CLI and tests use "chv2://host:9000/db?username=..".
	database.Register("chv2", &Driver{})
}

// Driver is a golang-migrate database.Driver over clickhouse-go/v2.
type Driver struct {
	conn   driver.Conn
	target Target
	owned  bool // Close closes conn
	locked atomic.Bool
	server *chclient.Version // serverVersion's answer
}

// WithConn returns a driver on an open connection (closed by Close) to
// t.Database and makes sure the migrations table exists. On a cluster that
// table is one replicated table on every node (one ZooKeeper path for all),
// so that the cluster has one version record. Like kafka_inbox_progress it
// is small: a node killed during an INSERT restarts with that part
// unexpected, over the default half of the table's rows, and would refuse
// to start; with the ratio at 1 it sets the part aside (detached/ignored_).
func WithConn(ctx context.Context, conn driver.Conn, t Target) (*Driver, error) {
	d := &Driver{conn: conn, target: t, owned: true}
	ddl := "CREATE TABLE IF NOT EXISTS " + MigrationsTable + " (version Int64, dirty UInt8, sequence UInt64) ENGINE = MergeTree ORDER BY sequence"
	if t.Cluster != "" {
		ddl = fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s (version Int64, dirty UInt8, sequence UInt64) "+
			"ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/%[1]s/%[2]s', '{replica}') ORDER BY sequence "+
			"SETTINGS replicated_max_ratio_of_wrong_parts = 1", t.Database, MigrationsTable, t.Cluster)
	}
	if err := conn.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	return d, nil
}

// Open implements database.Driver for URLs chv2://user:pass@host:port/db.
func (*Driver) Open(rawURL string) (database.Driver, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("migration url: %w", err)
	}
	o := chclient.Options{Native: u.Host, Database: strings.TrimPrefix(u.Path, "/"), Cluster: u.Query().Get("x-cluster")}
	if u.User != nil {
		o.User = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := chclient.EnsureDatabase(ctx, o); err != nil {
		return nil, err
	}
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		return nil, err
	}
	d, err := WithConn(ctx, conn, Target{Cluster: o.Cluster, Database: o.WithDefaults().Database})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return d, nil
}

// Close implements database.Driver.
func (d *Driver) Close() error {
	if d.owned {
		return d.conn.Close()
	}
	return nil
}

// Lock implements database.Driver within this process only: ClickHouse has
// no lock primitive, so run one migrator at a time (serve --migrate on a
// single instance, or a separate migrate job).
func (d *Driver) Lock() error {
	if !d.locked.CompareAndSwap(false, true) {
		return database.ErrLocked
	}
	return nil
}

// Unlock implements database.Driver.
func (d *Driver) Unlock() error {
	if !d.locked.CompareAndSwap(true, false) {
		return database.ErrNotLocked
	}
	return nil
}

// Run implements database.Driver: one statement per migration file, since
// ClickHouse refuses multi-statement requests, run only where its guard
// holds (guard.go) and rendered for the target (Render: on a cluster one
// statement may become two).
func (d *Driver) Run(migration io.Reader) error {
	b, err := io.ReadAll(migration)
	if err != nil {
		return fmt.Errorf("read migration: %w", err)
	}
	g, stmt, err := splitGuard(string(b))
	if err != nil {
		return database.Error{OrigErr: err, Err: "migration guard not read", Query: b}
	}
	if g != nil {
		v, err := d.serverVersion()
		if err != nil {
			return database.Error{OrigErr: err, Err: "migration guard not checked", Query: b}
		}
		if !g.holds(v) {
			return nil
		}
	}
	return apply(context.Background(), d.conn, stmt, d.target)
}

// apply renders one migration statement for t and runs it.
func apply(ctx context.Context, conn driver.Conn, stmt string, t Target) error {
	if strings.TrimSpace(strings.TrimSuffix(stmt, ";")) == "" {
		return nil
	}
	stmts, err := Render(stmt, t)
	if err != nil {
		return database.Error{OrigErr: err, Err: "migration not rendered", Query: []byte(stmt)}
	}
	for _, q := range stmts {
		ctx, cancel := context.WithTimeout(ctx, statementTimeout)
		err := conn.Exec(ctx, q)
		cancel()
		if err != nil {
			return database.Error{OrigErr: err, Err: "migration failed", Query: []byte(q)}
		}
	}
	return nil
}

// serverVersion is the server's version, asked once (guards are checked
// against the node migrated through; a cluster's nodes run one version).
func (d *Driver) serverVersion() (chclient.Version, error) {
	if d.server == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v, err := chclient.ServerVersion(ctx, d.conn)
		if err != nil {
			return chclient.Version{}, err
		}
		d.server = &v
	}
	return *d.server, nil
}

// SetVersion implements database.Driver. It uses INSERT ... SELECT, which
// runs wholly on the server: an INSERT with VALUES hangs against 18.16 over
// clickhouse-go/v2, and a batch's context watchdog can close a pooled
// connection after Send returns when its context is cancelled right away.
func (d *Driver) SetVersion(version int, dirty bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var dv uint8
	if dirty {
		dv = 1
	}
	err := d.conn.Exec(ctx, "INSERT INTO "+MigrationsTable+" (version, dirty, sequence) SELECT toInt64(?), toUInt8(?), toUInt64(?)",
		int64(version), dv, uint64(time.Now().UnixNano()))
	if err != nil {
		return fmt.Errorf("set version: %w", err)
	}
	return nil
}

// Version implements database.Driver.
func (d *Driver) Version() (int, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := d.conn.Query(ctx, "SELECT version, dirty FROM "+MigrationsTable+" ORDER BY sequence DESC LIMIT 1")
	if err != nil {
		return 0, false, fmt.Errorf("read version: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return database.NilVersion, false, rows.Err()
	}
	var v int64
	var dirty uint8
	if err := rows.Scan(&v, &dirty); err != nil {
		return 0, false, fmt.Errorf("read version: %w", err)
	}
	return int(v), dirty == 1, nil
}

// Drop implements database.Driver: drops every table of the database.
func (d *Driver) Drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := d.conn.Query(ctx, "SELECT name FROM system.tables WHERE database = currentDatabase()")
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("list tables: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	on := ""
	if d.target.Cluster != "" {
		on = " ON CLUSTER " + d.target.Cluster
	}
	for _, n := range names {
		if err := d.conn.Exec(ctx, "DROP TABLE IF EXISTS "+chclient.QuoteIdent(d.target.Database)+"."+chclient.QuoteIdent(n)+on); err != nil {
			return fmt.Errorf("drop %s: %w", n, err)
		}
	}
	return nil
}
