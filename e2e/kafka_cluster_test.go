package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/server"
	"github.com/clickagg/clickagg/services"
)

// topic is an in-process broker's topic that ClickHouse's Kafka engine
// consumes for a stack's database.
type topic struct {
	t       *testing.T
	group   string
	prod    *kgo.Client
	adm     *kadm.Client
	conn    driver.Conn
	cluster string
}

// enableKafka starts an in-process broker with a topic of the given
// partitions and enables ClickHouse's Kafka engine for s's database (on
// every node of a cluster).
func enableKafka(t *testing.T, s *stack, partitions int32) *topic {
	t.Helper()
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	addr := broker.ListenAddrs()[0]
	ch := s.config().ClickHouse
	conn, err := chclient.Open(ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tp := &topic{t: t, group: "g-" + ch.Database, conn: conn, cluster: ch.Cluster}
	c := kafkaengine.Config{Brokers: addr, Topic: "events", Group: tp.group, MaxBlockSize: 1000}
	if err := kafkaengine.Enable(t.Context(), conn, ch.Cluster, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Bounded: ON CLUSTER waits for every node, and a failed test may
		// leave one down.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kafkaengine.Disable(ctx, conn, ch.Cluster)
	})
	if tp.prod, err = kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("events")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.prod.Close)
	tp.adm = kadm.NewClient(tp.prod)
	return tp
}

// produce sends msgs, keyed by their index, and waits for the acks.
func (tp *topic) produce(msgs [][]byte) {
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "%d", i), Value: m}
	}
	if err := tp.prod.ProduceSync(tp.t.Context(), recs...).FirstErr(); err != nil {
		tp.t.Error(err)
	}
}

// verify lands what the Kafka engine lost of the messages produced since
// from, as serve's scheduled verification does, and returns how many.
func (tp *topic) verify(from time.Time) int {
	rep, err := kafkaengine.VerifyTopic(tp.t.Context(), tp.conn, tp.cluster, "", from, time.Now(), true)
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Logf("%s", rep)
	return rep.Missing
}

// find shows where the message with id is in the topic and how far the
// group has committed on its partition.
func (tp *topic) find(id string) {
	c, err := kgo.NewClient(kgo.SeedBrokers(tp.prod.OptValue(kgo.SeedBrokers).([]string)...),
		kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tp.t.Log(err)
		return
	}
	defer c.Close()
	ends, _ := tp.adm.ListEndOffsets(tp.t.Context(), "events")
	left := 0
	ends.Each(func(o kadm.ListedOffset) { left += int(o.Offset) })
	committed, _ := tp.adm.FetchOffsets(tp.t.Context(), tp.group)
	for left > 0 && tp.t.Context().Err() == nil {
		fs := c.PollFetches(tp.t.Context())
		fs.EachRecord(func(r *kgo.Record) {
			left--
			if strings.Contains(string(r.Value), `"`+id+`"`) {
				o, _ := committed.Lookup("events", r.Partition)
				tp.t.Logf("%s in the topic: partition %d offset %d at %s; the group committed %d of it; end %d", id, r.Partition, r.Offset, r.Timestamp.UTC().Format(time.RFC3339Nano), o.At, func() int64 { e, _ := ends.Lookup("events", r.Partition); return e.Offset }())
			}
		})
	}
}

// consumers is how many members of the group have partitions assigned.
func (tp *topic) consumers() int {
	gs, err := tp.adm.DescribeGroups(tp.t.Context(), tp.group)
	if err != nil {
		return 0
	}
	n := 0
	for _, m := range gs[tp.group].Members {
		if c, ok := m.Assigned.AsConsumer(); ok && len(c.Topics) > 0 && len(c.Topics[0].Partitions) > 0 {
			n++
		}
	}
	return n
}

// kafkaStatus is the Kafka part of GET /v1/ingest/status.
type kafkaStatus struct {
	Lag   *struct{ Total int64 }
	Drain kafkaengine.DrainStats
}

func (s *stack) kafkaStatus() kafkaStatus {
	var st struct{ Kafka kafkaStatus }
	s.get("/v1/ingest/status", &st)
	return st.Kafka
}

// waitConsumed waits until the group has committed every message produced
// (asked of the broker: the status's lag is the monitor's last look, which
// may predate them) and the drain has nothing pending.
func waitConsumed(t *testing.T, s *stack, tp *topic, limit time.Duration) {
	t.Helper()
	waitFor(t, limit, "the group without lag and the inbox drained", func() bool {
		ends, err := tp.adm.ListEndOffsets(t.Context(), "events")
		if err != nil {
			return false
		}
		committed, err := tp.adm.FetchOffsets(t.Context(), tp.group)
		if err != nil {
			return false
		}
		behind := false
		ends.Each(func(e kadm.ListedOffset) {
			if o, ok := committed.Lookup("events", e.Partition); !ok || o.At < e.Offset {
				behind = true
			}
		})
		return !behind && s.kafkaStatus().Drain.PendingRows == 0
	})
}

// waitDrained waits until the group has no lag, the inbox nothing pending
// and want distinct events are counted, all by the drain.
func waitDrained(t *testing.T, s *stack, db testenv.ClickHouseDB, want int, limit time.Duration) {
	t.Helper()
	var st kafkaStatus
	var got string
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		st = s.kafkaStatus()
		got, _ = services.Query(context.Background(), db.HTTPURL, db.Database, "SELECT uniqExactIf(event_id, duplicate = 0) FROM events")
		// The drain's own count too: its events are visible before the
		// collector answers it.
		if st.Lag != nil && st.Lag.Total == 0 && st.Drain.PendingRows == 0 && strings.TrimSpace(got) == fmt.Sprint(want) && st.Drain.Accepted == int64(want) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	b, _ := json.Marshal(st)
	t.Errorf("after %v: %s of %d events from Kafka counted; kafka status %s", limit, strings.TrimSpace(got), want, b)
}

// explainMissing shows, when events are not counted, how many and where
// the first of them is on every node (its events_local rows, its inbox row
// and part, the replication queue, the inbox parts written since since, what
// error.log says of the inbox), then the drain's log.
func explainMissing(t *testing.T, tp *topic, db testenv.ClusterDB, logs *lockedBuffer, valid []event, since time.Time) {
	ids := map[string]bool{}
	for _, id := range strings.Split(testenv.QueryString(t, db.Node(db.Cluster.Nodes[0]), "SELECT event_id FROM events WHERE duplicate = 0"), "\n") {
		ids[id] = true
	}
	var missing []event
	for _, e := range valid {
		if !ids[e.id] {
			missing = append(missing, e)
		}
	}
	t.Logf("%d events not counted", len(missing))
	if len(missing) == 0 {
		return
	}
	e := missing[0]
	if tp != nil {
		tp.find(e.id)
	}
	t.Logf("%s (ts %s) not counted; on each node:", e.id, e.ts.Format(time.RFC3339Nano))
	for _, n := range db.Cluster.Nodes {
		q := func(sql string) string {
			out, err := services.Query(context.Background(), n.HTTPURL(), db.Database, sql)
			if err != nil {
				return err.Error()
			}
			return strings.ReplaceAll(strings.TrimSpace(out), "\n", "; ")
		}
		t.Logf("%s: events_local (duplicate, received_at) %q; inbox row (received_at, part) %q; replication queue %q; inbox parts since %s: %s", n.HTTPURL(),
			q("SELECT duplicate, toString(received_at) FROM events_local WHERE event_id = '"+e.id+"'"),
			q("SELECT toString(received_at), _part FROM kafka_inbox_local WHERE position(raw, '\""+e.id+"\"') > 0"),
			q("SELECT table, type, new_part_name, last_exception FROM system.replication_queue WHERE database = currentDatabase() LIMIT 3"),
			since.UTC().Format(time.TimeOnly),
			q(fmt.Sprintf("SELECT name, toString(modification_time), rows FROM system.parts WHERE database = currentDatabase() AND table = 'kafka_inbox_local' AND active AND modification_time >= toDateTime(%d) ORDER BY modification_time", since.Unix())))
		if b, err := os.ReadFile(filepath.Join(n.Dir, "log", "error.log")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "kafka_inbox_local") {
					t.Logf("%s error.log: %.300s", n.HTTPURL(), line)
				}
			}
		}
	}
	if logs != nil {
		for _, r := range logs.records(t) {
			if m, _ := r["msg"].(string); strings.HasPrefix(m, "kafka") {
				t.Logf("%v %v %v", r["time"], m, r)
			}
		}
	}
}

// TestClusterKafka: the Kafka engine on a 2 x 2 cluster, one consumer
// group over the four nodes: every node consumes, the messages land in the
// shard of the node that took them, and the drain counts each event once
// (resends and broken events in the stream, as on one server).
func TestClusterKafka(t *testing.T) {
	cdb := testenv.MigratedCluster(t)
	s := &stack{t: t, cluster: &cdb, redisAddr: testenv.Redis(t).Addr(), logs: new(lockedBuffer)}
	s.start()
	t.Cleanup(func() { s.stop() })
	tp := enableKafka(t, s, 4)
	// One group over every node: each of the four takes a partition.
	waitFor(t, 60*time.Second, "four nodes consuming a partition each", func() bool { return tp.consumers() == 4 })
	start := time.Now()
	lines, valid := mixedStream(rand.New(rand.NewPCG(21, 22)), 0, 8000, time.Now().UTC(), 2*time.Hour)
	for i := 0; i < len(lines); i += 1000 {
		tp.produce(lines[i:min(i+1000, len(lines))])
	}
	db := s.cluster
	first := db.Node(db.Cluster.Nodes[0])
	waitConsumed(t, s, tp, 90*time.Second)
	lost := tp.verify(start)
	waitDrained(t, s, first, len(valid), 30*time.Second)
	if t.Failed() {
		t.Logf("verify landed %d messages the engine lost", lost)
		explainMissing(t, tp, *db, s.logs, valid, start.Add(-10*time.Second))
		t.FailNow()
	}
	waitReplicated(t, *db)
	checkStored(t, first, valid)
	// A refusal is recorded each time: a message the engine delivered
	// twice, or whose second went through again, is in dead_letters twice.
	if got := testenv.QueryString(t, first, "SELECT uniqExact(raw) FROM dead_letters"); got != fmt.Sprint(len(lines)/97+1) {
		t.Errorf("distinct dead letters: %s, want %d", got, len(lines)/97+1)
	}
	for i, n := range db.Cluster.Nodes {
		if got := testenv.QueryString(t, db.Node(n), "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'kafka_queue'"); got != "Kafka" {
			t.Errorf("node %d: kafka_queue %q", i+1, got)
		}
	}
	// Both shards consumed, into their own inboxes.
	for sh := 1; sh <= 2; sh++ {
		if got := testenv.QueryString(t, db.Node(db.Cluster.Shard(sh)[0]), "SELECT count() FROM kafka_inbox_local"); got == "0" {
			t.Errorf("shard %d consumed nothing", sh)
		}
	}
	if st := s.kafkaStatus(); st.Drain.Accepted != int64(len(valid)) || st.Drain.Holding {
		t.Errorf("drain %+v, want %d accepted and not holding", st.Drain, len(valid))
	}
	st := s.kafkaStatus()
	t.Logf("%d messages over four consuming nodes, %d lost by the engine and landed by verify; each event counted once (drained %d rows, %d duplicates, %d late)", len(lines), lost, st.Drain.Drained, st.Drain.Duplicates, st.Drain.LateRows)
}

// TestFaultClusterKafkaReplicaKilled: on a 2 x 2 cluster consuming a topic
// at ~2000 events/s, the replica of each shard that the drain reads is
// killed with SIGKILL for 20 s, holding inbox rows the other replica has
// not fetched (its fetches paused for the 3 s before). Settle is 5 s, so a
// watermark that did not wait would pass those rows before they are back
// (the test fails so without the hold): the drain holds while the replicas
// are away, and once they are back and the engine's losses are landed by
// verify, every event produced is counted once.
func TestFaultClusterKafkaReplicaKilled(t *testing.T) {
	db := testenv.OwnCluster(t, services.ClusterOptions{SessionTimeout: 3 * time.Second}, true)
	logs := &lockedBuffer{}
	s := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr(), tune: func(c *server.Config) {
		c.Kafka.Drain.Settle = 5 * time.Second
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}}
	s.start()
	t.Cleanup(func() { s.stop() })
	tp := enableKafka(t, s, 4)
	waitFor(t, 60*time.Second, "four nodes consuming a partition each", func() bool { return tp.consumers() == 4 })

	var (
		mu    sync.Mutex
		valid []event
		sent  int
	)
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		r := rand.New(rand.NewPCG(31, 32))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			lines, v := mixedStream(r, i*100, 100, time.Now().UTC(), time.Minute)
			tp.produce(lines)
			mu.Lock()
			valid, sent = append(valid, v...), sent+len(lines)
			mu.Unlock()
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	counted := func() int {
		var n int
		fmt.Sscan(testenv.QueryString(t, db.Node(db.Cluster.Shard(1)[1]), "SELECT uniqExactIf(event_id, duplicate = 0) FROM events"), &n)
		return n
	}
	waitFor(t, 60*time.Second, "5000 events from Kafka counted", func() bool { return counted() >= 5000 })

	// The replicas to be killed take blocks the others do not fetch for
	// 3 s: at the kill they hold rows no survivor has, for certain.
	var killed []*services.ClickHouse
	var survivors []testenv.ClickHouseDB
	for sh := 1; sh <= 2; sh++ {
		killed = append(killed, db.Cluster.Shard(sh)[0])
		survivors = append(survivors, db.Node(db.Cluster.Shard(sh)[1]))
	}
	for _, n := range survivors {
		testenv.Exec(t, n, "SYSTEM STOP FETCHES kafka_inbox_local")
	}
	time.Sleep(3 * time.Second)
	killAt := time.Now()
	for _, n := range killed {
		if err := n.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	before := fmt.Sprintf("SELECT count() FROM kafka_inbox_local WHERE received_at <= toDateTime(%d)", killAt.Unix())
	var survived int
	for _, n := range survivors {
		testenv.Exec(t, n, "SYSTEM START FETCHES kafka_inbox_local")
		var c int
		fmt.Sscan(testenv.QueryString(t, n, before), &c)
		survived += c
	}
	var heldAfter time.Duration
	for time.Since(killAt) < 20*time.Second {
		if heldAfter == 0 && s.kafkaStatus().Drain.Holding {
			heldAfter = time.Since(killAt)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if heldAfter == 0 {
		t.Error("the drain never held its watermark with a replica of each shard down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range killed {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	restartAt := time.Now()
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	want := valid
	mu.Unlock()
	waitConsumed(t, s, tp, 150*time.Second)
	lost := tp.verify(start)
	waitDrained(t, s, db.Node(db.Cluster.Nodes[0]), len(want), 30*time.Second)
	if t.Failed() {
		t.Logf("fetches stopped %s, killed %s, restarted %s", killAt.Add(-3*time.Second).UTC().Format(time.TimeOnly), killAt.UTC().Format(time.TimeOnly), restartAt.UTC().Format(time.TimeOnly))
		for _, n := range db.Cluster.Nodes {
			t.Logf("%s: inbox rows by second around the kill: %s", n.HTTPURL(), strings.ReplaceAll(testenv.QueryString(t, db.Node(n), fmt.Sprintf(
				"SELECT toString(received_at), count() FROM kafka_inbox_local WHERE received_at BETWEEN toDateTime(%d) AND toDateTime(%d) GROUP BY received_at ORDER BY received_at", killAt.Unix()-6, killAt.Unix()+3)), "\n", "; "))
		}
		explainMissing(t, tp, db, logs, want, killAt.Add(-10*time.Second))
		t.FailNow()
	}
	drainedAfter := time.Since(restartAt)
	waitReplicated(t, db)
	fixed := reconcileCluster(t, db, start)
	checkStored(t, db.Node(db.Cluster.Nodes[0]), want)
	var all int
	for _, n := range survivors {
		var c int
		fmt.Sscan(testenv.QueryString(t, n, before), &c)
		all += c
	}
	st := s.kafkaStatus()
	if st.Drain.Holding {
		t.Error("the drain still holds its watermark with every replica back")
	}
	if all == survived {
		t.Error("the killed replicas held no inbox rows the survivors lacked: the test did not test the hold")
	}
	t.Logf("replica of each shard killed under Kafka ingest: %d messages, %d distinct valid events; %d inbox rows out of reach while the killed replicas were down; the drain held its watermark (seen %v after the kill); %d messages the engine lost landed by verify; every event counted once %v after the restart (%d drained, %d of them late: found by the recount after the hold; %d duplicates recognised); reconciliation fixed %d aggregate rows",
		sent, len(want), all-survived, heldAfter.Round(time.Millisecond), lost, drainedAfter.Round(time.Second), st.Drain.Drained, st.Drain.LateRows, st.Drain.Duplicates, fixed)
}
