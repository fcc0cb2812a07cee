package server

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/claims"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/lease"
	"github.com/clickagg/clickagg/queryapi"
	"github.com/clickagg/clickagg/reconcile"
)

// Defaults of the settings that belong to the server itself; the others
// are the packages' own (ingestor.DefaultLinger, ...).
const (
	DefaultListen              = "127.0.0.1:8080"
	DefaultRedisAddr           = "127.0.0.1:6379"
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultDeadLetterRetention = 30 * 24 * time.Hour
	DefaultKafkaRestartAfter   = 2 * time.Minute
	DefaultKafkaVerifyEvery    = 10 * time.Minute
	DefaultKafkaVerifyWindow   = 15 * time.Minute
	DefaultKafkaInboxRetention = 24 * time.Hour
)

// The values of Config.ClickHouseCompression.
const (
	CompressionAuto = "auto" // none when every HTTP interface inserted into is on a loopback host, else lz4
	CompressionLZ4  = "lz4"  // ClickHouse's LZ4 framing (decompress=1): less bandwidth for CPU
	CompressionNone = "none" // blocks as they are

	DefaultClickHouseCompression = CompressionAuto
)

// kafkaMonitorEvery is how often the Kafka state and lag are refreshed.
const kafkaMonitorEvery = 2 * time.Second

// Config is everything a Server is told. Start from DefaultConfig: Open
// validates the whole of it, and zero sizes are refused there.
type Config struct {
	Listen          string        // API and collector address, host:port (port 0: any free one)
	DebugListen     string        // Go's pprof profiles at /debug/pprof/; empty: off
	ShutdownTimeout time.Duration // drain requests and flush buffered events
	Migrate         bool          // apply the embedded migrations in Open

	// ClickHouseCompression is how inserted blocks travel: CompressionAuto,
	// CompressionLZ4 or CompressionNone (CompressInserts resolves it).
	ClickHouseCompression string

	ClickHouse chclient.Options
	Redis      RedisOptions
	Ingest     ingestor.Options
	Collector  collector.Options
	Cache      cache.Options
	Dedup      dedup.Options
	Auth       queryapi.AuthOptions
	// SharedDedup holds event ids across the instances on one database in
	// Redis (Claims), so that a resend to another instance counts once at
	// once; ingest answers 503 while Redis is out of reach.
	SharedDedup bool
	Claims      claims.Options
	// ZooKeeper is the cluster's ZooKeeper (or Keeper),
	// host:port[,host:port...]; with SharedDedup on a cluster the lease
	// lives there, and it is needed then.
	ZooKeeper string
	// LeaseTTL, with SharedDedup: scheduled reconciliation, Kafka
	// verification and the inbox drain run on one instance at a time, under
	// a lease (in Redis, or in ZooKeeper on a cluster, as the session
	// timeout) that outlives a dead holder this long.
	LeaseTTL time.Duration

	// NoRollups answers questions from the minute cubes only (the planner
	// off), e.g. to compare, or while a rollup is being rebuilt.
	NoRollups bool

	Reconcile   reconcile.SchedulerOptions
	NoReconcile bool // no scheduled reconciliation (cron runs `clickagg reconcile`)

	Kafka KafkaOptions

	// DeadLetterRetention is how long dead letters are kept; whole days
	// are dropped.
	DeadLetterRetention time.Duration

	// Generate, when its Load.Rate is not 0, posts generated traffic to
	// the server itself (make run's demo).
	Generate Generate

	Logger   *slog.Logger // default: discard
	Progress io.Writer    // the generator's progress lines; nil: none
}

// RedisOptions is how the server reaches Redis (the query cache).
type RedisOptions struct {
	Addr     string // host:port
	User     string // ACL user
	Password string // never logged
	DB       int
	TLS      *tls.Config // nil: plain TCP
}

// KafkaOptions are the server's side of the Kafka path (`clickagg kafka
// enable` sets up ClickHouse's side).
type KafkaOptions struct {
	// Brokers as this process reaches them, for the lag and verification;
	// empty: the ones ClickHouse uses.
	Brokers string
	// RestartAfter: restart ClickHouse's Kafka engine when the group has
	// lag and commits nothing for this long; 0: never.
	RestartAfter time.Duration
	// VerifyEvery: how often the topic is compared with kafka_inbox and
	// lost messages landed (0: never); VerifyWindow how much it reads back.
	VerifyEvery, VerifyWindow time.Duration
	// InboxRetention is how long drained messages stay in kafka_inbox.
	InboxRetention time.Duration
	Drain          kafkaengine.DrainOptions
}

// Generate is the built-in traffic generator. Load.Target is set by the
// server.
type Generate struct {
	Source generator.Options
	Load   generator.LoadOptions
}

// DefaultConfig is the configuration `clickagg serve` starts from: every
// field set, from the packages' exported defaults.
func DefaultConfig() Config {
	c := Config{
		Listen:          DefaultListen,
		ShutdownTimeout: DefaultShutdownTimeout,
		ClickHouse:      chclient.Options{}.WithDefaults(),
		Redis:           RedisOptions{Addr: DefaultRedisAddr},
		Ingest:          ingestor.Options{}.WithDefaults(),
		Collector:       collector.Options{}.WithDefaults(),
		Cache:           cache.Options{LocalTTL: cache.DefaultLocalTTL}.WithDefaults(),
		Dedup:           dedup.Options{}.WithDefaults(),
		Claims:          claims.Options{}.WithDefaults(),
		LeaseTTL:        lease.DefaultTTL,
		Auth:            queryapi.AuthOptions{MaxConcurrent: queryapi.DefaultMaxConcurrent},
		Reconcile:       reconcile.SchedulerOptions{Fix: reconcile.DefaultFix}.WithDefaults(),
		Kafka: KafkaOptions{
			RestartAfter:   DefaultKafkaRestartAfter,
			VerifyEvery:    DefaultKafkaVerifyEvery,
			VerifyWindow:   DefaultKafkaVerifyWindow,
			InboxRetention: DefaultKafkaInboxRetention,
			Drain:          kafkaengine.DrainOptions{}.WithDefaults(),
		},
		DeadLetterRetention:   DefaultDeadLetterRetention,
		ClickHouseCompression: DefaultClickHouseCompression,
		Generate:              Generate{Source: generator.Options{}.WithDefaults(), Load: generator.LoadOptions{}.WithDefaults()},
	}
	c.Generate.Load.Rate = 0 // serve generates nothing unless asked
	return c
}

// Validate reports the first setting out of its range as a
// *clickagg.ConfigError whose Field is the path in Config, e.g.
// "Ingest.MaxInflight".
func (c Config) Validate() error {
	debug := error(nil)
	if c.DebugListen != "" {
		debug = chclient.CheckHostPort("DebugListen", c.DebugListen)
	}
	gen := error(nil)
	if c.Generate.Load.Rate != 0 {
		gen = clickagg.FirstError(
			clickagg.Within("Generate.Source", c.Generate.Source.Validate()),
			clickagg.Within("Generate.Load", c.Generate.Load.Validate()),
		)
	}
	shards := error(nil)
	if c.ClickHouse.Cluster != "" && len(c.ClickHouse.Shards) == 0 {
		shards = &clickagg.ConfigError{Field: "ClickHouse.Shards", Value: `""`, Want: "the cluster's HTTP interfaces, shard by shard (a cluster is named)"}
	}
	compression := error(nil)
	switch c.ClickHouseCompression {
	case CompressionAuto, CompressionLZ4, CompressionNone:
	default:
		compression = &clickagg.ConfigError{Field: "ClickHouseCompression", Value: strconv.Quote(c.ClickHouseCompression), Want: "auto, lz4 or none"}
	}
	zk := error(nil)
	switch {
	case c.ZooKeeper != "":
		zk = chclient.CheckHostPorts("ZooKeeper", c.ZooKeeper)
	case c.ClickHouse.Cluster != "" && c.SharedDedup:
		zk = &clickagg.ConfigError{Field: "ZooKeeper", Value: `""`, Want: "the cluster's ZooKeeper, host:port[,host:port...] (the lease of several instances on a cluster lives there)"}
	}
	return clickagg.FirstError(
		chclient.CheckHostPort("Listen", c.Listen),
		shards,
		zk,
		debug,
		clickagg.Positive("ShutdownTimeout", c.ShutdownTimeout),
		compression,
		clickagg.Within("ClickHouse", c.ClickHouse.Validate()),
		clickagg.Within("Redis", c.Redis.Validate()),
		clickagg.Within("Ingest", c.Ingest.Validate()),
		clickagg.Within("Collector", c.Collector.Validate()),
		clickagg.Within("Cache", c.Cache.Validate()),
		clickagg.Within("Dedup", c.Dedup.Validate()),
		clickagg.Within("Claims", c.Claims.Validate()),
		clickagg.AtLeast("LeaseTTL", c.LeaseTTL, time.Second, "a second"),
		clickagg.Within("Auth", c.Auth.Validate()),
		clickagg.Within("Reconcile", c.Reconcile.Validate()),
		clickagg.Within("Kafka", c.Kafka.Validate()),
		clickagg.AtLeast("DeadLetterRetention", c.DeadLetterRetention, 24*time.Hour, "whole days are dropped"),
		gen,
	)
}

// CompressInserts resolves ClickHouseCompression: whether blocks go to
// ClickHouse LZ4-framed. Auto compresses unless every HTTP interface the
// ingest posts to (ClickHouse.HTTP, or on a cluster every URL of
// ClickHouse.Shards) is on a loopback host: there LZ4 costs CPU (16% of
// serve's under ingest load) and saves nothing; across a network it saves
// bandwidth.
func (c Config) CompressInserts() bool {
	switch c.ClickHouseCompression {
	case CompressionNone:
		return false
	case CompressionLZ4:
		return true
	}
	urls := []string{c.ClickHouse.HTTP}
	if c.ClickHouse.Cluster != "" {
		urls = slices.Concat(c.ClickHouse.Shards...)
	}
	for _, u := range urls {
		if !loopback(u) {
			return true
		}
	}
	return false
}

// loopback reports whether URL s names a loopback host: localhost,
// 127.0.0.0/8 or ::1. An unparsable URL does not.
func loopback(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Validate checks a complete RedisOptions.
func (r RedisOptions) Validate() error {
	return clickagg.FirstError(
		chclient.CheckHostPort("Addr", r.Addr),
		clickagg.Between("DB", r.DB, 0, 1<<20),
	)
}

// Validate checks complete KafkaOptions.
func (k KafkaOptions) Validate() error {
	brokers := error(nil)
	if k.Brokers != "" {
		brokers = chclient.CheckHostPorts("Brokers", strings.ReplaceAll(k.Brokers, " ", ""))
	}
	return clickagg.FirstError(brokers,
		clickagg.NonNegative("RestartAfter", k.RestartAfter),
		clickagg.NonNegative("VerifyEvery", k.VerifyEvery),
		clickagg.Positive("VerifyWindow", k.VerifyWindow),
		clickagg.Positive("InboxRetention", k.InboxRetention),
		clickagg.Within("Drain", k.Drain.Validate()),
	)
}

// ClientOptions is the go-redis configuration: the cache bounds each call, so
// go-redis honours those deadlines and fails fast while Redis is down
// instead of retrying.
func (r RedisOptions) ClientOptions() *redis.Options {
	return &redis.Options{
		Addr: r.Addr, Username: r.User, Password: r.Password, DB: r.DB, TLSConfig: r.TLS,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		MaxRetries:            -1,
	}
}
