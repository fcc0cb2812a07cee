package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
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
	survivor := db.Node(db.Cluster.Shard(1)[1])
	dupRows := checkStored(t, survivor, l.events())
	if dupRows < l.resent {
		t.Errorf("%d rows stored as duplicates, want at least %d resends", dupRows, l.resent)
	}

	// The killed replicas come back and fetch what they missed.
	restartAt := time.Now()
	for _, n := range killed {
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for sh := 1; sh <= 2; sh++ {
		back, peer := db.Node(db.Cluster.Shard(sh)[0]), db.Node(db.Cluster.Shard(sh)[1])
		want := testenv.QueryString(t, peer, "SELECT count() FROM events_local")
		waitFor(t, 90*time.Second, "the restarted replica of shard caught up", func() bool {
			got, err := services.Query(ctx, back.HTTPURL, back.Database, "SELECT count() FROM events_local")
			return err == nil && strings.TrimSpace(got) == want
		})
	}
	t.Logf("replica of each shard killed: first 200 %v after the kill; %d 503s in all; %d events acknowledged, each counted once (%d resends recognised); restarted replicas caught up in %v",
		firstAck.Sub(killAt).Round(time.Millisecond), n503, len(l.acked), l.resent, time.Since(restartAt).Round(time.Millisecond))
}
