// Package kafkaengine is the Kafka path through ClickHouse: a Kafka engine
// table consumes the topic and a materialized view lands every message,
// unparsed, in kafka_inbox; a Drain then passes the inbox through the
// collector, so Kafka events get the same checks, dedup and dead letters as
// HTTP ones.
//
// Why raw: on ClickHouse 18.16 a message that its input format cannot parse
// blocks its partition for good (kafka_skip_broken_messages does not exist
// there), and materialized views do not cascade from a view's TO table, so a
// view parsing straight into events would feed no aggregate. A one-String
// row cannot fail to parse: modern servers read it with RawBLOB; 18.16 with
// CSV under the kafka_engine system profile of services (DEL as delimiter,
// quoting off, row errors skipped; see services/clickhouse.go).
package kafkaengine

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/schema"
)

// Names of what Enable creates.
const (
	QueueTable = "kafka_queue"    // ENGINE = Kafka
	QueueView  = "kafka_queue_mv" // kafka_queue → kafka_inbox
)

// Config is the consumer ClickHouse runs.
type Config struct {
	Brokers string // comma-separated host:port, as ClickHouse reaches them
	Topic   string
	Group   string // consumer group; default "clickagg"
	// Consumers is kafka_num_consumers: at most the topic's partitions and
	// the server's cores. Default 1.
	Consumers int
	// MaxBlockSize is kafka_max_block_size: messages per block at most
	// (a block lands every stream_flush_interval_ms anyway). Default 65536.
	MaxBlockSize int
}

// Defaults of Config.
const (
	DefaultTopic        = "ad-events"
	DefaultGroup        = "clickagg"
	DefaultConsumers    = 1
	DefaultMaxBlockSize = 65536
)

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	c.Group = cmp.Or(c.Group, DefaultGroup)
	c.Consumers = cmp.Or(c.Consumers, DefaultConsumers)
	c.MaxBlockSize = cmp.Or(c.MaxBlockSize, DefaultMaxBlockSize)
	return c
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate reports the first setting that cannot be used; Enable fills
// zero fields with the defaults first.
func (c Config) Validate() error {
	var err error
	switch {
	case c.Brokers == "":
		err = &clickagg.ConfigError{Field: "Brokers", Value: `""`, Want: "host:port[,host:port...]"}
	case strings.ContainsAny(c.Brokers, `'\ `):
		err = &clickagg.ConfigError{Field: "Brokers", Value: strconv.Quote(c.Brokers), Want: "host:port[,host:port...]"}
	case !nameRE.MatchString(c.Topic):
		err = &clickagg.ConfigError{Field: "Topic", Value: strconv.Quote(c.Topic), Want: "letters, digits, '.', '_' and '-' only"}
	case !nameRE.MatchString(c.Group):
		err = &clickagg.ConfigError{Field: "Group", Value: strconv.Quote(c.Group), Want: "letters, digits, '.', '_' and '-' only"}
	}
	return clickagg.FirstError(err,
		clickagg.Between("Consumers", c.Consumers, 1, 256),
		clickagg.Positive("MaxBlockSize", c.MaxBlockSize),
	)
}

// place is where the engine's tables are created: this server, or every
// node of a cluster (ON CLUSTER, names qualified by the database, as
// schema.Render writes them).
type place struct{ cluster, db string }

func locate(ctx context.Context, conn driver.Conn, cluster string) (place, error) {
	p := place{cluster: cluster}
	if cluster == "" {
		return p, nil
	}
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&p.db); err != nil {
		return p, fmt.Errorf("read database: %w", err)
	}
	return p, nil
}

// table names t in DDL: qualified by the database on a cluster.
func (p place) table(t string) string {
	if p.cluster == "" {
		return t
	}
	return p.db + "." + t
}

// on is the ON CLUSTER clause, if any.
func (p place) on() string {
	if p.cluster == "" {
		return ""
	}
	return " ON CLUSTER " + p.cluster
}

// queueDDL is the Kafka engine table for the server's version.
func queueDDL(c Config, v chclient.Version, p place) string {
	// RawBLOB takes a message as it is and cannot fail; the flush interval
	// is what 18.16 takes from the profile's stream_flush_interval_ms.
	format := `kafka_format = 'RawBLOB', kafka_flush_interval_ms = 500`
	if !v.AtLeast(22, 1) {
		// The CSV settings of the kafka_engine system profile make each
		// message one field; the delimiter ends a message.
		format = `kafka_format = 'CSV', kafka_row_delimiter = '\n'`
	}
	return fmt.Sprintf("CREATE TABLE %s (raw String) ENGINE = Kafka SETTINGS "+
		"kafka_broker_list = '%s', kafka_topic_list = '%s', kafka_group_name = '%s', %s, "+
		"kafka_num_consumers = %d, kafka_max_block_size = %d",
		p.table(QueueTable)+p.on(), c.Brokers, c.Topic, c.Group, format, c.Consumers, c.MaxBlockSize)
}

// viewDDL lands every consumed block in kafka_inbox: on a cluster in the
// consuming node's kafka_inbox_local, from where it replicates within the
// shard (not through the Distributed table's asynchronous queue).
func viewDDL(p place) string {
	inbox := p.table("kafka_inbox")
	if p.cluster != "" {
		inbox += schema.LocalSuffix
	}
	return "CREATE MATERIALIZED VIEW " + p.table(QueueView) + p.on() + " TO " + inbox +
		" AS SELECT now() AS received_at, rand64() AS id, raw FROM " + p.table(QueueTable)
}

// Enable creates the Kafka engine table and its view, replacing them if
// they exist with other settings. The group's committed offsets live in
// Kafka, so re-enabling with the same group resumes where it stopped. The
// schema migrations must have run (kafka_inbox).
//
// With cluster set (the remote_servers name the database lives on) both
// are created on every node: the nodes consume as one group, Kafka
// spreading the topic's partitions over every node's consumers, and each
// lands what it consumed in its shard.
func Enable(ctx context.Context, conn driver.Conn, cluster string, c Config) error {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return err
	}
	v, err := chclient.ServerVersion(ctx, conn)
	if err != nil {
		return err
	}
	p, err := locate(ctx, conn, cluster)
	if err != nil {
		return err
	}
	if cur, ok, err := Current(ctx, conn); err != nil {
		return err
	} else if ok && cur == c {
		return nil
	}
	if err := Disable(ctx, conn, cluster); err != nil {
		return err
	}
	if err := conn.Exec(ctx, queueDDL(c, v, p)); err != nil {
		return fmt.Errorf("create %s: %w", QueueTable, err)
	}
	if err := conn.Exec(ctx, viewDDL(p)); err != nil {
		return fmt.Errorf("create %s: %w", QueueView, err)
	}
	return nil
}

// Disable drops the view first, so no block is consumed without a place to
// land, then the Kafka table (on every node of cluster, when set). The
// inbox keeps what landed; the drain goes on.
func Disable(ctx context.Context, conn driver.Conn, cluster string) error {
	p, err := locate(ctx, conn, cluster)
	if err != nil {
		return err
	}
	for _, t := range []string{QueueView, QueueTable} {
		if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+p.table(t)+p.on()); err != nil {
			return fmt.Errorf("drop %s: %w", t, err)
		}
	}
	return nil
}

// Restart re-creates the Kafka engine table and its view with their current
// settings, so ClickHouse starts a new consumer: 18.16's engine can sit on a
// partition without consuming. The group's committed offsets live in Kafka,
// so it resumes where it stopped; a block consumed but not committed comes
// again and the drain's dedup counts it once. Nothing to do when disabled.
func Restart(ctx context.Context, conn driver.Conn, cluster string) error {
	c, ok, err := Current(ctx, conn)
	if err != nil || !ok {
		return err
	}
	if err := Disable(ctx, conn, cluster); err != nil {
		return err
	}
	return Enable(ctx, conn, cluster, c)
}

var settingRE = regexp.MustCompile(`(kafka_[a-z_]+) = ('[^']*'|\d+)`)

// Current reads the settings of the Kafka engine table from its definition;
// ok is false when Kafka is not enabled.
func Current(ctx context.Context, conn driver.Conn) (c Config, ok bool, err error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", QueueTable).Scan(&n); err != nil {
		return c, false, fmt.Errorf("find %s: %w", QueueTable, err)
	}
	if n == 0 {
		return c, false, nil
	}
	var ddl string
	if err := conn.QueryRow(ctx, "SHOW CREATE TABLE "+QueueTable).Scan(&ddl); err != nil {
		return c, false, fmt.Errorf("read %s: %w", QueueTable, err)
	}
	for _, m := range settingRE.FindAllStringSubmatch(ddl, -1) {
		val := strings.Trim(m[2], "'")
		switch m[1] {
		case "kafka_broker_list":
			c.Brokers = val
		case "kafka_topic_list":
			c.Topic = val
		case "kafka_group_name":
			c.Group = val
		case "kafka_num_consumers":
			fmt.Sscan(val, &c.Consumers)
		case "kafka_max_block_size":
			fmt.Sscan(val, &c.MaxBlockSize)
		}
	}
	return c, true, nil
}
