package kafkaengine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/chstore"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/eventjson"
	"github.com/clickagg/clickagg/generator"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pipeline is a topic consumed by ClickHouse and drained by a collector.
type pipeline struct {
	db     testenv.ClickHouseDB
	conn   driver.Conn
	broker string
	topic  string
	group  string
	prod   *kgo.Client
	col    *collector.Collector
	drain  *kafkaengine.Drain
	cancel context.CancelFunc
	done   chan struct{}
}

const partitions = 4

func start(t testing.TB, db testenv.ClickHouseDB) *pipeline { return startWith(t, db, true) }

// startWith starts the pipeline; without the engine nothing consumes the
// topic, as if ClickHouse had lost every message.
func startWith(t testing.TB, db testenv.ClickHouseDB, engine bool) *pipeline {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	p := &pipeline{db: db, broker: cluster.ListenAddrs()[0], topic: "events", group: "clickagg-" + db.Database}
	p.conn, err = chclient.Open(db.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	if engine {
		if err := kafkaengine.Enable(t.Context(), p.conn, "", kafkaengine.Config{Brokers: p.broker, Topic: p.topic, Group: p.group}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kafkaengine.Disable(context.Background(), p.conn, "") })
	}
	p.prod, err = kgo.NewClient(kgo.SeedBrokers(p.broker), kgo.DefaultProduceTopic(p.topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.prod.Close)

	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: db.HTTPURL, Database: db.Database})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(tr, ingestor.Options{Linger: 20 * time.Millisecond})
	p.col = collector.New(in, collector.Options{Dedup: dedup.New(dedup.Options{}), DeadLetters: tr})
	p.drain = kafkaengine.NewDrain(p.conn, p.col, kafkaengine.DrainOptions{Poll: 50 * time.Millisecond, Settle: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() { defer close(p.done); p.drain.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
		in.Close(context.Background())
	})
	return p
}

// produce sends msgs keyed by their ad_id and waits for the acks.
func (p *pipeline) produce(t testing.TB, msgs [][]byte) {
	t.Helper()
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Key: adID(m), Value: m}
	}
	if err := p.prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func adID(m []byte) []byte {
	s := string(m)
	if i := strings.Index(s, `"ad_id":"`); i >= 0 {
		s = s[i+len(`"ad_id":"`):]
		if j := strings.IndexByte(s, '"'); j >= 0 {
			return []byte(s[:j])
		}
	}
	return nil
}

// waitFor polls query until it answers want, or fails after limit.
func (p *pipeline) waitFor(t testing.TB, query, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := testenv.QueryString(t, p.db, query)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q after %s, want %q (drain %+v; inbox rows %s)", query, got, limit, want, p.drain.Stats(),
				testenv.QueryString(t, p.db, "SELECT count() FROM kafka_inbox"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAll is waitFor for everything produced to have landed: when nothing
// moves for 10 s it runs the verification serve runs on a schedule, which
// lands what the 18.16 engine lost (see BenchmarkConsume), and says so.
func (p *pipeline) waitAll(t testing.TB, query, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	last, moved, stalls := "", time.Now(), 0
	for time.Now().Before(deadline) {
		got := testenv.QueryString(t, p.db, query)
		switch {
		case got == want:
			return
		case got != last:
			last, moved, stalls = got, time.Now(), 0
		case time.Since(moved) > 10*time.Second:
			rep := p.verify(t, true)
			t.Logf("nothing new for 10 s at %s = %q; verify: %s", query, got, rep)
			moved = time.Now()
			// 30 s without anything: the engine's consumer may sit idle (seen
			// once on a loaded 18.16); serve's watchdog restarts it the same way.
			if stalls++; stalls%3 == 0 {
				t.Logf("restarting the Kafka engine: %v", kafkaengine.Restart(t.Context(), p.conn, ""))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.waitFor(t, query, want, 0)
}

// events generates n events stamped now, and their expected totals.
func events(n int, seed uint64) ([][]byte, clickagg.Counts) {
	src := generator.New(generator.Options{Seed: seed, Ads: 200, LateShare: -1, DuplicateShare: -1, BadShare: -1, Now: time.Now, IDPrefix: fmt.Sprintf("k%d-", seed)})
	var dec eventjson.Decoder
	var want clickagg.Counts
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = src.AppendNext(nil)
		var ev clickagg.Event
		if err := dec.Decode(msgs[i], &ev); err != nil {
			panic(err)
		}
		switch ev.Type {
		case clickagg.Impression:
			want.Impressions++
		case clickagg.Click:
			want.Clicks++
		case clickagg.Conversion:
			want.Conversions++
		}
		want.SpendMicros += int64(ev.PriceMicros)
	}
	return msgs, want
}

// checkTotals compares every aggregate and the API's answer with want.
func (p *pipeline) checkTotals(t testing.TB, want clickagg.Counts) {
	t.Helper()
	w := fmt.Sprintf("%d\t%d\t%d\t%d", want.Impressions, want.Clicks, want.Conversions, want.SpendMicros)
	for _, table := range []string{"ad_stats_minute", "dim_stats_minute", "ad_stats_daily"} {
		// On 18.16 an insert's rows show in events before its views are
		// written; the drain's own acknowledgement comes after both.
		p.waitFor(t, "SELECT sum(impressions), sum(clicks), sum(conversions), sum(spend_micros) FROM "+table, w, 15*time.Second)
	}
	now := time.Now().UTC().Truncate(time.Minute)
	res, err := chstore.New(p.conn, chstore.Options{}).Metrics(t.Context(), clickagg.MetricsQuery{Range: clickagg.Range{From: now.Add(-time.Hour), To: now.Add(10 * time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Rows[0].Counts != want {
		t.Errorf("API totals %+v, want %+v", res.Rows, want)
	}
}

func TestFiftyThousandAcrossPartitions(t *testing.T) {
	p := start(t, testenv.Migrated(t))
	msgs, want := events(50000, 1)
	p.produce(t, msgs)
	p.waitAll(t, "SELECT count() FROM events", "50000", 90*time.Second)
	p.checkTotals(t, want)
	if got := testenv.QueryString(t, p.db, "SELECT count() FROM dead_letters"); got != "0" {
		t.Errorf("dead letters: %s", got)
	}
	l := lag(t, p)
	if len(l.Partitions) != partitions {
		t.Errorf("lag of %d partitions, want %d: %+v", len(l.Partitions), partitions, l)
	}
	for _, pl := range l.Partitions {
		if pl.End == 0 {
			t.Errorf("partition %d got no messages: keyed production should spread them", pl.Partition)
		}
	}
	// The drain counts a batch once its insert and every view are written,
	// which 18.16 finishes after the rows show in events.
	st := p.drain.Stats()
	for deadline := time.Now().Add(10 * time.Second); st.Drained < 50000 && time.Now().Before(deadline); st = p.drain.Stats() {
		time.Sleep(50 * time.Millisecond)
	}
	if st.Drained != 50000 || st.Accepted != 50000 || st.Rejected != 0 || st.PendingRows != 0 {
		t.Errorf("drain stats %+v", st)
	}
}

// lag waits for the group to have committed everything it consumed.
func lag(t *testing.T, p *pipeline) kafka.Lag {
	t.Helper()
	kc, err := kafka.Dial(p.broker)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var l kafka.Lag
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if l, err = kc.Lag(t.Context(), p.group, p.topic); err == nil && l.Total == 0 {
			return l
		}
	}
	t.Fatalf("lag %+v, %v: want 0", l, err)
	return l
}

func TestPoisonMessagesDoNotStall(t *testing.T) {
	p := start(t, testenv.Migrated(t))
	good, want := events(2000, 2)
	now := time.Now().UTC()
	ev := func(id, kv string) string {
		return `{"event_id":"` + id + `","type":"click","ad_id":"p1",` + kv + `}`
	}
	// Good events in every ts form the collector takes.
	forms := []string{
		ev("ts-rfc3339", `"ts":"`+now.Format(time.RFC3339)+`"`),
		ev("ts-offset", `"ts":"`+now.In(time.FixedZone("KST", 9*3600)).Format("2006-01-02T15:04:05.000+09:00")+`"`),
		ev("ts-millis", fmt.Sprintf(`"ts":%d`, now.UnixMilli())),
	}
	want.Clicks += int64(len(forms))
	// Bad ones that keep their text on every server, each with its reason.
	bad := map[string]string{
		`{"event_id":`:    "invalid_json",
		`[1,2]`:           "invalid_json",
		`not json at all`: "invalid_json",
		`"quoted text`:    "invalid_json",
		`'single quoted'`: "invalid_json",
		ev("wrong-type", fmt.Sprintf(`"ts":%d,"price_micros":"5"`, now.UnixMilli())): "invalid_field",
		ev("bad-enum", fmt.Sprintf(`"ts":%d,"device":"toaster"`, now.UnixMilli())):   "invalid_field",
		ev("bad-ts", `"ts":"yesterday"`):                                             "invalid_field",
		ev("too-late", `"ts":"`+now.Add(-8*24*time.Hour).Format(time.RFC3339)+`"`):   "too_late",
		ev("future", `"ts":"`+now.Add(10*time.Minute).Format(time.RFC3339)+`"`):      "future",
		`{"event_id":"a,b;c\td","type":"click"}`:                                     "invalid_field",
	}
	var msgs [][]byte
	i := 0
	for raw := range bad {
		msgs = append(msgs, good[i*100:(i+1)*100]...)
		msgs = append(msgs, []byte(raw))
		i++
	}
	for _, f := range forms {
		msgs = append(msgs, []byte(f))
	}
	msgs = append(msgs, good[i*100:]...)
	// Messages 18.16 cannot keep whole (CSV rows end at CR and LF; DEL is
	// the field delimiter): they still must not stall the partition.
	msgs = append(msgs, []byte("{\"split\":\n1}"), []byte("a\x7fb"), []byte(""))
	msgs = append(msgs, []byte(ev("after-poison", fmt.Sprintf(`"ts":%d`, now.UnixMilli()))))
	want.Clicks++
	p.produce(t, msgs)

	total := len(good) + len(forms) + 1
	p.waitAll(t, "SELECT count() FROM events", fmt.Sprint(total), 90*time.Second)
	p.checkTotals(t, want)
	// A bad message the engine lost would not hold up the count above; the
	// scheduled verification is what lands it.
	if rep := p.verify(t, true); rep.Missing > 0 {
		t.Logf("verify landed what the engine lost: %s", rep)
	}
	for raw, reason := range bad {
		q := "SELECT count() FROM dead_letters WHERE source = 'kafka' AND reason = '" + reason + "' AND raw = '" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\t", `\t`).Replace(raw) + "'"
		p.waitFor(t, q, "1", 10*time.Second)
	}
	// The three mangled ones land as dead letters too, in pieces.
	if got := testenv.QueryString(t, p.db, "SELECT count() >= "+fmt.Sprint(len(bad)+3)+" FROM dead_letters WHERE source = 'kafka'"); got != "1" {
		t.Errorf("dead letters: %s", testenv.QueryString(t, p.db, "SELECT reason, raw FROM dead_letters"))
	}
}

func TestRedeliveryCountsOnce(t *testing.T) {
	p := start(t, testenv.Migrated(t))
	msgs, want := events(5000, 3)
	for range 3 { // at-least-once: the same batch delivered three times
		p.produce(t, msgs)
	}
	p.waitAll(t, "SELECT count(), sum(duplicate) FROM events", "15000\t10000", 90*time.Second)
	p.checkTotals(t, want)
}

func TestClickHouseRestartMidStream(t *testing.T) {
	db := testenv.Migrate(t, testenv.OwnClickHouse(t))
	p := start(t, db)
	msgs, want := events(20000, 4)
	p.produce(t, msgs[:10000])
	p.waitFor(t, "SELECT count() > 0 FROM events", "1", 60*time.Second)
	if err := db.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	p.produce(t, msgs[10000:]) // while ClickHouse is down
	if err := db.Server.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	p.waitAll(t, "SELECT uniqExact(event_id), countIf(duplicate = 0) FROM events", "20000\t20000", 90*time.Second)
	p.checkTotals(t, want)
}

func TestEnableReplacesAndDisableRemoves(t *testing.T) {
	db := testenv.Migrated(t)
	conn, err := chclient.Open(db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := kafkaengine.Config{Brokers: "127.0.0.1:1", Topic: "t1", Group: "g1"}
	for _, c := range []kafkaengine.Config{c, c, {Brokers: "127.0.0.1:2", Topic: "t2", Group: "g2", Consumers: 2, MaxBlockSize: 1000}} {
		if err := kafkaengine.Enable(t.Context(), conn, "", c); err != nil {
			t.Fatal(err)
		}
		got, ok, err := kafkaengine.Current(t.Context(), conn)
		if c.Consumers == 0 {
			c.Consumers, c.MaxBlockSize = 1, 65536
		}
		if err != nil || !ok || got != c {
			t.Errorf("current %+v %v %v, want %+v", got, ok, err, c)
		}
	}
	if err := kafkaengine.Disable(t.Context(), conn, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := kafkaengine.Current(t.Context(), conn); ok || err != nil {
		t.Errorf("after disable: %v %v", ok, err)
	}
	if got := testenv.QueryString(t, db, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'kafka_queue%'"); got != "0" {
		t.Errorf("%s kafka tables left", got)
	}
	for _, bad := range []kafkaengine.Config{{Topic: "t"}, {Brokers: "a'b", Topic: "t"}, {Brokers: "h:1", Topic: "t; DROP"}} {
		if err := kafkaengine.Enable(t.Context(), conn, "", bad); err == nil {
			t.Errorf("enable %+v: no error", bad)
		}
	}
}

// verify runs kafkaengine.Verify over the last hour of the topic.
func (p *pipeline) verify(t testing.TB, fix bool) kafkaengine.VerifyReport {
	t.Helper()
	kc, err := kafka.Dial(p.broker)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	to := time.Now().Add(time.Second)
	from := to.Add(-time.Hour)
	rep, err := kafkaengine.Verify(t.Context(), p.conn, "", from, to, func(fn func([]byte) error) error {
		return kc.Range(t.Context(), p.topic, p.group, from, to, func(r kafka.Record) error { return fn(r.Value) })
	}, fix)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestVerifyLandsWhatTheEngineLost(t *testing.T) {
	p := startWith(t, testenv.Migrated(t), false)
	msgs, want := events(3000, 5)
	bad := []byte(`{"event_id":"bad","type":"view"}`)
	msgs = append(msgs, bad, bad, []byte("{\"split\":\n1}"))
	p.produce(t, msgs)
	// Not consumed yet: verify must not race a consumer that is behind.
	if rep := p.verify(t, true); rep.Messages != 0 || rep.Missing != 0 {
		t.Fatalf("verify before the group consumed anything: %+v", rep)
	}
	// The group commits to the end without anything landing: every
	// message lost, as the engine loses one now and then.
	adm := kadm.NewClient(p.prod)
	ends, err := adm.ListEndOffsets(t.Context(), p.topic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CommitOffsets(t.Context(), p.group, ends.Offsets()); err != nil {
		t.Fatal(err)
	}
	rep := p.verify(t, false)
	if rep.Messages != 3003 || rep.Missing != 3002 || rep.Unverifiable != 1 || rep.Fixed {
		t.Fatalf("verify without fix: %+v", rep)
	}
	if rep := p.verify(t, true); rep.Missing != 3002 || !rep.Fixed {
		t.Fatalf("verify --fix: %+v", rep)
	}
	p.waitFor(t, "SELECT count() FROM events", "3000", 30*time.Second)
	p.checkTotals(t, want)
	p.waitFor(t, "SELECT count() FROM dead_letters WHERE raw = '{\"event_id\":\"bad\",\"type\":\"view\"}'", "2", 10*time.Second)
	if rep := p.verify(t, true); rep.Missing != 0 {
		t.Errorf("second verify: %+v", rep)
	}
}

func TestVerifyFindsNothingMissingAfterTheEngine(t *testing.T) {
	p := start(t, testenv.Migrated(t))
	msgs, want := events(5000, 6)
	p.produce(t, msgs)
	p.waitFor(t, "SELECT count() FROM events", "5000", 60*time.Second)
	p.checkTotals(t, want)
	lag(t, p)
	if rep := p.verify(t, true); rep.Messages != 5000 || rep.Missing != 0 {
		t.Errorf("verify: %+v", rep)
	}
}

// countingSink records the batches a Drain passes on.
type countingSink struct {
	kafkaengine.Sink
	calls, largest int
}

func (c *countingSink) Messages(ctx context.Context, src clickagg.Source, msgs [][]byte) (collector.Answer, error) {
	c.calls++
	c.largest = max(c.largest, len(msgs))
	return c.Sink.Messages(ctx, src, msgs)
}

// TestDrainSplitsABigSecond: a backlog consumed fast puts more rows in one
// second than one batch may hold; the drain passes them in pieces.
func TestDrainSplitsABigSecond(t *testing.T) {
	p := startWith(t, testenv.Migrated(t), false)
	ts := time.Now().UnixMilli()
	testenv.Exec(t, p.db, fmt.Sprintf(`INSERT INTO kafka_inbox (received_at, id, raw) SELECT now(), rand64(),
		concat('{"event_id":"big-', toString(number), '","type":"click","ts":%d,"ad_id":"a"}') FROM numbers(5000)`, ts))
	sink := &countingSink{Sink: p.col}
	d := kafkaengine.NewDrain(p.conn, sink, kafkaengine.DrainOptions{MaxBatch: 1000, Settle: 10 * time.Second})
	for deadline := time.Now().Add(30 * time.Second); d.Stats().Drained < 5000 && time.Now().Before(deadline); {
		if _, err := d.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// The pipeline's own drain runs too; between them every event counts once.
	p.waitFor(t, "SELECT countIf(duplicate = 0), uniqExact(event_id) FROM events", "5000\t5000", 30*time.Second)
	if sink.largest > 1000 || (d.Stats().Drained == 5000 && sink.calls < 5) {
		t.Errorf("%d calls, largest %d: want pieces of at most 1000", sink.calls, sink.largest)
	}
}

// TestRestartResumes: a restarted engine (serve's watchdog, for a consumer
// that sits idle) keeps its settings and goes on from the group's committed
// offsets: everything once, nothing lost.
func TestRestartResumes(t *testing.T) {
	p := start(t, testenv.Migrated(t))
	first, want := events(1000, 7)
	p.produce(t, first)
	p.waitAll(t, "SELECT count() FROM events", "1000", 90*time.Second)
	before, _, err := kafkaengine.Current(t.Context(), p.conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafkaengine.Restart(t.Context(), p.conn, ""); err != nil {
		t.Fatal(err)
	}
	after, ok, err := kafkaengine.Current(t.Context(), p.conn)
	if err != nil || !ok || after != before {
		t.Fatalf("after restart %+v %v %v, before %+v", after, ok, err, before)
	}
	second, more := events(1000, 8)
	p.produce(t, second)
	p.waitAll(t, "SELECT count() FROM events", "2000", 90*time.Second)
	want.Impressions += more.Impressions
	want.Clicks += more.Clicks
	want.Conversions += more.Conversions
	want.SpendMicros += more.SpendMicros
	p.checkTotals(t, want)
}
