// Package chclient holds the ClickHouse connection settings shared by every
// command and opens clickhouse-go/v2 native connections from them (used for
// DDL and queries; inserts go through ingestor's HTTP transport).
package chclient

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
)

// Options locate a ClickHouse server. The zero value is a local server's
// default ports and the clickagg database.
type Options struct {
	HTTP string // HTTP interface URL; default http://127.0.0.1:8123
	// Native is the native protocol's host:port, default 127.0.0.1:9000;
	// on a cluster a comma-separated list, tried in order for every new
	// connection, so schema, queries and the Kafka drain go on when a node
	// is down.
	Native      string
	Database    string        // default "clickagg"
	User        string        // default "default"
	Password    string        // never logged
	DialTimeout time.Duration // default 5 s
	TLS         *tls.Config   // nil: plain TCP; also used by https:// inserts
	// Cluster names the ClickHouse cluster (remote_servers) the database
	// lives on; empty: one server. DDL then runs ON CLUSTER, and the
	// tables are replicated and distributed (schema.Render).
	Cluster string
	// Shards are a cluster's HTTP interfaces, shard by shard in the order
	// of remote_servers, each shard's replicas in order: where inserts go,
	// into the local tables. HTTP is then the first one's.
	Shards [][]string
}

// ParseShards reads shards as --clickhouse-shards takes them: shards
// separated by spaces (or semicolons), a shard's replicas by commas.
func ParseShards(s string) ([][]string, error) {
	var out [][]string
	for _, shard := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ';' }) {
		var replicas []string
		for _, u := range strings.Split(shard, ",") {
			if err := CheckURL("Shards", u); err != nil {
				return nil, err
			}
			replicas = append(replicas, u)
		}
		out = append(out, replicas)
	}
	return out, nil
}

// FormatShards writes shards as ParseShards reads them.
func FormatShards(shards [][]string) string {
	parts := make([]string, len(shards))
	for i, r := range shards {
		parts[i] = strings.Join(r, ",")
	}
	return strings.Join(parts, " ")
}

// Defaults of Options: a local server's default ports.
const (
	DefaultHTTP        = "http://127.0.0.1:8123"
	DefaultNative      = "127.0.0.1:9000"
	DefaultDatabase    = "clickagg"
	DefaultUser        = "default"
	DefaultDialTimeout = 5 * time.Second
)

// WithDefaults fills the zero fields.
func (o Options) WithDefaults() Options {
	o.HTTP = cmp.Or(o.HTTP, DefaultHTTP)
	o.Native = cmp.Or(o.Native, DefaultNative)
	o.Database = cmp.Or(o.Database, DefaultDatabase)
	o.User = cmp.Or(o.User, DefaultUser)
	o.DialTimeout = clickagg.PositiveOr(o.DialTimeout, DefaultDialTimeout)
	return o
}

// Validate checks complete Options: an http(s) URL, a host:port, a
// database name, a positive dial timeout.
func (o Options) Validate() error {
	var shards error
	for _, shard := range o.Shards {
		if len(shard) == 0 {
			shards = &clickagg.ConfigError{Field: "Shards", Value: `""`, Want: "URL[,URL...] per shard"}
		}
		for _, u := range shard {
			shards = clickagg.FirstError(shards, CheckURL("Shards", u))
		}
	}
	if len(o.Shards) > 0 && o.Cluster == "" {
		shards = &clickagg.ConfigError{Field: "Shards", Value: FormatShards(o.Shards), Want: "a cluster too (Cluster)"}
	}
	return clickagg.FirstError(
		shards,
		CheckURL("HTTP", o.HTTP),
		CheckHostPorts("Native", o.Native),
		clickagg.NotEmpty("Database", o.Database),
		clickagg.NotEmpty("User", o.User),
		clickagg.Positive("DialTimeout", o.DialTimeout),
	)
}

// CheckURL refuses anything but an http(s)://host[:port] URL.
func CheckURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &clickagg.ConfigError{Field: field, Value: strconv.Quote(s), Want: "an http:// or https:// URL with a host"}
	}
	return nil
}

// CheckHostPorts refuses anything but host:port[,host:port...].
func CheckHostPorts(field, s string) error {
	for _, a := range strings.Split(s, ",") {
		if CheckHostPort(field, a) != nil {
			return &clickagg.ConfigError{Field: field, Value: strconv.Quote(s), Want: "host:port[,host:port...]"}
		}
	}
	return nil
}

// CheckHostPort refuses anything but host:port with a port number.
func CheckHostPort(field, s string) error {
	_, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return &clickagg.ConfigError{Field: field, Value: strconv.Quote(s), Want: "host:port"}
	}
	return nil
}

// Open returns a native-protocol connection pool to o.Database that
// connects on first use, so a server that is down at start only fails the
// calls made while it is down. Deadlines of each call's ctx become I/O
// deadlines.
func Open(o Options) (driver.Conn, error) {
	o = o.WithDefaults()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             strings.Split(o.Native, ","),
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
		Auth:             clickhouse.Auth{Database: o.Database, Username: o.User, Password: o.Password},
		DialTimeout:      o.DialTimeout,
		TLS:              o.TLS,
		ReadTimeout:      5 * time.Minute, // a safety net; callers bound queries by ctx
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Native, err)
	}
	return conn, nil
}

// ReadSettings is the SETTINGS clause for a query of o's database: on a
// cluster, reads through Distributed tables go to each shard's first
// replica (load_balancing in_order) as inserts do (ingestor.Failover starts
// there), so an answer includes what was just committed, where a random
// replica may not have fetched it yet. Empty on one server. (18.16's native
// protocol carries only numeric settings, hence SQL.)
func (o Options) ReadSettings() string {
	if o.Cluster == "" {
		return ""
	}
	return " SETTINGS load_balancing = 'in_order'"
}

// WriteContext is ctx for statements of o's database that write: on a
// cluster an INSERT into a Distributed table returns only once every shard
// has its rows (18.16 queues them and returns at once by default). ctx
// itself on one server.
func (o Options) WriteContext(ctx context.Context) context.Context {
	if o.Cluster == "" {
		return ctx
	}
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
}

// OpenNative is Open followed by a ping.
func OpenNative(ctx context.Context, o Options) (driver.Conn, error) {
	o = o.WithDefaults()
	conn, err := Open(o)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping clickhouse %s: %w", o.Native, err)
	}
	return conn, nil
}

// OpenShards opens a connection pool per shard of o.Cluster (Open, lazy),
// to the shard's replicas in order, as remote_servers on the node behind
// conn names them (host and native port), with o's database, credentials
// and TLS: for work that belongs on each shard's own tables. The caller
// closes them.
func OpenShards(ctx context.Context, conn driver.Conn, o Options) ([]driver.Conn, error) {
	rows, err := conn.Query(ctx, "SELECT shard_num, host_name, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", o.Cluster)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", o.Cluster, err)
	}
	defer rows.Close()
	var addrs [][]string
	for rows.Next() {
		var (
			shard uint32
			host  string
			port  uint16
		)
		if err := rows.Scan(&shard, &host, &port); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", o.Cluster, err)
		}
		for len(addrs) < int(shard) {
			addrs = append(addrs, nil)
		}
		addrs[shard-1] = append(addrs[shard-1], net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", o.Cluster, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("cluster %s: not in remote_servers", o.Cluster)
	}
	var conns []driver.Conn
	for i, a := range addrs {
		so := o
		so.Native, so.Cluster, so.Shards = strings.Join(a, ","), "", nil
		var c driver.Conn
		err := fmt.Errorf("cluster %s: shard %d has no replica", o.Cluster, i+1)
		if len(a) > 0 {
			c, err = Open(so)
		}
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// EnsureDatabase creates o.Database when it does not exist. It connects to
// the default database, since a connection to a missing one is refused.
func EnsureDatabase(ctx context.Context, o Options) error {
	o = o.WithDefaults()
	target := o.Database
	o.Database = "default"
	conn, err := OpenNative(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	ddl := "CREATE DATABASE IF NOT EXISTS " + QuoteIdent(target)
	if o.Cluster != "" {
		ddl += " ON CLUSTER " + QuoteIdent(o.Cluster)
	}
	if err := conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create database %s: %w", target, err)
	}
	return nil
}

// QuoteIdent quotes a ClickHouse identifier with backquotes.
func QuoteIdent(s string) string {
	b := []byte{'`'}
	for i := 0; i < len(s); i++ {
		if s[i] == '`' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(append(b, '`'))
}

// Version is a server version, e.g. 18.16.1 or 24.8.14.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion parses the text of SELECT version().
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("server version %q: not recognized", s)
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

// Strings returns the one String column of query's rows.
func Strings(ctx context.Context, conn driver.Conn, query string, args ...any) ([]string, error) {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ServerVersion asks the server its version.
func ServerVersion(ctx context.Context, conn driver.Conn) (Version, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, fmt.Errorf("server version: %w", err)
	}
	return ParseVersion(s)
}
