package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/kafkaengine"
)

// kafkaConfig is what the kafka command is told.
type kafkaConfig struct {
	ClickHouse chclient.Options
	Engine     kafkaengine.Config
}

func setupKafka(f *flags) func(ctx context.Context, stdout, stderr io.Writer) error {
	c := kafkaConfig{Engine: kafkaengine.Config{}.WithDefaults()}
	f.root = &c
	f.clickhouse(&c.ClickHouse)
	e := &c.Engine
	f.v(&e.Brokers, "brokers", "CLICKAGG_KAFKA_BROKERS", "Kafka brokers as ClickHouse reaches them, host:port[,host:port] (verify, status: as this machine reaches them; default the ones ClickHouse uses)")
	f.v(&e.Topic, "topic", "CLICKAGG_KAFKA_TOPIC", "topic of JSON events, one per message")
	f.v(&e.Group, "group", "CLICKAGG_KAFKA_GROUP", "consumer group of ClickHouse's Kafka engine")
	f.v(&e.Consumers, "consumers", "CLICKAGG_KAFKA_CONSUMERS", "kafka_num_consumers: consumers in ClickHouse (at most the partitions and its cores)")
	f.v(&e.MaxBlockSize, "block-size", "CLICKAGG_KAFKA_BLOCK_SIZE", "kafka_max_block_size: messages per block at most")
	var from, to string
	var fix bool
	f.v(&from, "from", "", "verify: start of the range of message timestamps, RFC 3339 (default: an hour before --to)")
	f.v(&to, "to", "", "verify: end of the range, RFC 3339 (default: now)")
	f.v(&fix, "fix", "", "verify: land the messages missing from kafka_inbox so that serve drains them")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		if err := f.check(c.ClickHouse.Validate()); err != nil {
			return err
		}
		var start, end time.Time
		switch f.arg(0) {
		case "enable":
			if err := f.check(clickagg.Within("Engine", e.Validate())); err != nil {
				return err
			}
		case "verify":
			end = time.Now()
			if to != "" {
				var err error
				if end, err = time.Parse(time.RFC3339, to); err != nil {
					return usagef("--to %q: want an RFC 3339 time", to)
				}
			}
			start = end.Add(-time.Hour)
			if from != "" {
				var err error
				if start, err = time.Parse(time.RFC3339, from); err != nil {
					return usagef("--from %q: want an RFC 3339 time", from)
				}
			}
		case "disable", "status":
		default:
			return usagef("want enable, disable, status or verify, not %q", f.arg(0))
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		conn, err := chclient.Open(c.ClickHouse)
		if err != nil {
			return err
		}
		defer conn.Close()
		switch f.arg(0) {
		case "enable":
			if err := kafkaengine.Enable(ctx, conn, c.ClickHouse.Cluster, *e); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "ClickHouse consumes %s from %s as group %s into %s.kafka_inbox; 'clickagg serve' drains it\n", e.Topic, e.Brokers, e.Group, c.ClickHouse.Database)
		case "disable":
			if err := kafkaengine.Disable(ctx, conn, c.ClickHouse.Cluster); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "Kafka engine table dropped; kafka_inbox keeps what landed")
		case "verify":
			// --brokers, when given, is how this machine reaches them.
			rep, err := kafkaengine.VerifyTopic(ctx, conn, c.ClickHouse.Cluster, e.Brokers, start, end, fix)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, rep.String())
		case "status":
			b, _ := json.MarshalIndent(kafkaengine.Status(ctx, conn, e.Brokers), "", "  ")
			fmt.Fprintln(stdout, string(b))
		}
		return nil
	}
}
