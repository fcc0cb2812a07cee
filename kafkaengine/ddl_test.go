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
	modern := queueDDL(c, chclient.Version{Major: 24, Minor: 8})
	for _, want := range []string{"kafka_format = 'RawBLOB'", "kafka_flush_interval_ms = 500", "kafka_broker_list = 'k:9092'", "kafka_group_name = 'clickagg'"} {
		if !strings.Contains(modern, want) {
			t.Errorf("24.8 DDL lacks %s: %s", want, modern)
		}
	}
	old := queueDDL(c, chclient.Version{Major: 18, Minor: 16, Patch: 1})
	if !strings.Contains(old, `kafka_format = 'CSV', kafka_row_delimiter = '\n'`) || strings.Contains(old, "RawBLOB") || strings.Contains(old, "flush_interval") {
		t.Errorf("18.16 DDL: %s", old)
	}
}

// Like the migrations' views, the inbox view names no definer (see
// schema/definer.go): it works whoever ran kafka enable.
func TestViewDDLNamesNoDefiner(t *testing.T) {
	if strings.Contains(viewDDL, "DEFINER") || strings.Contains(viewDDL, "SQL SECURITY") {
		t.Errorf("view DDL: %s", viewDDL)
	}
}
