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
	HTTP        string        // HTTP interface URL; default http://127.0.0.1:8123
	Native      string        // native protocol host:port; default 127.0.0.1:9000
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
		CheckHostPort("Native", o.Native),
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
		Addr:        []string{o.Native},
		Auth:        clickhouse.Auth{Database: o.Database, Username: o.User, Password: o.Password},
		DialTimeout: o.DialTimeout,
		TLS:         o.TLS,
		ReadTimeout: 5 * time.Minute, // a safety net; callers bound queries by ctx
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

// ServerVersion asks the server its version.
func ServerVersion(ctx context.Context, conn driver.Conn) (Version, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, fmt.Errorf("server version: %w", err)
	}
	return ParseVersion(s)
}
