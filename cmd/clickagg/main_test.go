package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/services"
)

func clickaggRun(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestLocalWorkflow is `make run` in small: services up in a project-local
// dir, then every command finds them with no address flags.
func TestLocalWorkflow(t *testing.T) {
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		testenv.Must(t, err)
	}
	dir := t.TempDir()
	// The CLI prefers the default ports and takes free ones when they are
	// busy (a developer's own services), so the test reads what it chose.
	o := services.Options{Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv("CLICKAGG_DATA_DIR", dir)
	if _, errs, code := clickaggRun(t, ctx, "services", "up", "--no-install"); code != 0 {
		t.Fatalf("services up: %d %s", code, errs)
	}
	t.Cleanup(func() { services.Down(context.Background(), o) })

	st, err := services.Read(o)
	if err != nil {
		t.Fatal(err)
	}
	out, _, code := clickaggRun(t, ctx, "services", "status")
	if code != 0 || !strings.Contains(out, "CLICKAGG_CLICKHOUSE_HTTP="+st.ClickHouseHTTP+"\n") ||
		!strings.Contains(out, "CLICKAGG_CLICKHOUSE_UP=true") || !strings.Contains(out, "CLICKAGG_REDIS_UP=true") {
		t.Fatalf("status: %s", out)
	}
	latest, err := schema.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if out, errs, code := clickaggRun(t, ctx, "migrate", "up"); code != 0 || !strings.Contains(out, fmt.Sprintf("version=%d latest=%[1]d dirty=false", latest)) {
		t.Fatalf("migrate up: %d %s %s", code, out, errs)
	}
	if _, errs, code := clickaggRun(t, ctx, "migrate", "down"); code == 0 || !strings.Contains(errs, "--yes") {
		t.Fatalf("down without --yes must refuse: %d %s", code, errs)
	}

	listen := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(sctx, []string{"serve", "--listen", listen, "--linger", "10ms", "--log-format", "json"}, &bytes.Buffer{}, &serveErr)
	}()
	var resp *http.Response
	for range 100 {
		var err error
		resp, err = http.Get("http://" + listen + "/readyz")
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v; serve said %s", resp, serveErr.String())
	}
	resp.Body.Close()
	// generate finds the collector on the default --listen from the env.
	t.Setenv("CLICKAGG_LISTEN", listen)
	// The default share of malformed events (3 in 1000, the first of seed 1
	// at line 327) is refused, not failed.
	out, errs, code := clickaggRun(t, ctx, "generate", "--rate", "2000", "--duration", "1s", "--duplicate-share", "0")
	if code != 0 || !strings.Contains(out, "failed 0") || strings.Contains(out, "rejected 0,") {
		t.Fatalf("generate: %d %s %s", code, out, errs)
	}
	resp, err = http.Get("http://" + listen + "/v1/ingest/status")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ingest status: %v %v", resp, err)
	}
	var status struct {
		Collector struct{ Accepted int64 }
		Ingestor  struct {
			CommittedRows int64 `json:"committed_rows"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if status.Collector.Accepted == 0 || status.Collector.Accepted != status.Ingestor.CommittedRows {
		t.Errorf("ingest status %+v", status)
	}
	kafkaAccepted := kafkaWorkflow(t, ctx, listen)
	// The scheduled reconciliation ran at start and found the aggregates
	// equal to the raw events.
	var recon struct {
		Enabled bool
		Last    *struct {
			Fixed  bool
			Err    string
			Tables []struct{ Rows int64 }
		}
	}
	for range 100 {
		resp, err = http.Get("http://" + listen + "/v1/reconcile/status")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&recon)
		resp.Body.Close()
		if recon.Last != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !recon.Enabled || recon.Last == nil || recon.Last.Err != "" || len(recon.Last.Tables) == 0 {
		t.Errorf("reconcile status %+v", recon)
	}
	checkPrometheus(t, listen, status.Collector.Accepted)
	stop() // as SIGTERM does: drain, flush, exit 0
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d: %s", code, serveErr.String())
	}
	// --log-format json: every line of serve's log is one JSON record. The
	// start says where to go in one line; reconciliation at start is one
	// line at info level, its ranges at debug.
	msgs := map[string]int{}
	for line := range strings.SplitSeq(strings.TrimSpace(serveErr.String()), "\n") {
		var rec struct{ Time, Level, Msg, Docs, Try string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level == "" || rec.Msg == "" {
			t.Errorf("log line is not a slog JSON record: %q", line)
		}
		msgs[rec.Msg]++
		if rec.Msg == "serving" && (rec.Docs != "http://"+listen+"/docs" || !strings.HasPrefix(rec.Try, "http://"+listen+"/v1/metrics?")) {
			t.Errorf("banner %q: want the docs and an example query on %s", line, listen)
		}
	}
	if msgs["serving"] != 1 || msgs["reconciled"] != 1 || msgs["reconciled range"] != 0 {
		t.Errorf("start-up log: %v, want one banner and one reconciliation line", msgs)
	}
	n, err := services.Query(ctx, st.ClickHouseHTTP, st.Database, "SELECT count() FROM events")
	if err != nil || strings.TrimSpace(n) == "0" {
		t.Fatalf("events after generate: %q %v", n, err)
	}
	var accepted, rejected string
	if m := regexp.MustCompile(`accepted (\d+), rejected (\d+),`).FindStringSubmatch(out); m != nil {
		accepted, rejected = m[1], m[2]
	}
	if want := fmt.Sprint(mustAtoi(t, accepted) + kafkaAccepted); strings.TrimSpace(n) != want {
		t.Errorf("%s events in ClickHouse, want %s: %s accepted over HTTP (%s), %d from Kafka", strings.TrimSpace(n), want, accepted, out, kafkaAccepted)
	}
	// A batch answered 503 and resent stores its dead letters again: at
	// least those the answers counted.
	dead, err := services.Query(ctx, st.ClickHouseHTTP, st.Database, "SELECT count() FROM dead_letters")
	if err != nil || mustAtoi(t, strings.TrimSpace(dead)) < mustAtoi(t, rejected) {
		t.Errorf("%q dead letters (%v), want the %s rejected over HTTP", dead, err, rejected)
	}
	if _, errs, code := clickaggRun(t, ctx, "migrate", "down", "--yes"); code != 0 {
		t.Fatalf("migrate down: %s", errs)
	}
	if _, errs, code := clickaggRun(t, ctx, "services", "down"); code != 0 {
		t.Fatalf("services down: %s", errs)
	}
	if st, _ := services.Read(o); st.ClickHouseUp || st.RedisUp {
		t.Fatalf("still up after down: %+v", st)
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// kafkaWorkflow enables the Kafka path against an in-process broker,
// produces with 'generate --kafka' and waits for the running serve to have
// drained it all; it returns the events accepted from Kafka. No malformed
// events: a redelivered one would be refused again, so every message
// produced must count as accepted once (the drain's dead letters are
// kafkaengine's tests).
func kafkaWorkflow(t *testing.T, ctx context.Context, listen string) int64 {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "ad-events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]
	if out, errs, code := clickaggRun(t, ctx, "kafka", "enable", "--brokers", broker); code != 0 || !strings.Contains(out, "consumes ad-events") {
		t.Fatalf("kafka enable: %d %s %s", code, out, errs)
	}
	defer func() {
		if _, errs, code := clickaggRun(t, ctx, "kafka", "disable"); code != 0 {
			t.Errorf("kafka disable: %s", errs)
		}
	}()
	out, errs, code := clickaggRun(t, ctx, "generate", "--kafka", broker, "--rate", "2000", "--duration", "1s", "--duplicate-share", "0", "--bad-share", "0")
	var sent, acked int64
	if _, err := fmt.Sscanf(out, "kafka: %d sent, %d acknowledged, 0 failed", &sent, &acked); code != 0 || err != nil || acked == 0 || acked != sent {
		t.Fatalf("generate --kafka: %d %q %s %v", code, out, errs, err)
	}
	var status struct {
		Kafka struct {
			Enabled bool
			Lag     *struct{ Total int64 }
			Drain   struct{ Accepted int64 }
		}
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + listen + "/v1/ingest/status")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&status)
		resp.Body.Close()
		if status.Kafka.Drain.Accepted == acked && status.Kafka.Lag != nil && status.Kafka.Lag.Total == 0 {
			break
		}
	}
	if !status.Kafka.Enabled || status.Kafka.Drain.Accepted != acked || status.Kafka.Lag == nil || status.Kafka.Lag.Total != 0 {
		t.Fatalf("kafka status %+v, want %d accepted and no lag", status.Kafka, acked)
	}
	if out, _, code := clickaggRun(t, ctx, "kafka", "status"); code != 0 || !strings.Contains(out, `"enabled": true`) {
		t.Errorf("kafka status: %s", out)
	}
	if out, errs, code := clickaggRun(t, ctx, "kafka", "verify", "--fix"); code != 0 || !strings.Contains(out, fmt.Sprintf(": %d messages, 0 missing", acked)) {
		t.Errorf("kafka verify: %d %s %s", code, out, errs)
	}
	return acked
}

func TestHelpAndUsage(t *testing.T) {
	ctx := context.Background()
	if out, _, code := clickaggRun(t, ctx, "--help"); code != 0 || !strings.Contains(out, "services") {
		t.Errorf("--help: %d %s", code, out)
	}
	for _, cmd := range []string{"serve", "migrate", "generate", "services"} {
		if _, errs, code := clickaggRun(t, ctx, cmd, "--help"); code != 0 || !strings.Contains(errs, "CLICKAGG_") {
			t.Errorf("%s --help: %d %s", cmd, code, errs)
		}
	}
	if _, _, code := clickaggRun(t, ctx, "nope"); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
	if _, _, code := clickaggRun(t, ctx, "services", "sideways"); code != 2 {
		t.Errorf("unknown subcommand exit %d", code)
	}
}

// checkPrometheus reads GET /metrics: the ingest counters agree with the
// status route, and every family the dashboard uses is present.
func checkPrometheus(t *testing.T, listen string, accepted int64) {
	t.Helper()
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got int64
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, `clickagg_ingest_events_total{outcome="accepted"} `); ok {
			f, _ := strconv.ParseFloat(v, 64)
			got = int64(f)
		}
	}
	// The Kafka drain counts through the same collector after the status read.
	if got < accepted {
		t.Errorf("clickagg_ingest_events_total accepted %d, status said %d", got, accepted)
	}
	for _, want := range []string{
		"clickagg_ingest_requests_total ", `clickagg_ingest_requests_refused_total{reason="shed"}`,
		"clickagg_ingest_buffered_rows ", "clickagg_ingest_committed_rows_total ", "clickagg_ingest_block_rows_count ",
		`clickagg_ingest_flush_duration_seconds_count{result="ok"}`, "clickagg_clickhouse_insert_retries_total ",
		`clickagg_http_request_duration_seconds_count{code="200",method="GET",route="/v1/ingest/status"}`,
		"clickagg_cache_hit_ratio ", "clickagg_redis_errors_total ", "clickagg_reconcile_drift_rows{table=",
		"clickagg_reconcile_last_run_timestamp_seconds ", "clickagg_kafka_lag_messages{partition=",
		"clickagg_kafka_drained_messages_total ", "clickagg_dedup_ids ", "go_goroutines ", "process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestClusterWorkflow: services up with shards and replicas, then migrate
// and serve find the cluster with no flags: the schema on every node, an
// event posted stored on the cluster; the Kafka path enabled on every node,
// drained, verified and disabled.
func TestClusterWorkflow(t *testing.T) {
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		testenv.Must(t, err)
	}
	dir := t.TempDir()
	t.Setenv("CLICKAGG_DATA_DIR", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, errs, code := clickaggRun(t, ctx, "services", "up", "--no-install", "--shards", "2", "--replicas", "2"); code != 0 {
		t.Fatalf("services up: %d %s", code, errs)
	}
	t.Cleanup(func() { services.Down(context.Background(), services.Options{Dir: dir}) })
	out, _, code := clickaggRun(t, ctx, "services", "status")
	if code != 0 || !strings.Contains(out, "CLICKAGG_CLICKHOUSE_CLUSTER=clickagg\n") || !strings.Contains(out, "CLICKAGG_NODE_S2R2_UP=true\n") {
		t.Fatalf("status: %s", out)
	}
	latest, _ := schema.Latest()
	if out, errs, code := clickaggRun(t, ctx, "migrate", "up"); code != 0 || !strings.Contains(out, fmt.Sprintf("version=%d latest=%[1]d dirty=false", latest)) {
		t.Fatalf("migrate up: %d %s %s", code, out, errs)
	}
	st, err := services.Read(services.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		got, err := services.Query(ctx, n.HTTP, st.Database, "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name IN ('events', 'events_local') ORDER BY name")
		if err != nil || got != "Distributed\nReplicatedMergeTree\n" {
			t.Errorf("%s: events tables %q %v", n.Name, got, err)
		}
	}
	// serve finds the cluster too: an event posted is on its shard and in
	// the answers.
	listen := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(sctx, []string{"serve", "--listen", listen, "--linger", "10ms", "--no-reconcile"}, io.Discard, &serveErr)
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + listen + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on the cluster not ready: %s", serveErr.String())
		}
	}
	ev := `{"event_id":"cw-1","type":"click","ts":"` + time.Now().UTC().Format(time.RFC3339) + `","ad_id":"a1","country":"KR","ad_format":"banner"}`
	resp, err := http.Post("http://"+listen+"/v1/events", "application/x-ndjson", strings.NewReader(ev))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"accepted":1`) {
		t.Errorf("post on the cluster: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(serveErr.String(), "cluster=clickagg shards=2") {
		t.Errorf("serve's banner does not name the cluster: %s", serveErr.String())
	}
	fromKafka := kafkaWorkflow(t, ctx, listen)
	for _, n := range st.Nodes {
		if got, err := services.Query(ctx, n.HTTP, st.Database, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'kafka_queue%'"); err != nil || got != "0\n" {
			t.Errorf("%s: Kafka engine tables left after kafka disable: %q %v", n.Name, got, err)
		}
	}
	stop()
	if code := <-done; code != 0 {
		t.Errorf("serve exit %d: %s", code, serveErr.String())
	}
	// Messages the Kafka engine delivered again while its consumers joined
	// the group are stored as duplicates, left out of every aggregate.
	if n, err := services.Query(ctx, st.Nodes[0].HTTP, st.Database, "SELECT count() FROM events WHERE duplicate = 0"); err != nil || strings.TrimSpace(n) != strconv.FormatInt(1+fromKafka, 10) {
		t.Errorf("events through Distributed: %q %v, want 1 posted and %d from Kafka", n, err, fromKafka)
	}
	if _, errs, code := clickaggRun(t, ctx, "migrate", "down", "--yes"); code != 0 {
		t.Fatalf("migrate down: %s", errs)
	}
}
