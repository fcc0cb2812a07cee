package kafkaengine_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/kafkaengine"
)

// TestKafkaWatchdog: a Kafka engine that has lag and commits nothing (here
// its view is gone, so ClickHouse consumes nothing, as an idle 18.16
// consumer looks from outside) is restarted by the Monitor (serve runs one), and the
// messages then land.
func TestKafkaWatchdog(t *testing.T) {
	db := testenv.Migrated(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "wd"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	conn, err := chclient.Open(db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kafkaengine.Enable(ctx, conn, "", kafkaengine.Config{Brokers: cluster.ListenAddrs()[0], Topic: "wd", Group: "wd-" + db.Database}); err != nil {
		t.Fatal(err)
	}
	defer kafkaengine.Disable(context.Background(), conn, "")
	if err := conn.Exec(ctx, "DROP TABLE "+kafkaengine.QueueView); err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()[0]), kgo.DefaultProduceTopic("wd"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	recs := make([]*kgo.Record, 100)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte(`{"n":` + string(rune('0'+i%10)) + `}`)}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	m := &kafkaengine.Monitor{Conn: conn, Every: 200 * time.Millisecond, Stuck: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { stop(); <-done }()
	for {
		n := testenv.QueryString(t, db, "SELECT count() FROM kafka_inbox")
		if n == "100" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kafka_inbox holds %s of 100 messages; restarts %d, state %+v", n, m.Last().Restarts, m.Last())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := m.Last().Restarts; r < 1 {
		t.Errorf("restarts %d: the messages landed without the watchdog", r)
	}
	t.Logf("watchdog restarts: %d", m.Last().Restarts)
}
