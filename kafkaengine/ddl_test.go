package kafkaengine

import (
	"strings"
	"testing"

	"github.com/clickagg/clickagg/chclient"
)

// The modern DDL cannot run here (18.16 only); its text is checked instead.
func TestQueueDDLByVersion(t *testing.T) {
	c := Config{Brokers: "k:9092", Topic: "ad-events"}
	c = c.WithDefaults()
	modern := queueDDL(c, chclient.Version{Major: 24, Minor: 8}, place{})
	for _, want := range []string{"kafka_format = 'RawBLOB'", "kafka_flush_interval_ms = 500", "kafka_broker_list = 'k:9092'", "kafka_group_name = 'clickagg'"} {
		if !strings.Contains(modern, want) {
			t.Errorf("24.8 DDL lacks %s: %s", want, modern)
		}
	}
	old := queueDDL(c, chclient.Version{Major: 18, Minor: 16, Patch: 1}, place{})
	if !strings.Contains(old, `kafka_format = 'CSV', kafka_row_delimiter = '\n'`) || strings.Contains(old, "RawBLOB") || strings.Contains(old, "flush_interval") {
		t.Errorf("18.16 DDL: %s", old)
	}
}

// Like the migrations' views, the inbox view names no definer (see
// schema/definer.go): it works whoever ran kafka enable.
func TestViewDDLNamesNoDefiner(t *testing.T) {
	for _, p := range []place{{}, {cluster: "c", db: "d"}} {
		if v := viewDDL(p); strings.Contains(v, "DEFINER") || strings.Contains(v, "SQL SECURITY") {
			t.Errorf("view DDL: %s", v)
		}
	}
}

// On a cluster every node consumes and lands blocks in its own shard's
// local inbox, not through the Distributed table's queue.
func TestDDLOnCluster(t *testing.T) {
	p := place{cluster: "c", db: "d"}
	c := Config{Brokers: "k:9092"}.WithDefaults()
	if q := queueDDL(c, chclient.Version{Major: 18, Minor: 16}, p); !strings.HasPrefix(q, "CREATE TABLE d.kafka_queue ON CLUSTER c (raw String) ENGINE = Kafka") {
		t.Errorf("queue DDL: %s", q)
	}
	want := "CREATE MATERIALIZED VIEW d.kafka_queue_mv ON CLUSTER c TO d.kafka_inbox_local AS SELECT now() AS received_at, rand64() AS id, raw FROM d.kafka_queue"
	if v := viewDDL(p); v != want {
		t.Errorf("view DDL:\n got %s\nwant %s", v, want)
	}
}
