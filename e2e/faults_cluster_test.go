package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/services"
)

// TestFaultClusterReplicaKilled: on a 2 x 2 cluster under steady ingest,
// one replica of each shard is killed with SIGKILL: requests keep being
// answered (the other replica takes the inserts), every acknowledged event
// is counted once, and the killed replicas, restarted, catch up.
func TestFaultClusterReplicaKilled(t *testing.T) {
	db := testenv.OwnCluster(t, services.ClusterOptions{SessionTimeout: 3 * time.Second}, true)
	s := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr()}
	s.start()
	t.Cleanup(func() { s.stop() })

	l := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var inflight atomic.Int64
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for i := range 4 {
		f := &feeder{url: s.url + "/v1/events", hc: hc, l: l, prefix: "cr", size: 300, resend: 0.2, netRetry: 50 * time.Millisecond, inflight: &inflight}
		wg.Go(func() { f.run(ctx, stop, uint64(i+1)) })
	}
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		cancel()
		wg.Wait()
	}()

	waitFor(t, 30*time.Second, "3000 events acknowledged", func() bool { return l.ackedCount() >= 3000 })
	var killed []*services.ClickHouse
	for sh := 1; sh <= 2; sh++ {
		killed = append(killed, db.Cluster.Shard(sh)[0])
	}
	killAt := time.Now()
	for _, n := range killed {
		if err := n.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	n := l.ackedCount()
	waitFor(t, 30*time.Second, "3000 more events acknowledged with a replica of each shard down", func() bool { return l.ackedCount() >= n+3000 })
	firstAck := l.firstAckAfter(killAt)
	n503 := count503(l)
	close(stop)
	stopped = true
	wg.Wait()
	if len(l.mismatches) > 0 {
		t.Errorf("%d answers do not match what was acknowledged before, e.g. %v", len(l.mismatches), l.mismatches[:min(3, len(l.mismatches))])
	}
	// While the killed replicas are down, what they took and had not yet
	// passed on is out of reach (not lost): counted once they are back.
	survivor := db.Node(db.Cluster.Shard(1)[1])
	var visible int
	fmt.Sscan(testenv.QueryString(t, survivor, "SELECT uniqExactIf(event_id, duplicate = 0) FROM events"), &visible)

	// The killed replicas come back, fetch what they missed and hand on
	// what they had.
	restartAt := time.Now()
	for _, n := range killed {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitReplicated(t, db)
	caughtUp := time.Since(restartAt)
	fixed := reconcileCluster(t, db, killAt.Add(-35*time.Minute)) // the feeders spread events over 30 minutes
	dupRows := checkStored(t, survivor, l.events())
	if dupRows < l.resent {
		t.Errorf("%d rows stored as duplicates, want at least %d resends", dupRows, l.resent)
	}
	st := s.ingestStats()
	t.Logf("replica of each shard killed: first 200 %v after the kill; %d 503s in all; %d events acknowledged, %d of them out of reach while the killed replicas were down (taken by them, not yet replicated); restarted, the replicas were in step after %v and every event counted once (%d resends recognised); %d blocks whose answer was lost sent again as they were and landed once, %d retries; reconciliation fixed %d aggregate rows",
		firstAck.Sub(killAt).Round(time.Millisecond), n503, len(l.acked), len(l.acked)-visible, caughtUp.Round(time.Millisecond), l.resent, st.Recovered, st.Retries, fixed)
}

// clusterLoad runs feeders against s until the returned stop is called,
// which waits for them.
func clusterLoad(t *testing.T, s *stack, l *ledger, prefix string) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	done := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for i := range 4 {
		f := &feeder{url: s.url + "/v1/events", hc: hc, l: l, prefix: prefix, size: 300, resend: 0.2, netRetry: 50 * time.Millisecond}
		wg.Go(func() { f.run(ctx, done, uint64(i+1)) })
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			if ctx.Err() != nil {
				t.Error("clients still had unacknowledged batches at the time limit")
			}
			cancel()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestFaultClusterZooKeeperDown: ZooKeeper stopped for 20 s under steady
// ingest: the replicated tables turn read-only, requests get 503 with
// Retry-After and never a 200 for what is not committed, ingest resumes by
// itself when ZooKeeper is back, and every acknowledged event counts once.
func TestFaultClusterZooKeeperDown(t *testing.T) {
	db := testenv.OwnCluster(t, services.ClusterOptions{SessionTimeout: 3 * time.Second}, true)
	s := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr(), logs: new(lockedBuffer)}
	s.start()
	t.Cleanup(func() { s.stop(); logFailures(t, s) })
	l := newLedger()
	stop := clusterLoad(t, s, l, "zk")
	waitFor(t, 30*time.Second, "3000 events acknowledged", func() bool { return l.ackedCount() >= 3000 })

	zk := db.Cluster.ZooKeeper
	downAt := time.Now()
	if err := zk.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Second)
	backAt := time.Now()
	if err := zk.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := l.ackedCount()
	waitFor(t, 90*time.Second, "3000 events acknowledged after ZooKeeper came back", func() bool { return l.ackedCount() >= n+3000 })
	firstAck := l.firstAckAfter(backAt)
	stop()

	// An INSERT that lost ZooKeeper while pushing to a view left its block
	// in events and the views it had not reached short (18.16 writes them
	// after the table): its resend lands once, and reconciliation, as
	// serve runs it, fills the aggregates.
	waitReplicated(t, db)
	fixed := reconcileCluster(t, db, time.Now().Add(-3*time.Hour))
	// Commits already past ZooKeeper may be answered just after it went: the
	// outage proper starts a few seconds in.
	attempts := checkOutage(t, db, l, downAt.Add(5*time.Second), backAt)
	t.Logf("ZooKeeper down 20 s: %d attempts in the outage, all 503 with Retry-After; first 200 %v after ZooKeeper was back; %d events acknowledged, each counted once (%d resends recognised, %d events of 503 answers found committed, %d blocks whose answer was lost landed once); reconciliation fixed %d aggregate rows",
		attempts, firstAck.Sub(backAt).Round(time.Millisecond), len(l.acked), l.resent, l.lateDups, s.ingestStats().Recovered, fixed)
}

// TestFaultClusterShardDown: both replicas of a shard stopped and started
// again under steady ingest: requests holding events of that shard get 503
// while it is down (the other shard's events of the same requests commit,
// and their resends count them as duplicates), and every acknowledged
// event counts once after.
func TestFaultClusterShardDown(t *testing.T) {
	db := testenv.OwnCluster(t, services.ClusterOptions{SessionTimeout: 3 * time.Second}, true)
	s := &stack{t: t, cluster: &db, redisAddr: testenv.Redis(t).Addr(), logs: new(lockedBuffer)}
	s.start()
	t.Cleanup(func() { s.stop(); logFailures(t, s) })
	l := newLedger()
	stop := clusterLoad(t, s, l, "sd")
	waitFor(t, 30*time.Second, "3000 events acknowledged", func() bool { return l.ackedCount() >= 3000 })

	shard := db.Cluster.Shard(2)
	downAt := time.Now()
	var wg sync.WaitGroup
	for _, n := range shard {
		wg.Go(func() {
			if err := n.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	stoppedAt := time.Now()
	time.Sleep(10 * time.Second)
	backAt := time.Now()
	for _, n := range shard {
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	n := l.ackedCount()
	waitFor(t, 90*time.Second, "3000 events acknowledged after the shard came back", func() bool { return l.ackedCount() >= n+3000 })
	firstAck := l.firstAckAfter(backAt)
	stop()

	// A stopped node can end an INSERT between the table and its views
	// (18.16 writes them after): the aggregates are short of that block
	// until reconciliation, as the README says; run it as serve would.
	waitReplicated(t, db)
	fixed := reconcileCluster(t, db, time.Now().Add(-3*time.Hour))
	// 300-event batches always hold events of both shards: all refused.
	attempts := checkOutage(t, db, l, stoppedAt, backAt)
	if l.lateDups == 0 {
		t.Error("no event of the healthy shard committed under a 503 came back as a duplicate: the partial commits went unseen")
	}
	t.Logf("shard 2 stopped %v (stop took %v), up again: first 200 %v after; %d attempts while down, all 503; %d events acknowledged, each counted once; %d events the healthy shard committed under a 503 came back as duplicates; %d blocks whose answer was lost landed once; reconciliation fixed %d aggregate rows",
		backAt.Sub(downAt).Round(time.Millisecond), stoppedAt.Sub(downAt).Round(time.Millisecond), firstAck.Sub(backAt).Round(time.Millisecond), attempts, len(l.acked), l.lateDups, s.ingestStats().Recovered, fixed)
}

// ingestStats are the server's ingestor totals.
func (s *stack) ingestStats() ingestor.Stats {
	var st struct {
		Ingestor ingestor.Stats `json:"ingestor"`
	}
	s.get("/v1/ingest/status", &st)
	return st.Ingestor
}

// checkOutage checks the attempts answered between from and to were all
// 503 with Retry-After, every other answer sane, and, once the replicas are
// in step, every acknowledged event counted once. It returns the attempts
// of the outage.
func checkOutage(t *testing.T, db testenv.ClusterDB, l *ledger, from, to time.Time) int {
	t.Helper()
	attempts, n503, noRetry, ok200 := outageAttempts(l, from, to)
	if n503 == 0 || noRetry > 0 || ok200 > 0 {
		t.Errorf("during the outage: %d attempts, %d 503 (%d without Retry-After), %d 200", attempts, n503, noRetry, ok200)
	}
	if bad := unexpected(l); len(bad) > 0 {
		t.Errorf("%d attempts got neither 200 nor 503 with Retry-After, e.g. %v", len(bad), bad[:min(3, len(bad))])
	}
	if len(l.mismatches) > 0 {
		t.Errorf("%d answers do not match what was acknowledged before, e.g. %v", len(l.mismatches), l.mismatches[:min(3, len(l.mismatches))])
	}
	waitReplicated(t, db)
	checkStored(t, db.Node(db.Cluster.Nodes[0]), l.events())
	return attempts
}

// waitReplicated waits until every shard's replicas hold the same rows, so
// that a Distributed read sees what was committed on either of them. On a
// timeout it shows each replica's rows and replication queue.
func waitReplicated(t *testing.T, db testenv.ClusterDB) {
	t.Helper()
	const limit = 90 * time.Second
	for s := 1; len(db.Cluster.Shard(s)) > 0; s++ {
		replicas := db.Cluster.Shard(s)
		inStep := func() bool {
			var first string
			for i, n := range replicas {
				got, err := services.Query(context.Background(), n.HTTPURL(), db.Database,
					"SELECT count(), (SELECT count() FROM system.replication_queue WHERE database = currentDatabase()) FROM events_local")
				if err != nil || !strings.HasSuffix(strings.TrimSpace(got), "\t0") || i > 0 && got != first {
					return false
				}
				first = got
			}
			return true
		}
		for deadline := time.Now().Add(limit); !inStep(); time.Sleep(50 * time.Millisecond) {
			if time.Now().Before(deadline) {
				continue
			}
			for _, n := range replicas {
				rows, _ := services.Query(context.Background(), n.HTTPURL(), db.Database, "SELECT count() FROM events_local")
				queue, err := services.Query(context.Background(), n.HTTPURL(), db.Database,
					"SELECT table, type, new_part_name, num_tries, last_exception FROM system.replication_queue WHERE database = currentDatabase() LIMIT 10")
				t.Logf("shard %d, %s: %s rows; queue: %s %v", s, n.HTTPURL(), strings.TrimSpace(rows), queue, err)
			}
			t.Fatalf("after %v: the replicas of shard %d not in step", limit, s)
		}
	}
}

// reconcileCluster runs reconciliation with fixes over the minutes from
// from to now, as serve's scheduler does, and returns the rows it fixed: a
// replica killed after committing an insert into events_local and before
// writing its views' parts (18.16 writes them after the table) leaves the
// aggregates short of that block, and a resend to the other replica is
// deduplicated with its views.
func reconcileCluster(t *testing.T, db testenv.ClusterDB, from time.Time) int64 {
	t.Helper()
	conn, err := chclient.OpenNative(context.Background(), db.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rng := clickagg.Range{From: from.Add(-2 * time.Minute).Truncate(time.Minute), To: time.Now().Add(2 * time.Minute).Truncate(time.Minute)}
	r, err := reconcile.Open(context.Background(), conn, db.Options(), reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := r.Run(context.Background(), rng, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tables {
		if tr.Rows > 0 {
			t.Logf("reconciliation fixed %d rows of %s, e.g. %+v", tr.Rows, tr.Table, tr.Diffs[:min(2, len(tr.Diffs))])
		}
	}
	return rep.Differences()
}

// logFailures shows the distinct causes the server logged for its 5xx
// answers when the test failed.
func logFailures(t *testing.T, s *stack) {
	if !t.Failed() || s.logs == nil {
		return
	}
	seen := map[string]int{}
	var order []string
	for _, r := range s.logs.records(t) {
		if r["msg"] == "request failed" {
			k := fmt.Sprint(r["status"], " ", r["err"])
			if seen[k] == 0 {
				order = append(order, k)
			}
			seen[k]++
		}
	}
	for _, k := range order[:min(5, len(order))] {
		t.Logf("request failed (%d times): %.1500s", seen[k], k)
	}
	if len(order) > 5 {
		t.Logf("... and %d other causes", len(order)-5)
	}
}
